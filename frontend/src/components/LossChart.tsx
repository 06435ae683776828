// The loss curve of a job, drawn with uPlot; new points are set on the same chart as they arrive.
import { useEffect, useRef } from "preact/hooks";
import { useUPlot } from "./uplot";

export interface Point {
  step: number;
  loss: number;
}

export function LossChart({ points }: { points: Point[] }) {
  const host = useRef<HTMLDivElement>(null);
  const chart = useUPlot(host, (width) => ({
    width: width || 600,
    height: 240,
    legend: { show: true },
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: false } },
    axes: [
      { label: "step", stroke: "#64748b", grid: { stroke: "#eef2f7" }, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] },
      { label: "loss", stroke: "#64748b", grid: { stroke: "#eef2f7" }, size: 56 },
    ],
    series: [{ label: "step" }, { label: "loss", stroke: "#4f46e5", width: 2, fill: "rgba(79,70,229,0.08)", points: { show: false } }],
  }));

  useEffect(() => {
    chart.current?.setData([points.map((p) => p.step), points.map((p) => p.loss)]);
  }, [points]);

  return <div class="chart" ref={host} data-points={points.length} aria-label={`loss curve, ${points.length} points`} role="img" />;
}
