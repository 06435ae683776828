// Panel 5: the model registry. Versions grouped by name with their status and evaluation; deploy,
// start an A/B test, archive, roll back; the name's history and a version's lineage (job → dataset
// export → pairs → feedback).
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, ApiError, ok, type Lineage, type ModelVersion } from "../api/client";
import { Alert, Badge, Button, Card, Empty, Field, PageHeader, Stat, StatusFilter } from "../components/ui";
import { ago, count, label, num, percent, shortId, usd, when } from "../format";
import { usePoll } from "../hooks";
import { useSession } from "../session";

const STATUSES = ["testing", "deployed", "deprecated", "archived"] as const;

/** The metrics an experiment can be judged on (services/experiments/domain.py BUILTIN_METRICS). */
export const METRICS: { id: string; title: string }[] = [
  { id: "thumbs_up_rate", title: "Thumbs-up rate" },
  { id: "thumbs_down_rate", title: "Thumbs-down rate" },
  { id: "rating", title: "Rating (1–5)" },
  { id: "latency_ms", title: "Latency (ms)" },
  { id: "cost", title: "Cost per answer" },
  { id: "error_rate", title: "Error rate" },
];
export const metricTitle = (id: string) => METRICS.find((m) => m.id === id)?.title ?? label(id);

const semver = (v: string) => v.split(".").map(Number);
const newestFirst = (a: ModelVersion, b: ModelVersion) => {
  const [x, y] = [semver(a.version), semver(b.version)];
  return y[0] - x[0] || y[1] - x[1] || y[2] - x[2];
};

type Action = { kind: "deploy" | "archive" | "rollback"; version: ModelVersion };

