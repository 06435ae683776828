// One uPlot chart in a host element, the way both charts need it: made once on mount with the
// options given then, resized with its host, destroyed on unmount. Data is set by the caller.
import type { RefObject } from "preact";
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export function useUPlot(host: RefObject<HTMLDivElement | null>, options: (width: number) => uPlot.Options): RefObject<uPlot | null> {
  const chart = useRef<uPlot | null>(null);
  useEffect(() => {
    const el = host.current!;
    const made = options(el.clientWidth);
    chart.current = new uPlot(made, [[], []], el);
    const resize = new ResizeObserver(() => chart.current?.setSize({ width: el.clientWidth, height: made.height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      chart.current?.destroy();
      chart.current = null;
    };
  }, []);
  return chart;
}
