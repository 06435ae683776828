// Panel 2: training datasets. List with filters, create, edit, validate (the quality report per
// rule, with examples), export in a format, and the versions with their files.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, download, ok, type Dataset, type DatasetExport, type ExportFormat } from "../api/client";
import { Alert, Badge, Button, Card, Empty, Field, PageHeader, StatusFilter } from "../components/ui";
import { ago, count, label, when } from "../format";
import { usePoll } from "../hooks";
import { useSession } from "../session";

type DatasetType = Dataset["dataset_type"];
type Status = Dataset["status"];
const TYPES: DatasetType[] = ["dpo", "preference_pairs", "instruction_tuning"];
const STATUSES: Status[] = ["draft", "curating", "ready", "exported", "archived"];
export const FORMATS: ExportFormat[] = ["openai_sft", "openai_dpo", "anthropic", "bedrock_claude", "trl_dpo", "parquet", "jsonl"];
const NEEDS_PAIRS = new Set(["openai_dpo", "trl_dpo"]);
// Who may follow whom (the service refuses anything else with 409); `exported` only by an export.
const NEXT: Record<Status, Status[]> = {
  draft: ["curating", "ready", "archived"],
  curating: ["draft", "ready", "archived"],
  ready: ["curating", "archived"],
  exported: ["curating", "ready", "archived"],
  archived: [],
};

export const formatsFor = (type: DatasetType) => FORMATS.filter((f) => type !== "instruction_tuning" || !NEEDS_PAIRS.has(f));

interface Rule {
  rule: string;
  severity: string;
  count: number;
  message: string;
  examples: Record<string, unknown>[];
}

interface Report {
  format: string;
  provider: string;
  sample_count: number;
  passed: boolean;
  quality_score: number;
  rules: Rule[];
  validated_at: string;
}

const TYPE_LABEL: Record<DatasetType, string> = { dpo: "DPO", preference_pairs: "Preference", instruction_tuning: "Instruct" };