export function ModelRegistry() {
  const { can } = useSession();
  const [status, setStatus] = useState("");
  const [selectedId, setSelectedId] = useState<string | null>(null);
  const [action, setAction] = useState<Action | null>(null);
  const [abTest, setAbTest] = useState<string | null>(null); // the name an A/B test is being set up for
  const list = usePoll(() => ok(api.GET("/api/models", { params: { query: { limit: 500 } } })), 2000, []);
  const all = list.data?.items ?? [];

  const names = useMemo(() => {
    const groups = new Map<string, ModelVersion[]>();
    for (const v of all) groups.set(v.name, [...(groups.get(v.name) ?? []), v]);
    return [...groups.entries()]
      .map(([name, versions]) => ({ name, versions: versions.sort(newestFirst) }))
      .filter((g) => !status || g.versions.some((v) => v.status === status))
      .sort((a, b) => a.name.localeCompare(b.name));
  }, [all, status]);
  const selected = all.find((v) => v.id === selectedId) ?? null;
  const changed = () => { setAction(null); list.reload(); };

  return (
    <div class="panel">
      <PageHeader
        title="Model Registry"
        subtitle="Every trained version by name: its evaluation, where it came from, and which one takes the traffic."
        actions={
          <StatusFilter value={status} statuses={STATUSES} onChange={setStatus} />
        }
      />
      <div class="stats">
        <Stat label="Models" value={count(new Set(all.map((v) => v.name)).size)} />
        <Stat label="Versions" value={count(all.length)} />
        <Stat label="Deployed" value={count(all.filter((v) => v.status === "deployed").length)} tone="green" />
        <Stat label="In testing" value={count(all.filter((v) => v.status === "testing").length)} tone="blue" />
      </div>
      {list.error && <Alert>{list.error}</Alert>}
      {!list.loading && names.length === 0 && (
        <Card><Empty>No model versions{status ? ` ${label(status)}` : " yet"}. A completed fine-tuning job registers one; so does <code>POST /api/models</code>.</Empty></Card>
      )}
      {action && <ActionForm key={`${action.kind}-${action.version.id}`} action={action} versions={all} onDone={changed} onCancel={() => setAction(null)} />}
      {abTest && (
        <StartAbTest key={abTest} versions={all.filter((v) => v.name === abTest)} onCancel={() => setAbTest(null)} />
      )}
      {names.map(({ name, versions }) => {
        const live = versions.find((v) => v.status === "deployed");
        const testable = versions.filter((v) => v.status !== "archived");
        return (
          <Card
            key={name}
            class="model-name"
            title={<span>{name} {live ? <Badge value={`v${live.version} live`} tone="green" raw /> : <Badge value="nothing deployed" tone="slate" raw />}</span>}
            actions={
              <>
                {can("curator") && (
                  <Button onClick={() => { setAction(null); setAbTest(name); }} disabled={testable.length < 2}
                    title={testable.length < 2 ? "needs two versions that are not archived" : undefined}>
                    Start A/B test
                  </Button>
                )}
                {can("admin") && live && (
                  <Button variant="danger" onClick={() => { setAbTest(null); setAction({ kind: "rollback", version: live }); }}>Roll back</Button>
                )}
              </>
            }
          >
            <div class="table-wrap">
              <table class="table table-hover">
                <thead><tr><th>Version</th><th>Status</th><th>Evaluation</th><th>Model</th><th>Registered</th><th class="num">Actions</th></tr></thead>
                <tbody>
                  {versions.map((v) => (
                    <tr key={v.id} data-id={v.id} data-version={v.version} class={v.id === selectedId ? "selected" : ""} onClick={() => setSelectedId(v.id)}>
                      <td class="mono"><button type="button" class="link" onClick={() => setSelectedId(v.id)} aria-label={`v${v.version} of ${name}`}>v{v.version}</button></td>
                      <td><Badge value={v.status} /></td>
                      <td><EvaluationSummary version={v} /></td>
                      <td class="cell-text mono small" title={v.model_id}>{v.model_id}</td>
                      <td class="nowrap muted" title={when(v.created_at)}>{ago(v.created_at)} · {v.registered_by.startsWith("job:") ? "from a job" : v.registered_by}</td>
                      <td class="num nowrap" onClick={(e) => e.stopPropagation()}>
                        <span class="row-actions">
                          {can("admin") && (v.status === "testing" || v.status === "deprecated") && (
                            <Button variant="primary" onClick={() => { setAbTest(null); setSelectedId(v.id); setAction({ kind: "deploy", version: v }); }}
                              aria-label={`Deploy ${name} ${v.version}`}>Deploy</Button>
                          )}
                          {can("curator") && (v.status === "testing" || v.status === "deprecated") && (
                            <Button variant="ghost" onClick={() => { setAbTest(null); setAction({ kind: "archive", version: v }); }}
                              aria-label={`Archive ${name} ${v.version}`}>Archive</Button>
                          )}
                        </span>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </Card>
        );
      })}
      {selected && <VersionDetail key={selected.id} version={selected} />}
    </div>
  );
}

type Evaluation = Record<string, unknown> & { leak_check?: { findings?: number; samples?: number } };

function evaluationOf(v: ModelVersion): Evaluation | null {
  const e = v.performance_metrics.evaluation;
  return e && typeof e === "object" ? (e as Evaluation) : null;
}

function EvaluationSummary({ version }: { version: ModelVersion }) {
  const e = evaluationOf(version);
  if (!e) return <span class="muted small">no evaluation</span>;
  const parts: string[] = [];
  if (typeof e.preference_accuracy === "number") parts.push(`pref. acc. ${percent(e.preference_accuracy)}`);
  if (typeof e.reward_margin === "number") parts.push(`margin ${num(e.reward_margin)}`);
  const loss = e.eval_loss ?? e.validation_loss;
  if (typeof loss === "number") parts.push(`eval loss ${num(loss)}`);
  if (typeof e.token_accuracy === "number") parts.push(`token acc. ${percent(e.token_accuracy)}`);
  return (
    <span class="eval-summary">
      {parts.length ? parts.join(" · ") : <span class="muted">evaluated</span>}
      {e.leak_check && typeof e.leak_check.findings === "number" && (
        <Badge value={e.leak_check.findings ? `${e.leak_check.findings} leak findings` : "no leaks"} tone={e.leak_check.findings ? "red" : "green"} />
      )}
    </span>
  );
}

/** Deploy, archive or roll back, confirmed with a reason; a deploy the evaluation gate refuses says
 * why, and an admin may override it (the reason is then required and recorded). */
function ActionForm({ action, versions, onDone, onCancel }: { action: Action; versions: ModelVersion[]; onDone: () => void; onCancel: () => void }) {
  const { notify } = useSession();
  const { kind, version: v } = action;
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [gate, setGate] = useState<string[] | null>(null);
  const [force, setForce] = useState(false);
  const live = versions.find((x) => x.name === v.name && x.status === "deployed");

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const path = { params: { path: { model_version_id: v.id } } };
    const why = reason.trim() || null;
    try {
      if (kind === "deploy") {
        await ok(api.POST("/api/models/{model_version_id}/deploy", { ...path, body: { reason: why, force } }));
        notify(`${v.name} ${v.version} deployed`);
      } else if (kind === "archive") {
        await ok(api.POST("/api/models/{model_version_id}/archive", { ...path, body: { reason: why } }));
        notify(`${v.name} ${v.version} archived`);
      } else {
        const back = await ok(api.POST("/api/models/{model_version_id}/rollback", { ...path, body: { reason: why } }));
        notify(`${v.name} rolled back to ${back.version}`);
      }
      onDone();
    } catch (err) {
      if (err instanceof ApiError && err.code === "evaluation_gate") {
        const reasons = err.body.reasons;
        setGate(Array.isArray(reasons) ? reasons.map(String) : [err.message]);
      } else setError(err instanceof ApiError ? err.detail : String(err));
    } finally {
      setBusy(false);
    }
  };

  const title = { deploy: `Deploy ${v.name} ${v.version}`, archive: `Archive ${v.name} ${v.version}`, rollback: `Roll back ${v.name}` }[kind];
  const explains = {
    deploy: live ? `It takes ${v.name}'s traffic; ${live.version}, deployed now, becomes deprecated.` : `It takes ${v.name}'s traffic.`,
    archive: "An archived version can no longer be deployed or tested.",
    rollback: `${v.name} ${v.version} is deprecated and the version deployed before it takes the traffic again.`,
  }[kind];
  return (
    <Card title={title} class="action-form">
      <form onSubmit={submit} class="stack">
        <p class="muted">{explains}</p>
        <Field label={force ? "Reason (required to override the gate)" : "Reason"} wide>
          <input name="reason" value={reason} required={force} maxLength={2000} onInput={(e) => setReason(e.currentTarget.value)}
            placeholder={kind === "rollback" ? "e.g. regression in thumbs-up rate" : "Recorded in the history"} />
        </Field>
        {gate && (
          <Alert tone="amber">
            The evaluation gate refuses this deploy:
            <ul class="reasons">{gate.map((r) => <li key={r}>{r}</li>)}</ul>
            <label class="check"><input type="checkbox" checked={force} onChange={() => setForce(!force)} /> Override the gate (admins; recorded with the reason)</label>
          </Alert>
        )}
        {error && <Alert>{error}</Alert>}
        <div class="form-actions">
          <Button onClick={onCancel}>Cancel</Button>
          <Button variant={kind === "deploy" ? "primary" : "danger"} type="submit" busy={busy} disabled={!!gate && !force}>
            {{ deploy: force ? "Deploy anyway" : "Confirm deploy", archive: "Confirm archive", rollback: "Confirm rollback" }[kind]}
          </Button>
        </div>
      </form>
    </Card>
  );
}

/** The A/B test form: control (the deployed version by default), treatment, split, metrics, a guardrail. */
function StartAbTest({ versions, onCancel }: { versions: ModelVersion[]; onCancel: () => void }) {
  const { notify } = useSession();
  const candidates = versions.filter((v) => v.status !== "archived");
  const deployed = candidates.find((v) => v.status === "deployed");
  const name = versions[0]?.name ?? "";
  const [control, setControl] = useState(deployed?.id ?? candidates[1]?.id ?? "");
  const [treatment, setTreatment] = useState(candidates.find((v) => v.id !== (deployed?.id ?? candidates[1]?.id))?.id ?? "");
  const [split, setSplit] = useState(50);
  const [primary, setPrimary] = useState("thumbs_up_rate");
  const [also, setAlso] = useState<Set<string>>(new Set());
  const [guardrail, setGuardrail] = useState("");
  const [maxDegradation, setMaxDegradation] = useState("0.05");
  const [minSample, setMinSample] = useState(100);
  const [title, setTitle] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const byId = (id: string) => candidates.find((v) => v.id === id);
  const defaultTitle = `${name}: ${byId(treatment)?.version ?? "?"} vs ${byId(control)?.version ?? "?"}`;

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const experiment = await ok(api.POST("/api/experiments", {
        body: {
          name: title.trim() || defaultTitle,
          control_model_id: control,
          treatment_model_id: treatment,
          traffic_split: split / 100,
          success_metrics: [primary, ...METRICS.map((m) => m.id).filter((m) => m !== primary && also.has(m))].map((m) => ({ name: m })),
          guardrails: guardrail ? [{ metric: guardrail, max_degradation: Number(maxDegradation) || 0 }] : [],
          min_sample_size: minSample,
        },
      }));
      notify(`A/B test “${experiment.name}” started`);
      window.location.hash = `#/experiments?id=${experiment.id}`;
    } catch (err) {
      setError(err instanceof ApiError ? err.detail : String(err));
    } finally {
      setBusy(false);
    }
  };
  const toggle = (m: string) => {
    const next = new Set(also);
    if (next.has(m)) next.delete(m);
    else next.add(m);
    setAlso(next);
  };
  const option = (v: ModelVersion) => <option value={v.id}>v{v.version} · {label(v.status)}</option>;

  return (
    <Card title={`Start an A/B test of ${name}`} class="ab-form">
      <form onSubmit={submit}>
        <div class="form-grid">
          <Field label="Control">
            <select name="control" value={control} onChange={(e) => setControl(e.currentTarget.value)}>{candidates.map(option)}</select>
          </Field>
          <Field label="Treatment">
            <select name="treatment" value={treatment} onChange={(e) => setTreatment(e.currentTarget.value)}>{candidates.map(option)}</select>
          </Field>
          <Field label={`Treatment's share of traffic: ${split}%`}>
            <input type="range" name="split" min={1} max={99} step={1} value={split} onInput={(e) => setSplit(Number(e.currentTarget.value))} />
          </Field>
          <Field label="Name">
            <input name="name" value={title} placeholder={defaultTitle} maxLength={200} onInput={(e) => setTitle(e.currentTarget.value)} />
          </Field>
          <Field label="Primary metric" hint="The decision follows this one.">
            <select name="primary" value={primary} onChange={(e) => setPrimary(e.currentTarget.value)}>
              {METRICS.map((m) => <option value={m.id}>{m.title}</option>)}
            </select>
          </Field>
          <Field label="Minimum sample size" hint="Outcomes per variant before any decision.">
            <input type="number" name="min_sample_size" min={0} value={minSample} onInput={(e) => setMinSample(Number(e.currentTarget.value))} />
          </Field>
          <Field label="Guardrail">
            <select name="guardrail" value={guardrail} onChange={(e) => setGuardrail(e.currentTarget.value)}>
              <option value="">None</option>
              {METRICS.map((m) => <option value={m.id}>{m.title}</option>)}
            </select>
          </Field>
          <Field label="Guardrail: worst degradation allowed" hint="In the metric's units; beyond it the test pauses.">
            <input type="number" name="max_degradation" min={0} step="any" value={maxDegradation} disabled={!guardrail} onInput={(e) => setMaxDegradation(e.currentTarget.value)} />
          </Field>
          <fieldset class="field-wide metric-choices">
            <legend class="field-label">Also measure</legend>
            {METRICS.filter((m) => m.id !== primary).map((m) => (
              <label key={m.id} class="check"><input type="checkbox" checked={also.has(m.id)} onChange={() => toggle(m.id)} /> {m.title}</label>
            ))}
          </fieldset>
        </div>
        {control === treatment && <Alert tone="amber">Control and treatment are the same version.</Alert>}
        {error && <Alert>{error}</Alert>}
        <div class="form-actions">
          <Button onClick={onCancel}>Cancel</Button>
          <Button variant="primary" type="submit" busy={busy} disabled={!control || !treatment || control === treatment}>Start test</Button>
        </div>
      </form>
    </Card>
  );
}

