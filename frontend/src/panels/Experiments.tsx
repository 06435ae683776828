// Panel 6: A/B testing. The experiments; one experiment's live results per variant with 95%
// intervals and lift, significance (Holm-adjusted), the sample-ratio check, the guardrails and the
// recommendation with its reason; pause, resume, end, extend, full deploy.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, ApiError, ok, type Experiment, type ExperimentResults, type ExperimentStatus, type GuardrailResult, type ConfidenceInterval, type LatencyGuardrailResult, type MetricResult, type Variant } from "../api/client";
import { IntervalChart, type Interval } from "../components/IntervalChart";
import { Alert, Badge, Button, Card, Empty, Field, PageHeader, Stat, StatusFilter } from "../components/ui";
import { ago, count, num, percent, pValue, when } from "../format";
import { useHashParam, usePoll } from "../hooks";
import { useSession } from "../session";
import { metricTitle } from "./ModelRegistry";

const LIVE = new Set(["running", "paused", "draft"]);
const STATUSES: ExperimentStatus[] = ["draft", "running", "paused", "completed", "cancelled"];

export function Experiments() {
  const [status, setStatus] = useState<ExperimentStatus | "">("");
  const [id, setId] = useHashParam("id");
  const list = usePoll(() => ok(api.GET("/api/experiments", { params: { query: { status: status || undefined, limit: 100 } } })), 2000, [status]);
  const items = list.data?.items ?? [];
  useEffect(() => {
    if (!id && items.length) setId(items[0].id);
  }, [items.length]);
  const running = items.filter((e) => e.status === "running").length;

  return (
    <div class="panel">
      <PageHeader
        title="A/B Testing"
        subtitle="Two versions of a model on live traffic: which one users prefer, with how much confidence."
        actions={
          <StatusFilter value={status} statuses={STATUSES} onChange={setStatus} />
        }
      />
      <div class="stats">
        <Stat label="Running" value={count(running)} tone="blue" />
        <Stat label="Paused" value={count(items.filter((e) => e.status === "paused").length)} tone="amber" />
        <Stat label="Completed" value={count(items.filter((e) => e.status === "completed").length)} tone="green" />
        <Stat label="Treatment won" value={count(items.filter((e) => e.winner === "treatment").length)} hint="of the completed ones" />
      </div>
      <Card title="Experiments">
        {list.error && <Alert>{list.error}</Alert>}
        {!list.loading && items.length === 0 ? <Empty>No experiments yet. Start one from the Model Registry (Start A/B test).</Empty> : (
          <div class="table-wrap">
            <table class="table table-hover">
              <thead><tr><th>Experiment</th><th>Model</th><th>Status</th><th class="num">Treatment share</th><th>Primary metric</th><th>Result</th><th>Started</th></tr></thead>
              <tbody>
                {items.map((e) => (
                  <tr key={e.id} data-id={e.id} class={e.id === id ? "selected" : ""} onClick={() => setId(e.id)}>
                    <td><button type="button" class="link" onClick={() => setId(e.id)}>{e.name}</button></td>
                    <td class="mono">{e.model_name}</td>
                    <td><Badge value={e.status} /></td>
                    <td class="num">{percent(e.traffic_split)}</td>
                    <td>{metricTitle(String(e.success_metrics[0]?.name ?? ""))}</td>
                    <td>{e.winner ? <Badge value={e.winner} /> : <span class="muted small">{e.status === "running" ? "collecting" : "—"}</span>}</td>
                    <td class="nowrap muted">{e.start_date ? ago(e.start_date) : "not started"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Card>
      {id && <ExperimentDetail key={id} id={id} onChanged={list.reload} />}
    </div>
  );
}

function ExperimentDetail({ id, onChanged }: { id: string; onChanged: () => void }) {
  const [done, setDone] = useState(false);
  const exp = usePoll(() => ok(api.GET("/api/experiments/{experiment_id}", { params: { path: { experiment_id: id } } })), done ? null : 1500, [id, done]);
  const e = exp.data;
  useEffect(() => {
    if (e && !LIVE.has(e.status)) setDone(true); // the stored results; an action reloads it
  }, [e?.status, e?.deploy_requested_at]);
  const versions = usePoll(async () => {
    if (!e) return null;
    const get = (v: string) => ok(api.GET("/api/models/{model_version_id}", { params: { path: { model_version_id: v } } })).then((m) => m.version).catch(() => null);
    const [control, treatment] = await Promise.all([get(e.control_model_id), get(e.treatment_model_id)]);
    return { control, treatment } as Record<Variant, string | null>;
  }, null, [e?.control_model_id, e?.treatment_model_id]);

  if (!e) return <Card title="Experiment">{exp.error ? <Alert>{exp.error}</Alert> : <Empty>Loading…</Empty>}</Card>;
  const results = e.results;
  const versionOf = (v: Variant) => (versions.data?.[v] ? `v${versions.data[v]}` : "");
  const changed = (next: Experiment) => { exp.setData(next); exp.reload(); onChanged(); };

  return (
    <div class="experiment-detail stack">
      <Card title={<span>{e.name} <Badge value={e.status} />{LIVE.has(e.status) && e.status !== "draft" && <span class="live-dot" title="updated every 1.5 s">live</span>}</span>}
        actions={<Actions experiment={e} results={results} onChanged={changed} />}>
        <dl class="facts facts-wide">
          <div><dt>Model</dt><dd class="mono">{e.model_name}</dd></div>
          <div><dt>Control</dt><dd class="mono">{versionOf("control") || "…"}</dd></div>
          <div><dt>Treatment</dt><dd class="mono">{versionOf("treatment") || "…"}</dd></div>
          <div><dt>Split</dt><dd>{percent(1 - e.traffic_split)} / {percent(e.traffic_split)}</dd></div>
          <div><dt>Started</dt><dd class="small">{when(e.start_date)}</dd></div>
          <div><dt>{e.status === "completed" || e.status === "cancelled" ? "Ended" : "Ends"}</dt><dd class="small">{when(e.end_date)}</dd></div>
          <div><dt>Minimum sample</dt><dd>{count(e.min_sample_size)} per variant</dd></div>
          <div><dt>Intervals</dt><dd class="small">{e.sequential ? "always valid (sequential)" : "fixed horizon"}</dd></div>
        </dl>
        {e.status_reason && <p class="muted small">Status: {e.status_reason}</p>}
      </Card>
      {!results ? (
        <Card><Empty>{e.status === "draft" ? "Not started: no results yet." : "No results stored."}</Empty></Card>
      ) : (
        <>
          <Recommendation experiment={e} results={results} versionOf={versionOf} />
          <SampleRatio results={results} />
          <MetricsCard results={results} versionOf={versionOf} />
          {results.guardrails.length > 0 && <Guardrails results={results} />}
        </>
      )}
    </div>
  );
}

const TONE = { treatment: "green", control: "slate", inconclusive: "amber" } as const;
const VERDICT = { treatment: "Deploy the treatment", control: "Keep the control", inconclusive: "Inconclusive so far" } as const;

function Recommendation({ experiment: e, results, versionOf }: { experiment: Experiment; results: ExperimentResults; versionOf: (v: Variant) => string }) {
  const r = results.recommendation;
  const final = !LIVE.has(e.status);
  return (
    <section class={`recommendation recommendation-${TONE[r.winner]}`} aria-label="recommendation">
      <div class="recommendation-label">{final ? "Result" : "Recommendation now"}</div>
      <div class="recommendation-verdict">
        {VERDICT[r.winner]}{r.winner !== "inconclusive" && versionOf(r.winner) && <span class="mono"> ({versionOf(r.winner)})</span>}
      </div>
      <div class="recommendation-reason">{r.reason}</div>
      {e.deploy_requested_at && <div class="small">Deployment requested {ago(e.deploy_requested_at)}: the registry deploys it (see Model Registry's history).</div>}
    </section>
  );
}

function SampleRatio({ results }: { results: ExperimentResults }) {
  const { units, expected_shares: shares, p_value: p, mismatch } = results.srm;
  const total = units.control + units.treatment;
  const observed = total ? units.treatment / total : null;
  const text = `${count(units.control)} units in control and ${count(units.treatment)} in treatment (${percent(observed)} treatment, ${percent(shares[1])} expected)`;
  return mismatch ? (
    <Alert>
      <strong>Sample ratio mismatch</strong> (χ² p = {pValue(p)}): {text}. The split is not what was configured; the results cannot be trusted until the cause is found.
    </Alert>
  ) : (
    <p class="srm-ok small muted">Sample ratio: {text}; no mismatch (p = {pValue(p)}).</p>
  );
}

function value(m: MetricResult, variant: Variant): string {
  const { n, mean } = m[variant];
  if (!n) return "—";
  return m.kind === "rate" ? percent(mean) : num(mean);
}

function difference(m: MetricResult, x: number | null): string {
  if (x == null) return "∞";
  return m.kind === "rate" ? `${x > 0 ? "+" : ""}${(x * 100).toFixed(1)} pp` : num(x, 3, true);
}

function interval(m: MetricResult, ci: ConfidenceInterval | null, asLift = false): string {
  if (!ci || ci[0] == null || ci[1] == null) return "not enough data";
  return asLift ? `${percent(ci[0], true)} to ${percent(ci[1], true)}` : `${difference(m, ci[0])} to ${difference(m, ci[1])}`;
}

function verdict(m: MetricResult): { text: string; tone: string; good: boolean | null } {
  if (!m.significant) return { text: "not significant", tone: "slate", good: null };
  const better = (m.difference > 0) === m.higher_is_better;
  return better ? { text: "treatment better", tone: "green", good: true } : { text: "treatment worse", tone: "red", good: false };
}

function MetricsCard({ results, versionOf }: { results: ExperimentResults; versionOf: (v: Variant) => string }) {
  // The chart puts metrics of different units side by side: each difference and its interval as a
  // share of control's mean (the same interval the significance is read from, so a whisker clear of
  // zero is a significant metric).
  const intervals: Interval[] = useMemo(() => results.metrics.map((m) => {
    const base = m.control.mean;
    const rel = (x: number | null) => (x == null || !base ? null : (x / Math.abs(base)) * 100);
    return { label: metricTitle(m.metric), estimate: rel(m.difference), low: rel(m.ci[0]), high: rel(m.ci[1]), good: verdict(m).good };
  }), [JSON.stringify(results.metrics)]);
  const latency = results.latency_ms;

  return (
    <Card title="Metrics" actions={<span class="muted small">95% {results.sequential ? "always-valid " : ""}intervals · α = {results.alpha} · Holm-adjusted over {results.metrics.length} metric{results.metrics.length === 1 ? "" : "s"}</span>}>
      <div class="table-wrap" tabIndex={0} role="region" aria-label="metrics per variant">
        <table class="table metrics-table">
          <thead>
            <tr><th>Metric</th><th class="num">Control {versionOf("control")}</th><th class="num">Treatment {versionOf("treatment")}</th><th>Difference (95% interval)</th><th>Lift (95% interval)</th><th class="num">p</th><th class="num">p (Holm)</th><th>Significance</th></tr>
          </thead>
          <tbody>
            {results.metrics.map((m, i) => {
              const v = verdict(m);
              return (
                <tr key={m.metric} data-metric={m.metric}>
                  <td><strong>{metricTitle(m.metric)}</strong>{i === 0 && <span class="chip">primary</span>}<div class="muted small">{m.higher_is_better ? "higher is better" : "lower is better"} · {m.test.replace(/_/g, " ")}</div></td>
                  <td class="num"><span class="metric-value">{value(m, "control")}</span><div class="muted small">n = {count(m.control.n)}</div></td>
                  <td class="num"><span class="metric-value">{value(m, "treatment")}</span><div class="muted small">n = {count(m.treatment.n)}</div></td>
                  <td>{m.control.n && m.treatment.n ? difference(m, m.difference) : "—"}<div class="muted small">{interval(m, m.ci)}</div></td>
                  <td>{percent(m.lift, true)}<div class="muted small">{interval(m, m.lift_ci, true)}</div></td>
                  <td class="num mono nowrap">{pValue(m.p_value)}</td>
                  <td class="num mono nowrap">{pValue(m.p_value_adjusted)}</td>
                  <td><Badge value={v.text} tone={v.tone} raw /></td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      <div class="metrics-foot">
        <IntervalChart intervals={intervals} />
        {latency && (latency.control.p50 != null || latency.treatment.p50 != null) && (
          <dl class="facts facts-tight latency">
            <div><dt>Latency control p50 / p95</dt><dd>{num(latency.control.p50)} / {num(latency.control.p95)} ms</dd></div>
            <div><dt>Latency treatment p50 / p95</dt><dd>{num(latency.treatment.p50)} / {num(latency.treatment.p95)} ms</dd></div>
          </dl>
        )}
      </div>
    </Card>
  );
}

function Guardrails({ results }: { results: ExperimentResults }) {
  return (
    <Card title="Guardrails">
      <div class="table-wrap">
        <table class="table">
          <thead><tr><th>Metric</th><th>Worst degradation allowed</th><th>Difference (95% interval)</th><th>State</th></tr></thead>
          <tbody>
            {results.guardrails.map((g, i) => ("ci" in g ? <MetricGuardrail key={i} g={g} /> : <LatencyGuardrail key={i} g={g} />))}
          </tbody>
        </table>
      </div>
    </Card>
  );
}

function MetricGuardrail({ g }: { g: GuardrailResult }) {
  const known = g.ci[0] != null && g.ci[1] != null;
  return (
    <tr data-guardrail={g.metric}>
      <td>{metricTitle(g.metric)}</td>
      <td class="mono">{num(g.max_degradation)}</td>
      <td class="mono">{num(g.difference, 3, true)} <span class="muted small">{known ? `${num(g.ci[0], 3, true)} to ${num(g.ci[1], 3, true)}` : "not enough data"}</span></td>
      <td>{g.breached ? <Badge value="breached" tone="red" /> : known ? <Badge value="holding" tone="green" /> : <Badge value="collecting data" tone="slate" />}</td>
    </tr>
  );
}

/** Treatment's latency p95 against an absolute limit or control's p95 (an always-valid test on the
 * share of treatment's answers above the threshold; no interval on the difference). */
function LatencyGuardrail({ g }: { g: LatencyGuardrailResult }) {
  const allowed = g.max_value != null ? `p95 ≤ ${num(g.max_value)} ms` : `${percent(g.max_degradation, true)} on control's p95`;
  const known = g.threshold_ms != null && g.treatment.n > 0;
  return (
    <tr data-guardrail={g.metric}>
      <td>Latency p95 (ms)</td>
      <td class="mono">{allowed}</td>
      <td class="mono">
        {g.difference == null ? "—" : `${num(g.difference, 3, true)} ms`}{" "}
        <span class="muted small">
          control {num(g.control.p95)} ms, treatment {num(g.treatment.p95)} ms
          {known && ` · ${percent(g.treatment.share_above_threshold)} of treatment's answers above ${num(g.threshold_ms)} ms (${percent(g.max_share_above)} allowed)`}
        </span>
        {g.reason && <div class="small">{g.reason}</div>}
      </td>
      <td>{g.breached ? <Badge value="breached" tone="red" /> : known ? <Badge value="holding" tone="green" /> : <Badge value="collecting data" tone="slate" />}</td>
    </tr>
  );
}

type Pending = "complete" | "extend" | "deploy" | null;

function Actions({ experiment: e, results, onChanged }: { experiment: Experiment; results: ExperimentResults | null; onChanged: (e: Experiment) => void }) {
  const { can, notify } = useSession();
  const [pending, setPending] = useState<Pending>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const path = { params: { path: { experiment_id: e.id } } };
  const run = async (what: string, call: () => Promise<Experiment>, done: string | ((next: Experiment) => string)) => {
    setBusy(what);
    try {
      const next = await call();
      notify(typeof done === "string" ? done : done(next));
      setPending(null);
      onChanged(next);
    } catch (err) {
      notify(err instanceof ApiError ? err.detail : String(err), "error");
    } finally {
      setBusy(null);
    }
  };
  const live = e.status === "running" || e.status === "paused";
  const deployable = can("admin") && !e.deploy_requested_at && (live || e.status === "completed");

  return (
    <div class="experiment-actions">
      <div class="card-actions">
        {can("curator") && e.status === "draft" && <Button variant="primary" busy={busy === "start"} onClick={() => run("start", () => ok(api.POST("/api/experiments/{experiment_id}/start", path)), "Experiment started")}>Start</Button>}
        {can("curator") && e.status === "running" && <Button busy={busy === "pause"} onClick={() => run("pause", () => ok(api.POST("/api/experiments/{experiment_id}/pause", path)), "Experiment paused: all traffic on control")}>Pause</Button>}
        {can("curator") && e.status === "paused" && <Button busy={busy === "resume"} onClick={() => run("resume", () => ok(api.POST("/api/experiments/{experiment_id}/resume", path)), "Experiment resumed")}>Resume</Button>}
        {can("curator") && LIVE.has(e.status) && <Button onClick={() => setPending(pending === "extend" ? null : "extend")}>Extend</Button>}
        {can("curator") && live && <Button variant="danger" onClick={() => setPending(pending === "complete" ? null : "complete")}>End test</Button>}
        {deployable && <Button variant="primary" onClick={() => setPending(pending === "deploy" ? null : "deploy")}>Full deploy</Button>}
      </div>
      {pending === "complete" && (
        <EndForm busy={busy === "complete"} onCancel={() => setPending(null)}
          onSubmit={(reason) => run("complete", () => ok(api.POST("/api/experiments/{experiment_id}/complete", { ...path, body: { reason } })), "Experiment ended: results stored")} />
      )}
      {pending === "extend" && (
        <ExtendForm experiment={e} busy={busy === "extend"} onCancel={() => setPending(null)}
          onSubmit={(body) => run("extend", () => ok(api.POST("/api/experiments/{experiment_id}/extend", { ...path, body })), "Experiment extended")} />
      )}
      {pending === "deploy" && (
        <DeployForm winner={(e.winner ?? results?.recommendation.winner ?? "inconclusive") as Variant | "inconclusive"} busy={busy === "deploy"} onCancel={() => setPending(null)}
          onSubmit={(body) => run("deploy", () => ok(api.POST("/api/experiments/{experiment_id}/full-deploy", { ...path, body })), (next) => `Deployment of the ${body.variant ?? next.winner} requested`)} />
      )}
    </div>
  );
}

function EndForm({ busy, onSubmit, onCancel }: { busy: boolean; onSubmit: (reason: string | null) => void; onCancel: () => void }) {
  const [reason, setReason] = useState("");
  return (
    <form class="action-popover" onSubmit={(ev) => { ev.preventDefault(); onSubmit(reason.trim() || null); }}>
      <p class="small">Ends the test: the results and the winner are stored, and all traffic goes back to control until a version is deployed.</p>
      <Field label="Reason"><input name="reason" value={reason} maxLength={2000} onInput={(ev) => setReason(ev.currentTarget.value)} /></Field>
      <div class="form-actions"><Button onClick={onCancel}>Cancel</Button><Button variant="danger" type="submit" busy={busy}>Confirm end</Button></div>
    </form>
  );
}

function ExtendForm({ experiment: e, busy, onSubmit, onCancel }: { experiment: Experiment; busy: boolean; onSubmit: (body: { end_date?: string; min_sample_size?: number }) => void; onCancel: () => void }) {
  const [end, setEnd] = useState("");
  const [minSample, setMinSample] = useState(String(e.min_sample_size));
  const submit = (ev: Event) => {
    ev.preventDefault();
    const body: { end_date?: string; min_sample_size?: number } = {};
    if (end) body.end_date = new Date(end).toISOString();
    if (minSample !== "" && Number(minSample) !== e.min_sample_size) body.min_sample_size = Number(minSample);
    onSubmit(body);
  };
  return (
    <form class="action-popover" onSubmit={submit}>
      <div class="form-grid">
        <Field label="New end" hint={e.end_date ? `now ${when(e.end_date)}` : "no end set"}><input type="datetime-local" name="end_date" value={end} onInput={(ev) => setEnd(ev.currentTarget.value)} /></Field>
        <Field label="Minimum sample per variant"><input type="number" name="min_sample_size" min={0} value={minSample} onInput={(ev) => setMinSample(ev.currentTarget.value)} /></Field>
      </div>
      <div class="form-actions"><Button onClick={onCancel}>Cancel</Button><Button variant="primary" type="submit" busy={busy} disabled={!end && Number(minSample) === e.min_sample_size}>Extend</Button></div>
    </form>
  );
}

function DeployForm({ winner, busy, onSubmit, onCancel }: { winner: Variant | "inconclusive"; busy: boolean; onSubmit: (body: { variant?: Variant; reason?: string }) => void; onCancel: () => void }) {
  const [variant, setVariant] = useState<Variant | "">(winner === "inconclusive" ? "" : winner);
  const [reason, setReason] = useState("");
  const override = variant !== "" && variant !== winner;
  const submit = (ev: Event) => {
    ev.preventDefault();
    onSubmit({ ...(override ? { variant: variant as Variant } : {}), ...(reason.trim() ? { reason: reason.trim() } : {}) });
  };
  return (
    <form class="action-popover" onSubmit={submit}>
      <p class="small">
        {winner === "inconclusive" ? "The result is inconclusive: name the variant to deploy (an override, recorded)." : `Ends the test and asks the registry to deploy the ${winner}.`}
      </p>
      <div class="form-grid">
        <Field label="Variant to deploy">
          <select name="variant" value={variant} onChange={(ev) => setVariant(ev.currentTarget.value as Variant | "")}>
            {winner === "inconclusive" && <option value="">Choose…</option>}
            <option value="treatment">Treatment{winner === "treatment" ? " (winner)" : ""}</option>
            <option value="control">Control{winner === "control" ? " (winner)" : ""}</option>
          </select>
        </Field>
        <Field label={override ? "Reason (recorded with the override)" : "Reason"}><input name="reason" value={reason} maxLength={2000} required={override} onInput={(ev) => setReason(ev.currentTarget.value)} /></Field>
      </div>
      <div class="form-actions"><Button onClick={onCancel}>Cancel</Button><Button variant="primary" type="submit" busy={busy} disabled={!variant}>Confirm full deploy</Button></div>
    </form>
  );
}