export function Datasets() {
  const { can } = useSession();
  const [status, setStatus] = useState<Status | "">("");
  const [type, setType] = useState<DatasetType | "">("");
  const [selectedId, setSelectedId] = useState<string | null>(null);
  const [creating, setCreating] = useState(false);
  const list = usePoll(
    () => ok(api.GET("/api/training-datasets", { params: { query: { status: status || undefined, dataset_type: type || undefined, limit: 200 } } })),
    2000,
    [status, type],
  );
  const items = list.data?.items ?? [];
  const selected = items.find((d) => d.id === selectedId) ?? null;

  return (
    <div class="panel">
      <PageHeader
        title="Training Datasets"
        subtitle="Curated sets of pairs or approved feedback, validated and exported as versioned training files."
        actions={can("curator") && <Button variant="primary" onClick={() => setCreating(true)}>+ New dataset</Button>}
      />
      {creating && <CreateDataset onClose={() => setCreating(false)} onCreated={(d) => { setCreating(false); setSelectedId(d.id); list.reload(); }} />}
      <div class="split">
        <Card
          class="split-list"
          title="Datasets"
          actions={
            <div class="inline-filters">
              <StatusFilter value={status} statuses={STATUSES} onChange={setStatus} />
              <select aria-label="filter by type" value={type} onChange={(e) => setType(e.currentTarget.value as DatasetType | "")}>
                <option value="">All types</option>
                {TYPES.map((t) => <option value={t}>{TYPE_LABEL[t]}</option>)}
              </select>
            </div>
          }
        >
          {list.error && <Alert>{list.error}</Alert>}
          {!list.loading && items.length === 0 ? (
            <Empty>No datasets yet.{can("curator") && " Create one to start curating."}</Empty>
          ) : (
            <div class="table-wrap">
              <table class="table table-hover">
                <thead>
                  <tr><th>Dataset name</th><th>Type</th><th class="num">Samples</th><th class="num">Quality</th><th>Status</th></tr>
                </thead>
                <tbody>
                  {items.map((d) => (
                    <tr key={d.id} class={d.id === selectedId ? "selected" : ""} onClick={() => setSelectedId(d.id)}>
                      <td><button type="button" class="link" onClick={() => setSelectedId(d.id)}>{d.name}</button></td>
                      <td>{TYPE_LABEL[d.dataset_type]}</td>
                      <td class="num">{count(d.sample_count)}</td>
                      <td class="num">{d.quality_score == null ? "—" : d.quality_score.toFixed(2)}</td>
                      <td title={`updated ${ago(d.updated_at)}`}><Badge value={d.status} /></td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </Card>
        {selected ? <DatasetDetail key={selected.id} dataset={selected} onChanged={list.reload} /> : (
          <Card class="split-detail"><Empty>Select a dataset to see its details, validate and export it.</Empty></Card>
        )}
      </div>
    </div>
  );
}

function CreateDataset({ onClose, onCreated }: { onClose: () => void; onCreated: (d: Dataset) => void }) {
  const { notify } = useSession();
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [type, setType] = useState<DatasetType>("dpo");
  const [systemPrompt, setSystemPrompt] = useState("");
  const [ratio, setRatio] = useState(0.1);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    try {
      const created = await ok(api.POST("/api/training-datasets", {
        body: { name, description: description || null, dataset_type: type, system_prompt: systemPrompt || null, validation_ratio: ratio },
      }));
      notify(`Dataset “${created.name}” created`);
      onCreated(created);
    } catch (err) {
      setError(err instanceof ApiError ? err.detail : String(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Card title="New dataset" class="create">
      <form class="form-grid" onSubmit={submit}>
        <Field label="Name"><input name="name" required maxLength={200} value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="AOMA Support Q4" /></Field>
        <Field label="Type">
          <select name="dataset_type" value={type} onChange={(e) => setType(e.currentTarget.value as DatasetType)}>
            <option value="dpo">DPO (preference pairs)</option>
            <option value="preference_pairs">Preference pairs</option>
            <option value="instruction_tuning">Instruction tuning (approved feedback)</option>
          </select>
        </Field>
        <Field label="Validation split" hint="Share of examples held out for validation.">
          <input type="number" min={0} max={0.9} step={0.05} value={ratio} onInput={(e) => setRatio(Number(e.currentTarget.value))} />
        </Field>
        <Field label="Description" wide><input value={description} onInput={(e) => setDescription(e.currentTarget.value)} /></Field>
        <Field label="System prompt" wide hint="Optional; written into chat formats.">
          <textarea rows={2} value={systemPrompt} onInput={(e) => setSystemPrompt(e.currentTarget.value)} />
        </Field>
        {error && <Alert>{error}</Alert>}
        <div class="form-actions">
          <Button onClick={onClose}>Cancel</Button>
          <Button variant="primary" type="submit" busy={busy}>Create dataset</Button>
        </div>
      </form>
    </Card>
  );
}

function DatasetDetail({ dataset, onChanged }: { dataset: Dataset; onChanged: () => void }) {
  const { can, notify } = useSession();
  const [editing, setEditing] = useState(false);
  const [format, setFormat] = useState(dataset.export_format ?? (dataset.dataset_type === "instruction_tuning" ? "openai_sft" : "trl_dpo"));
  const [report, setReport] = useState<Report | null>((dataset.validation_report as Report | null) ?? null);
  const [failure, setFailure] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const exports = usePoll(() => ok(api.GET("/api/training-datasets/{dataset_id}/exports", { params: { path: { dataset_id: dataset.id } } })), null, [dataset.id, dataset.export_version]);

  useEffect(() => {
    if (dataset.validation_report) setReport(dataset.validation_report as unknown as Report);
  }, [dataset.validation_report]);

  const act = async (name: string, work: () => Promise<void>) => {
    setBusy(name);
    setFailure(null);
    try {
      await work();
      onChanged();
    } catch (e) {
      const message = e instanceof ApiError ? e.detail : String(e);
      setFailure(message);
      notify(message, "error");
    } finally {
      setBusy(null);
    }
  };

  const validate = () => act("validate", async () => {
    const r = (await ok(api.POST("/api/training-datasets/{dataset_id}/validate", { params: { path: { dataset_id: dataset.id } }, body: { format } }))) as unknown as Report;
    setReport(r);
    notify(r.passed ? `Validation passed · quality ${r.quality_score.toFixed(2)}` : "Validation found blocking problems", r.passed ? "ok" : "error");
  });
  const exportNow = () => act("export", async () => {
    const e = await ok(api.POST("/api/training-datasets/{dataset_id}/export", { params: { path: { dataset_id: dataset.id } }, body: { format } }));
    notify(`Exported v${e.version} (${count(e.counts.train)} train, ${count(e.counts.validation ?? 0)} validation)`);
    exports.reload();
  });
  const move = (status: Status) => act("status", async () => {
    await ok(api.PATCH("/api/training-datasets/{dataset_id}", { params: { path: { dataset_id: dataset.id } }, body: { status } }));
    notify(`Dataset is now ${status}`);
  });

  return (
    <div class="split-detail stack">
      <Card
        title={<span>{dataset.name} <Badge value={dataset.status} /></span>}
        actions={can("curator") && dataset.status !== "archived" && (
          <>
            <Button variant="ghost" onClick={() => setEditing(!editing)}>{editing ? "Close editor" : "Edit"}</Button>
            {NEXT[dataset.status].map((s) => (
              <Button key={s} onClick={() => move(s)} busy={busy === "status"} variant={s === "archived" ? "ghost" : "default"}>
                {s === "archived" ? "Archive" : `Mark ${label(s)}`}
              </Button>
            ))}
          </>
        )}
      >
        {dataset.description && <p>{dataset.description}</p>}
        <dl class="facts">
          <div><dt>Type</dt><dd>{TYPE_LABEL[dataset.dataset_type]}</dd></div>
          <div><dt>Samples</dt><dd>{count(dataset.sample_count)}</dd></div>
          <div><dt>Quality</dt><dd>{dataset.quality_score == null ? "not validated" : dataset.quality_score.toFixed(2)}</dd></div>
          <div><dt>Validation split</dt><dd>{Math.round(dataset.validation_ratio * 100)}%</dd></div>
          <div><dt>Exports</dt><dd>{dataset.export_version}</dd></div>
          <div><dt>Created</dt><dd>{when(dataset.created_at)}</dd></div>
        </dl>
        {editing && <EditDataset dataset={dataset} onSaved={() => { setEditing(false); onChanged(); }} />}
      </Card>

      <Card
        title="Validate & export"
        actions={
          <div class="inline-filters">
            <select aria-label="format" value={format} onChange={(e) => setFormat(e.currentTarget.value as ExportFormat)}>
              {formatsFor(dataset.dataset_type).map((f) => <option value={f}>{f}</option>)}
            </select>
            {can("curator") && <Button onClick={validate} busy={busy === "validate"}>Validate</Button>}
            {can("curator") && <Button variant="primary" onClick={exportNow} busy={busy === "export"} disabled={!["ready", "exported"].includes(dataset.status)} title={["ready", "exported"].includes(dataset.status) ? "" : "Mark the dataset ready first"}>Export</Button>}
          </div>
        }
      >
        {failure && <Alert>{failure}</Alert>}
        {report ? <QualityReport report={report} /> : <Empty>Not validated yet. Validation checks every rule of the chosen format without writing files.</Empty>}
      </Card>

      <Card title="Export versions">
        {exports.data && exports.data.length > 0 ? <ExportList dataset={dataset} versions={exports.data} /> : <Empty>No exports yet.</Empty>}
      </Card>
    </div>
  );
}

function EditDataset({ dataset, onSaved }: { dataset: Dataset; onSaved: () => void }) {
  const { notify } = useSession();
  const [name, setName] = useState(dataset.name);
  const [description, setDescription] = useState(dataset.description ?? "");
  const [systemPrompt, setSystemPrompt] = useState(dataset.system_prompt ?? "");
  const [ratio, setRatio] = useState(dataset.validation_ratio);
  const [busy, setBusy] = useState(false);
  const save = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    try {
      await ok(api.PATCH("/api/training-datasets/{dataset_id}", {
        params: { path: { dataset_id: dataset.id } },
        body: { name, description: description || null, system_prompt: systemPrompt || null, validation_ratio: ratio },
      }));
      notify("Dataset saved");
      onSaved();
    } catch (err) {
      notify(err instanceof ApiError ? err.detail : String(err), "error");
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="form-grid editor" onSubmit={save}>
      <Field label="Name"><input value={name} required onInput={(e) => setName(e.currentTarget.value)} /></Field>
      <Field label="Validation split"><input type="number" min={0} max={0.9} step={0.05} value={ratio} onInput={(e) => setRatio(Number(e.currentTarget.value))} /></Field>
      <Field label="Description" wide><input value={description} onInput={(e) => setDescription(e.currentTarget.value)} /></Field>
      <Field label="System prompt" wide><textarea rows={2} value={systemPrompt} onInput={(e) => setSystemPrompt(e.currentTarget.value)} /></Field>
      <div class="form-actions"><Button variant="primary" type="submit" busy={busy}>Save changes</Button></div>
    </form>
  );
}

function QualityReport({ report }: { report: Report }) {
  const [open, setOpen] = useState<string | null>(null);
  return (
    <div class="report">
      <div class="report-head">
        <Badge value={report.passed ? "passed" : "error"} tone={report.passed ? "green" : "red"} />
        <strong>Quality {report.quality_score.toFixed(2)}</strong>
        <span class="muted">{report.format} · {report.provider} · {count(report.sample_count)} samples · {when(report.validated_at)}</span>
      </div>
      <table class="table">
        <thead><tr><th>Rule</th><th>Severity</th><th class="num">Affected</th><th>What it means</th><th /></tr></thead>
        <tbody>
          {report.rules.map((r) => (
            <>
              <tr key={r.rule} class={r.count ? (r.severity === "error" ? "row-error" : "row-warning") : ""}>
                <td class="mono">{r.rule}</td>
                <td>{r.count ? <Badge value={r.severity} /> : <Badge value="passed" tone="green" />}</td>
                <td class="num">{count(r.count)}</td>
                <td class="muted">{r.message}</td>
                <td>{r.examples.length > 0 && <button type="button" class="link" onClick={() => setOpen(open === r.rule ? null : r.rule)}>{open === r.rule ? "Hide" : `${r.examples.length} example${r.examples.length > 1 ? "s" : ""}`}</button>}</td>
              </tr>
              {open === r.rule && (
                <tr class="examples"><td colSpan={5}><pre class="code">{r.examples.map((x) => JSON.stringify(x, null, 2)).join("\n\n")}</pre></td></tr>
              )}
            </>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function ExportList({ dataset, versions }: { dataset: Dataset; versions: DatasetExport[] }) {
  const { notify } = useSession();
  const files = (e: DatasetExport) => ["train", ...(e.validation_url ? ["validation"] : []), "manifest", "sources"];
  const fetchFile = (e: DatasetExport, name: string) => {
    const ext = name === "manifest" ? "json" : e.format === "parquet" && name !== "sources" ? "parquet" : "jsonl";
    download(`/api/training-datasets/${dataset.id}/exports/${e.version}/files/${name}`, `${dataset.name}-v${e.version}-${name}.${ext}`)
      .catch((err) => notify(err instanceof ApiError ? err.detail : String(err), "error"));
  };
  return (
    <div class="table-wrap">
    <table class="table">
      <thead><tr><th>Version</th><th>Format</th><th class="num">Train</th><th class="num">Validation</th><th>PII masked</th><th>Files</th></tr></thead>
      <tbody>
        {[...versions].sort((a, b) => b.version - a.version).map((e) => (
          <tr key={e.version}>
            <td class="nowrap"><strong>v{e.version}</strong><div class="muted small" title={`sha256 ${e.sha256}`}>{when(e.created_at)}</div></td>
            <td class="mono">{e.format}</td>
            <td class="num">{count(e.counts.train)}</td>
            <td class="num">{count(e.counts.validation ?? 0)}</td>
            <td>{Object.entries(e.masked).filter(([, n]) => n).map(([k, n]) => <span class="chip">{k} {n}</span>)}{!Object.values(e.masked).some(Boolean) && <span class="muted">none</span>}</td>
            <td><div class="files">{files(e).map((f) => <button type="button" class="link" onClick={() => fetchFile(e, f)}>{f}</button>)}</div></td>
          </tr>
        ))}
      </tbody>
    </table>
    </div>
  );
}
