// Treatment against control per metric with its 95% interval (a forest plot), in percent of
// control's mean, drawn with uPlot: the estimate as a point, the interval as a whisker, zero dashed.
import { useEffect, useRef } from "preact/hooks";
import type uPlot from "uplot";
import { useUPlot } from "./uplot";

export interface Interval {
  label: string;
  estimate: number | null; // in percent
  low: number | null;
  high: number | null;
  good: boolean | null; // significant and in the good direction (true), the bad one (false), or neither
}

const HEIGHT = 220;
const COLOR = { true: "#16a34a", false: "#dc2626", null: "#4f46e5" } as const;

export function IntervalChart({ intervals }: { intervals: Interval[] }) {
  const host = useRef<HTMLDivElement>(null);
  const latest = useRef(intervals);
  latest.current = intervals;

  const chart = useUPlot(host, (width) => {
    const whiskers = (u: uPlot) => {
      const ctx = u.ctx;
      const px = devicePixelRatio;
      ctx.save();
      const zero = u.valToPos(0, "y", true);
      ctx.strokeStyle = "#94a3b8";
      ctx.setLineDash([4 * px, 4 * px]);
      ctx.lineWidth = px;
      ctx.beginPath();
      ctx.moveTo(u.bbox.left, zero);
      ctx.lineTo(u.bbox.left + u.bbox.width, zero);
      ctx.stroke();
      ctx.setLineDash([]);
      latest.current.forEach((iv, i) => {
        const x = u.valToPos(i + 1, "x", true);
        ctx.strokeStyle = COLOR[String(iv.good) as keyof typeof COLOR];
        ctx.lineWidth = 2 * px;
        if (iv.low != null && iv.high != null) {
          const [lo, hi] = [u.valToPos(iv.low, "y", true), u.valToPos(iv.high, "y", true)];
          ctx.beginPath();
          ctx.moveTo(x, lo);
          ctx.lineTo(x, hi);
          ctx.moveTo(x - 8 * px, lo);
          ctx.lineTo(x + 8 * px, lo);
          ctx.moveTo(x - 8 * px, hi);
          ctx.lineTo(x + 8 * px, hi);
          ctx.stroke();
        }
        if (iv.estimate != null) {
          ctx.fillStyle = COLOR[String(iv.good) as keyof typeof COLOR];
          ctx.beginPath();
          ctx.arc(x, u.valToPos(iv.estimate, "y", true), 5 * px, 0, 2 * Math.PI);
          ctx.fill();
        }
      });
      ctx.restore();
    };
    return {
      width: width || 480,
      height: HEIGHT,
      legend: { show: false },
      cursor: { show: false },
      scales: {
        x: { time: false, range: () => [0.5, latest.current.length + 0.5] },
        y: {
          range: () => {
            const values = latest.current.flatMap((iv) => [iv.low, iv.high, iv.estimate]).filter((v): v is number => v != null && Number.isFinite(v));
            const lo = Math.min(0, ...values);
            const hi = Math.max(0, ...values);
            const pad = Math.max((hi - lo) * 0.12, 1);
            return [lo - pad, hi + pad];
          },
        },
      },
      axes: [
        { stroke: "#64748b", grid: { show: false }, ticks: { show: false }, splits: () => latest.current.map((_, i) => i + 1), values: (_, splits) => splits.map((s) => latest.current[s - 1]?.label ?? "") },
        { label: "difference, % of control", stroke: "#64748b", grid: { stroke: "#eef2f7" }, size: 56, values: (_, splits) => splits.map((s) => `${s > 0 ? "+" : ""}${s}%`) },
      ],
      series: [{}, { label: "lift", stroke: "transparent", paths: () => null, points: { show: false } }],
      hooks: { draw: [whiskers] },
    };
  });

  useEffect(() => {
    chart.current?.setData([intervals.map((_, i) => i + 1), intervals.map((iv) => iv.estimate)], true);
  }, [intervals]);

  const described = intervals.map((iv) => `${iv.label}: ${iv.estimate == null ? "no estimate" : `${iv.estimate.toFixed(1)}%`}${iv.low != null && iv.high != null ? ` (${iv.low.toFixed(1)}% to ${iv.high.toFixed(1)}%)` : ""}`).join("; ");
  return <div class="chart chart-small" ref={host} role="img" data-intervals={intervals.length} aria-label={`treatment minus control, in percent of control's mean, with 95% intervals: ${described}`} />;
}