function VersionDetail({ version: v }: { version: ModelVersion }) {
  const history = usePoll(() => ok(api.GET("/api/models/{model_version_id}/history", { params: { path: { model_version_id: v.id }, query: { scope: "name", limit: 100 } } })), 2000, [v.id]);
  const evaluation = evaluationOf(v);
  const final = v.performance_metrics.final_metrics as Record<string, unknown> | undefined;
  const other = Object.entries(v.performance_metrics).filter(([k]) => k !== "evaluation" && k !== "final_metrics");

  return (
    <div class="version-detail">
      <Card title={<span>{v.name} <span class="mono">v{v.version}</span> <Badge value={v.status} /></span>}>
        <dl class="facts">
          <div><dt>Model id</dt><dd class="mono small break">{v.model_id}</dd></div>
          <div><dt>Base model</dt><dd class="mono small break">{v.base_model}</dd></div>
          <div><dt>Served as</dt><dd class="small">{String(v.serving.kind ?? "—")}</dd></div>
          <div><dt>Registered</dt><dd class="small">{when(v.created_at)}</dd></div>
          <div><dt>Deployed</dt><dd class="small">{when(v.deployed_at)}</dd></div>
          <div><dt>By</dt><dd class="small mono">{v.registered_by}</dd></div>
        </dl>
        {v.description && <p>{v.description}</p>}
        <h3 class="section-title">Evaluation</h3>
        {evaluation ? <MetricList values={evaluation} /> : <p class="muted small">No evaluation: the evaluation gate refuses a deploy unless the policy allows it or an admin overrides it.</p>}
        {final && Object.keys(final).length > 0 && (<><h3 class="section-title">Training metrics</h3><MetricList values={final} /></>)}
        {other.length > 0 && (<><h3 class="section-title">Other metrics</h3><MetricList values={Object.fromEntries(other)} /></>)}
      </Card>
      <Card title="Deployment history">
        {history.data && history.data.length > 0 ? (
          <div class="table-wrap history-wrap" tabIndex={0} role="region" aria-label="deployment history, newest first">
            <table class="table history">
              <thead><tr><th>When</th><th>Version</th><th>Change</th><th>By, and why</th></tr></thead>
              <tbody>
                {[...history.data].reverse().map((h) => (
                  <tr key={h.id} data-action={h.action}>
                    <td class="muted small">{when(h.when)}</td>
                    <td class="mono">{h.version}</td>
                    <td>
                      <Badge value={h.action} />{h.forced && <Badge value="gate overridden" tone="red" raw />}
                      <div class="muted small nowrap">{h.from ? `${label(h.from)} → ` : ""}{label(h.to)}</div>
                    </td>
                    <td class="small">
                      <span class="mono who" title={h.who}>{h.who}</span>
                      {h.reason && <span class="block">{h.reason}</span>}
                      {h.experiment_id && <a class="block" href={`#/experiments?id=${h.experiment_id}`}>from experiment {shortId(h.experiment_id)}</a>}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : history.error ? <Alert>{history.error}</Alert> : <Empty>No history yet.</Empty>}
      </Card>
      <LineageCard version={v} />
    </div>
  );
}

function MetricList({ values }: { values: Record<string, unknown> }) {
  const entries = Object.entries(values).filter(([, x]) => x != null);
  return (
    <dl class="metric-list">
      {entries.map(([k, x]) => (
        <div key={k}>
          <dt>{label(k)}</dt>
          <dd class="mono">{show(k, x)}</dd>
        </div>
      ))}
    </dl>
  );
}

function show(key: string, x: unknown): string {
  if (typeof x === "number") return key.includes("accuracy") ? percent(x) : num(x, 4);
  if (typeof x === "string" || typeof x === "boolean") return String(x);
  if (key === "leak_check" && x && typeof x === "object") {
    const l = x as { findings?: number; samples?: number };
    return `${count(l.findings)} findings in ${count(l.samples)} samples`;
  }
  if (Array.isArray(x)) return `${x.length} items`;
  return JSON.stringify(x).slice(0, 120);
}

/** version → job → dataset export → preference pairs → feedback ids, pages of pairs as the API gives them. */
function LineageCard({ version: v }: { version: ModelVersion }) {
  const [pages, setPages] = useState<Lineage[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const load = async (cursor: string | null) => {
    setBusy(true);
    try {
      const page = await ok(api.GET("/api/models/{model_version_id}/lineage", { params: { path: { model_version_id: v.id }, query: { limit: 25, cursor: cursor ?? undefined } } }));
      setPages((p) => (cursor ? [...p, page] : [page]));
      setError(null);
    } catch (e) {
      setError(e instanceof ApiError ? e.detail : String(e));
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => { void load(null); }, [v.id]);
  const first = pages[0];
  const pairs = pages.flatMap((p) => p.pairs) as { id?: string; split?: string; feedback_ids: string[] }[];
  const feedback = [...new Set(pages.flatMap((p) => p.feedback_ids))];
  const next = pages[pages.length - 1]?.next_cursor ?? null;
  const job = first?.job as Record<string, unknown> | null | undefined;
  const dataset = first?.dataset as Record<string, unknown> | null | undefined;
  const counts = (dataset?.counts ?? {}) as Record<string, number>;

  return (
    <Card title="Lineage" class="lineage">
      {error && <Alert>{error}</Alert>}
      {!first ? <Empty>Loading…</Empty> : !job ? (
        <Empty>Registered by hand: no training job, dataset or feedback behind this version.</Empty>
      ) : (
        <ol class="lineage-chain">
          <li>
            <span class="lineage-step">Fine-tuning job</span>
            <span class="mono small">{shortId(String(job.id))}</span>
            <span class="small">{String(job.provider)} · {String(job.method ?? "—")} · {String(job.base_model ?? "").split("/").pop()}</span>
            <span class="muted small">cost {usd((job.actual_cost ?? job.cost_estimate) as number | null)} · completed {when(job.completed_at as string)}</span>
          </li>
          <li>
            <span class="lineage-step">Dataset export</span>
            {dataset ? (
              <>
                <strong>{String(dataset.name ?? "dataset")}</strong>
                <span class="small">v{String(dataset.export_version)} · {String(dataset.format)} · {count(counts.train)} train, {count(counts.validation)} validation</span>
                {dataset.sha256 ? <span class="mono muted small" title={String(dataset.sha256)}>sha256 {String(dataset.sha256).slice(0, 12)}…</span> : null}
                {dataset.sources_missing ? <Alert tone="amber">The export's sources file is gone from the object store.</Alert> : null}
              </>
            ) : <span class="muted small">not known (the job did not name an export)</span>}
          </li>
          <li>
            <span class="lineage-step">Preference pairs</span>
            <span class="small">{count(pairs.length)}{next ? "+" : ""} exported examples</span>
          </li>
          <li>
            <span class="lineage-step">Feedback</span>
            <span class="small">{count(feedback.length)}{next ? "+" : ""} feedback items</span>
          </li>
        </ol>
      )}
      {pairs.length > 0 && (
        <div class="table-wrap lineage-pairs" tabIndex={0} role="region" aria-label="exported examples and their feedback">
          <table class="table">
            <thead><tr><th>Example</th><th>Split</th><th>From feedback</th></tr></thead>
            <tbody>
              {pairs.map((p, i) => (
                <tr key={`${p.id}-${i}`}>
                  <td class="mono small">{p.id ? shortId(String(p.id)) : "—"}</td>
                  <td><Badge value={p.split ?? "—"} tone={p.split === "validation" ? "amber" : "slate"} /></td>
                  <td class="mono small">{p.feedback_ids.length ? p.feedback_ids.map((f) => <span class="chip" title={f} key={f}>{shortId(f)}</span>) : <span class="muted">written by hand</span>}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {next && <div class="more"><Button onClick={() => load(next)} busy={busy}>More pairs</Button></div>}
    </Card>
  );
}
