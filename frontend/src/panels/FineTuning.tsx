// Panel 4: fine-tuning. Launch a job with its cost and the budget left shown first; the jobs;
// one job's progress, loss curve and events, live while it runs; cancel.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, ApiError, ok, type Estimate, type Job, type Provider } from "../api/client";
import { LossChart } from "../components/LossChart";
import { Alert, Badge, Button, Card, Empty, Field, PageHeader, Progress, Stat } from "../components/ui";
import { ago, count, shortId, usd, when } from "../format";
import { useDebounced, usePoll } from "../hooks";
import { useSession } from "../session";

const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const PROVIDERS: { id: Provider; title: string; models: string[] }[] = [
  { id: "openai", title: "OpenAI", models: ["gpt-4o-mini-2024-07-18", "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano-2025-04-14", "gpt-4o-2024-08-06"] },
  { id: "bedrock", title: "Anthropic on Bedrock", models: ["anthropic.claude-3-haiku-20240307-v1:0:200k"] },
  { id: "huggingface", title: "Local (TRL + LoRA)", models: [] },
];
const providerTitle = (id: string) => PROVIDERS.find((p) => p.id === id)?.title ?? id;

export function FineTuning() {
  const { can } = useSession();
  const [provider, setProvider] = useState<Provider | "">("");
  const [selectedId, setSelectedId] = useState<string | null>(null);
  const [launching, setLaunching] = useState(false);
  const jobs = usePoll(() => ok(api.GET("/api/fine-tuning/jobs", { params: { query: { provider: provider || undefined, limit: 100 } } })), 2000, [provider]);
  const budget = usePoll(() => ok(api.GET("/api/fine-tuning/budget")), 2000, []);
  const items = jobs.data?.items ?? [];
  const running = items.filter((j) => !TERMINAL.has(j.status)).length;

  return (
    <div class="panel">
      <PageHeader
        title="Fine-Tuning Jobs"
        subtitle="Launch training on an exported dataset version and watch it run."
        actions={can("curator") && <Button variant="primary" onClick={() => setLaunching(!launching)}>{launching ? "Close" : "+ Launch job"}</Button>}
      />
      <div class="stats">
        <Stat label="Running" value={count(running)} tone="blue" />
        <Stat label="Jobs" value={count(items.length)} />
        <Stat label="Spent this month" value={usd(budget.data?.spent_this_month)} />
        <Stat label="Budget left" value={budget.data?.monthly_limit == null ? "No limit" : usd(budget.data?.remaining)}
          hint={budget.data?.monthly_limit == null ? "no monthly budget set" : `of ${usd(budget.data.monthly_limit)} a month`} tone="green" />
      </div>
      {launching && <LaunchJob onLaunched={(j) => { setLaunching(false); setSelectedId(j.id); jobs.reload(); budget.reload(); }} />}
      <Card
        title="Jobs"
        actions={
          <select aria-label="provider" value={provider} onChange={(e) => setProvider(e.currentTarget.value as Provider | "")}>
            <option value="">All providers</option>
            {PROVIDERS.map((p) => <option value={p.id}>{p.title}</option>)}
          </select>
        }
      >
        {jobs.error && <Alert>{jobs.error}</Alert>}
        {!jobs.loading && items.length === 0 ? <Empty>No fine-tuning jobs yet.</Empty> : (
          <div class="table-wrap">
            <table class="table table-hover">
              <thead><tr><th>Job</th><th>Model</th><th>Provider</th><th>Method</th><th>Status</th><th>Progress</th><th class="num">Cost</th><th>Created</th></tr></thead>
              <tbody>
                {items.map((j) => (
                  <tr key={j.id} class={j.id === selectedId ? "selected" : ""} onClick={() => setSelectedId(j.id)} data-id={j.id}>
                    <td class="mono"><button type="button" class="link ellipsis" title={j.job_id ?? j.id} onClick={() => setSelectedId(j.id)}>{j.job_id ?? shortId(j.id)}</button></td>
                    <td class="cell-text" title={j.base_model}>{j.base_model.split("/").pop()}</td>
                    <td>{providerTitle(j.provider)}</td>
                    <td class="mono">{j.method}</td>
                    <td><Badge value={j.status} /></td>
                    <td class="col-progress"><Progress value={(j.training_metrics.progress as number | undefined) ?? (j.status === "completed" ? 100 : 0)} labelText={`progress of ${shortId(j.id)}`} /></td>
                    <td class="num">{usd(j.actual_cost ?? j.cost_estimate)}</td>
                    <td class="nowrap muted">{ago(j.created_at)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Card>
      {selectedId && <JobDetailCard key={selectedId} jobId={selectedId} onChanged={jobs.reload} />}
      {can("admin") && <AdminCard limit={budget.data?.monthly_limit ?? null} onSaved={budget.reload} />}
    </div>
  );
}

/** Admins set the organization's monthly budget and read the audit trail of launches and cancels. */
function AdminCard({ limit, onSaved }: { limit: number | null; onSaved: () => void }) {
  const { notify } = useSession();
  const [value, setValue] = useState(limit == null ? "" : String(limit));
  const [busy, setBusy] = useState(false);
  const audit = usePoll(() => ok(api.GET("/api/fine-tuning/audit", { params: { query: { limit: 20 } } })), 2000, []);
  useEffect(() => setValue(limit == null ? "" : String(limit)), [limit]);
  const save = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    try {
      await ok(api.PUT("/api/fine-tuning/budget", { body: { monthly_limit: Number(value) } }));
      notify(`Monthly budget set to ${usd(Number(value))}`);
      onSaved();
    } catch (err) {
      notify(err instanceof ApiError ? err.detail : String(err), "error");
    } finally {
      setBusy(false);
    }
  };
  return (
    <Card title="Budget and audit trail (admin)">
      <form class="inline-filters" onSubmit={save}>
        <Field label="Monthly budget (USD)">
          <input name="monthly_limit" type="number" min={0} step="0.01" required value={value} onInput={(e) => setValue(e.currentTarget.value)} />
        </Field>
        <Button type="submit" busy={busy} class="align-end">Set budget</Button>
      </form>
      {audit.data && audit.data.length > 0 ? (
        <div class="table-wrap audit">
          <table class="table">
            <thead><tr><th>When</th><th>Who</th><th>Action</th><th>Job</th></tr></thead>
            <tbody>
              {audit.data.map((a) => (
                <tr key={a.id}><td class="nowrap muted">{when(a.at)}</td><td class="mono">{a.actor}</td><td><Badge value={a.action} tone="slate" /></td><td class="mono">{a.job_id ? shortId(a.job_id) : "—"}</td></tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : <Empty>No launches or cancels yet.</Empty>}
    </Card>
  );
}

function LaunchJob({ onLaunched }: { onLaunched: (job: Job) => void }) {
  const { notify } = useSession();
  const datasets = usePoll(() => ok(api.GET("/api/training-datasets", { params: { query: { limit: 200 } } })), null, []);
  const exported = (datasets.data?.items ?? []).filter((d) => d.export_version > 0);
  const [datasetId, setDatasetId] = useState("");
  const [version, setVersion] = useState<number | null>(null);
  const [provider, setProvider] = useState<Provider>("huggingface");
  const [model, setModel] = useState("");
  const [method, setMethod] = useState<"sft" | "dpo">("dpo");
  const [epochs, setEpochs] = useState(3);
  const [extra, setExtra] = useState("{}");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (!datasetId && exported.length) setDatasetId(exported[0].id);
  }, [exported.length]);
  const versions = usePoll(() => (datasetId ? ok(api.GET("/api/training-datasets/{dataset_id}/exports", { params: { path: { dataset_id: datasetId } } })) : Promise.resolve([])), null, [datasetId]);
  useEffect(() => {
    const latest = versions.data?.reduce((a, b) => (b.version > a.version ? b : a), versions.data[0]);
    setVersion(latest?.version ?? null);
    if (latest) setMethod(latest.format.includes("dpo") ? "dpo" : "sft");
  }, [versions.data]);

  const extraParsed = useMemo(() => {
    try {
      const v = JSON.parse(extra || "{}");
      return typeof v === "object" && v && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
    } catch {
      return null;
    }
  }, [extra]);
  const body = datasetId && model.trim() && extraParsed
    ? { dataset_id: datasetId, export_version: version, provider, base_model: model.trim(), method, hyperparameters: { n_epochs: epochs, ...extraParsed } }
    : null;
  const settled = useDebounced(JSON.stringify(body), 300);
  const [estimate, setEstimate] = useState<Estimate | null>(null);
  const [estimateError, setEstimateError] = useState<string | null>(null);
  useEffect(() => {
    if (!body) {
      setEstimate(null);
      return;
    }
    let cancelled = false;
    ok(api.POST("/api/fine-tuning/estimate", { body }))
      .then((e) => { if (!cancelled) { setEstimate(e); setEstimateError(null); } })
      .catch((e) => { if (!cancelled) { setEstimate(null); setEstimateError(e instanceof ApiError ? e.detail : String(e)); } });
    return () => { cancelled = true; };
  }, [settled]);

  const launch = async (e: Event) => {
    e.preventDefault();
    if (!body) return;
    setBusy(true);
    setError(null);
    try {
      const job = await ok(api.POST("/api/fine-tuning/jobs", { body }));
      notify(`Job launched on ${providerTitle(job.provider)}`);
      onLaunched(job);
    } catch (err) {
      setError(err instanceof ApiError ? err.detail : String(err));
    } finally {
      setBusy(false);
    }
  };
  const models = PROVIDERS.find((p) => p.id === provider)?.models ?? [];

  return (
    <Card title="Launch a fine-tuning job" class="launch">
      <form class="launch-grid" onSubmit={launch}>
        <div class="form-grid">
          <Field label="Dataset">
            <select name="dataset" value={datasetId} onChange={(e) => setDatasetId(e.currentTarget.value)}>
              {exported.length === 0 && <option value="">No exported dataset yet</option>}
              {exported.map((d) => <option value={d.id}>{d.name}</option>)}
            </select>
          </Field>
          <Field label="Export version">
            <select name="version" value={version ?? ""} onChange={(e) => setVersion(Number(e.currentTarget.value))}>
              {(versions.data ?? []).map((v) => <option value={v.version}>v{v.version} · {v.format} · {count(v.counts.train)} train</option>)}
            </select>
          </Field>
          <Field label="Provider">
            <select name="provider" value={provider} onChange={(e) => { setProvider(e.currentTarget.value as Provider); setModel(""); }}>
              {PROVIDERS.map((p) => <option value={p.id}>{p.title}</option>)}
            </select>
          </Field>
          <Field label="Base model" hint={provider === "huggingface" ? "A model directory on the training host, or a name in its local cache." : undefined}>
            <input name="base_model" list="base-models" required value={model} onInput={(e) => setModel(e.currentTarget.value)} placeholder={models[0] ?? "/models/llama-3.2-1b"} />
            <datalist id="base-models">{models.map((m) => <option value={m} />)}</datalist>
          </Field>
          <Field label="Method">
            <select name="method" value={method} onChange={(e) => setMethod(e.currentTarget.value as "sft" | "dpo")}>
              <option value="sft">Supervised (SFT)</option>
              <option value="dpo">Preference (DPO)</option>
            </select>
          </Field>
          <Field label="Epochs">
            <input name="n_epochs" type="number" min={1} max={50} value={epochs} onInput={(e) => setEpochs(Number(e.currentTarget.value))} />
          </Field>
          <Field label="More hyperparameters (JSON)" wide hint={extraParsed ? "e.g. {\"learning_rate_multiplier\": 0.5, \"batch_size\": 8}" : "Not valid JSON"}>
            <input name="hyperparameters" class="mono" value={extra} onInput={(e) => setExtra(e.currentTarget.value)} />
          </Field>
        </div>
        <aside class="estimate" aria-live="polite">
          <h3>Before you launch</h3>
          {estimate ? (
            <>
              <div class="estimate-cost">{usd(estimate.cost_estimate)}</div>
              <div class="muted small">estimated · {count(estimate.trained_tokens)} tokens ({count(estimate.examples)} examples × {estimate.epochs} epochs)</div>
              <dl class="facts facts-tight">
                <div><dt>Budget left</dt><dd>{estimate.budget_remaining == null ? "no limit" : usd(estimate.budget_remaining)}</dd></div>
                <div><dt>Spent this month</dt><dd>{usd(estimate.budget_spent)}</dd></div>
              </dl>
              {!estimate.within_budget && <Alert>Over budget: the launch would be refused.</Alert>}
            </>
          ) : estimateError ? <Alert tone="amber">{estimateError}</Alert> : <p class="muted small">Pick a dataset and a base model to see the cost.</p>}
          {error && <Alert>{error}</Alert>}
          <Button variant="primary" type="submit" busy={busy} disabled={!body || (estimate ? !estimate.within_budget : false)} class="btn-block">Launch job</Button>
        </aside>
      </form>
    </Card>
  );
}

function JobDetailCard({ jobId, onChanged }: { jobId: string; onChanged: () => void }) {
  const { can, notify } = useSession();
  const [done, setDone] = useState(false);
  const job = usePoll(() => ok(api.GET("/api/fine-tuning/jobs/{job_id}", { params: { path: { job_id: jobId } } })), done ? null : 1500, [jobId, done]);
  const events = usePoll(() => ok(api.GET("/api/fine-tuning/jobs/{job_id}/events", { params: { path: { job_id: jobId }, query: { limit: 200 } } })), done ? null : 2000, [jobId, done]);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    if (job.data && TERMINAL.has(job.data.status)) setDone(true);
  }, [job.data?.status]);

  if (!job.data) return <Card title="Job">{job.error ? <Alert>{job.error}</Alert> : <Empty>Loading…</Empty>}</Card>;
  const j = job.data;
  const m = j.training_metrics as { progress?: number; step?: number; total_steps?: number; epoch?: number; latest?: Record<string, number> };
  const latest = m.latest ?? {};
  const cancel = async () => {
    setBusy(true);
    try {
      await ok(api.POST("/api/fine-tuning/jobs/{job_id}/cancel", { params: { path: { job_id: j.id } } }));
      notify("Job cancelled");
      onChanged();
    } catch (e) {
      notify(e instanceof ApiError ? e.detail : String(e), "error");
    } finally {
      setBusy(false);
    }
  };
  const progress = m.progress ?? (j.status === "completed" ? 100 : 0);

  return (
    <div class="job-detail">
      <Card
        title={<span>Training progress <span class="mono muted ellipsis" title={j.job_id ?? j.id}>{j.job_id ?? shortId(j.id)}</span> <Badge value={j.status} /></span>}
        actions={can("curator") && !TERMINAL.has(j.status) && <Button variant="danger" onClick={cancel} busy={busy}>Cancel job</Button>}
      >
        <div class="progress-line">
          <Progress value={progress} labelText="training progress" />
          <span class="progress-text">
            {Math.round(progress)}%
            {m.epoch != null && ` · epoch ${Number(m.epoch).toFixed(1)}/${j.epochs}`}
            {m.step != null && ` · step ${m.step}${m.total_steps ? `/${m.total_steps}` : ""}`}
          </span>
        </div>
        <div class="metrics-line">
          <span>Loss <strong class="mono" data-testid="latest-loss">{latest.loss != null ? latest.loss.toFixed(4) : "—"}</strong></span>
          {latest.learning_rate != null && <span>Learning rate <strong class="mono">{latest.learning_rate.toExponential(1)}</strong></span>}
          <span>Cost <strong>{usd(j.actual_cost ?? j.cost_estimate)}</strong>{j.actual_cost == null && <span class="muted"> est.</span>}</span>
          <span class="muted">{j.base_model.split("/").pop()} · {j.method} · {providerTitle(j.provider)}</span>
        </div>
        {j.error_message && <Alert>{j.error_message}</Alert>}
        {j.resulting_model_id && <p>Resulting model: <code>{j.resulting_model_id}</code></p>}
        <LossChart points={j.loss_curve.map((p) => ({ step: p.step, loss: p.loss }))} />
      </Card>
      <Card title="Events">
        {events.data && events.data.length > 0 ? (
          <ol class="events">
            {[...events.data].reverse().map((e) => (
              <li key={e.id}><span class="event-kind"><Badge value={e.kind} tone="slate" /></span><span>{e.message}</span><span class="muted nowrap">{when(e.created_at)}</span></li>
            ))}
          </ol>
        ) : <Empty>No events yet.</Empty>}
      </Card>
    </div>
  );
}
