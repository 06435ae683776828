// The Curate tab's panels, in the order the spec's workflow runs. A new panel is one entry here
// and one component file.
import type { FunctionComponent } from "preact";
import { Datasets } from "./Datasets";
import { Experiments } from "./Experiments";
import { FeedbackQueue } from "./FeedbackQueue";
import { FineTuning } from "./FineTuning";
import { ModelRegistry } from "./ModelRegistry";
import { PairEditor } from "./PairEditor";

export interface Panel {
  path: string;
  title: string;
  icon: string; // a path of a 24x24 outline icon
  component: FunctionComponent;
}

export const PANELS: Panel[] = [
  { path: "feedback", title: "Feedback Queue", icon: "M4 5h16v10H8l-4 4z", component: FeedbackQueue },
  { path: "datasets", title: "Training Datasets", icon: "M4 6c0-1.7 3.6-3 8-3s8 1.3 8 3-3.6 3-8 3-8-1.3-8-3zm0 0v12c0 1.7 3.6 3 8 3s8-1.3 8-3V6M4 12c0 1.7 3.6 3 8 3s8-1.3 8-3", component: Datasets },
  { path: "pairs", title: "Preference Pairs", icon: "M4 4h7v16H4zM13 4h7v16h-7z", component: PairEditor },
  { path: "fine-tuning", title: "Fine-Tuning", icon: "M3 17l5-6 4 4 8-10M15 5h5v5", component: FineTuning },
  { path: "models", title: "Model Registry", icon: "M12 3l8 4.5v9L12 21l-8-4.5v-9zM12 12l8-4.5M12 12v9M12 12L4 7.5", component: ModelRegistry },
  { path: "experiments", title: "A/B Testing", icon: "M6 20V10M12 20V4M18 20v-7M3 20h18", component: Experiments },
];
