// Panel 3: preference pairs. Query, chosen and rejected side by side, strength, notes; and pairs
// mined in bulk from feedback by strategy.
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, ok, type Dataset, type Pair } from "../api/client";
import { Alert, Badge, Button, Card, Empty, Field, PageHeader } from "../components/ui";
import { ago, count } from "../format";
import { useDebounced, usePoll } from "../hooks";
import { useSession } from "../session";

type Strategy = "correction" | "thumbs" | "rating";
const STRATEGIES: { id: Strategy; title: string; explains: string }[] = [
  { id: "correction", title: "Corrections", explains: "the curator's correction is chosen over the model's answer" },
  { id: "thumbs", title: "Thumbs", explains: "for the same query, a thumbs-up answer is chosen over a thumbs-down one" },
  { id: "rating", title: "Ratings", explains: "the higher-rated answer to a query is chosen; strength from the gap" },
];

interface Draft {
  query: string;
  chosen_response: string;
  rejected_response: string;
  preference_strength: number;
  annotation_notes: string;
}

const EMPTY: Draft = { query: "", chosen_response: "", rejected_response: "", preference_strength: 0.75, annotation_notes: "" };
const draftOf = (p: Pair): Draft => ({
  query: p.query, chosen_response: p.chosen_response, rejected_response: p.rejected_response,
  preference_strength: p.preference_strength, annotation_notes: p.annotation_notes ?? "",
});

export function PairEditor() {
  const { can } = useSession();
  const datasets = usePoll(() => ok(api.GET("/api/training-datasets", { params: { query: { limit: 200 } } })), 2000, []);
  const pairDatasets = (datasets.data?.items ?? []).filter((d) => d.dataset_type !== "instruction_tuning" && d.status !== "archived");
  // The dataset last worked on in this tab: its pairs load alongside the dataset list.
  const [datasetId, setDatasetIdState] = useState<string>(sessionStorage.getItem("rlhf.pairs.dataset") ?? "");
  const setDatasetId = (id: string) => {
    sessionStorage.setItem("rlhf.pairs.dataset", id);
    setDatasetIdState(id);
  };
  const [search, setSearch] = useState("");
  const q = useDebounced(search.trim(), 250);
  const [editing, setEditing] = useState<Pair | "new" | null>(null);

  useEffect(() => {
    // A dataset chosen (in this tab, or just now in the select) stands; else the newest dataset that
    // has pairs, or else the newest. Decided on the state as it is when this runs, not as it was
    // when the list arrived: a choice made in between is kept.
    if (!datasets.data) return;
    setDatasetIdState((current) => {
      if (current && pairDatasets.some((d) => d.id === current)) return current;
      const next = pairDatasets.length ? (pairDatasets.find((d) => d.sample_count > 0) ?? pairDatasets[0]).id : "";
      sessionStorage.setItem("rlhf.pairs.dataset", next);
      return next;
    });
  }, [pairDatasets.length]);

  const pairs = usePoll(
    () => (datasetId ? ok(api.GET("/api/preference-pairs", { params: { query: { dataset_id: datasetId, q: q || undefined, limit: 100 } } })) : Promise.resolve(null)),
    2000,
    [datasetId, q],
  );
  const dataset = pairDatasets.find((d) => d.id === datasetId) ?? null;
  const items = pairs.data?.items ?? [];

  return (
    <div class="panel">
      <PageHeader
        title="Preference Pairs"
        subtitle="Chosen versus rejected answers to the same query: the material of DPO and reward models."
        actions={
          <div class="inline-filters">
            <select aria-label="dataset" value={datasetId} onChange={(e) => { setDatasetId(e.currentTarget.value); setEditing(null); }}>
              {pairDatasets.length === 0 && <option value="">No pair datasets</option>}
              {pairDatasets.map((d) => <option value={d.id}>{d.name} ({count(d.sample_count)})</option>)}
            </select>
            {can("curator") && <Button variant="primary" disabled={!datasetId} onClick={() => setEditing("new")}>+ New pair</Button>}
          </div>
        }
      />
      {!datasets.loading && pairDatasets.length === 0 && (
        <Alert tone="amber">Create a DPO or preference-pairs dataset in Training Datasets first.</Alert>
      )}
      {dataset && can("curator") && <Mining dataset={dataset} onMined={pairs.reload} />}
      {editing && dataset && (
        <PairForm key={editing === "new" ? "new" : editing.id} dataset={dataset} pair={editing === "new" ? null : editing}
          onDone={() => { setEditing(null); pairs.reload(); }} />
      )}
      {dataset && (
        <Card
          title={<span>Pairs <span class="muted">{count(items.length)}{pairs.data?.next_cursor ? "+" : ""}</span></span>}
          actions={<input type="search" aria-label="search pairs" placeholder="Search text…" value={search} onInput={(e) => setSearch(e.currentTarget.value)} />}
        >
          {pairs.error && <Alert>{pairs.error}</Alert>}
          {items.length === 0 ? <Empty>No pairs in this dataset{q ? " match" : " yet"}.</Empty> : (
            <div class="pair-list">
              {items.map((p) => (
                <article key={p.id} class={`pair-row ${editing !== "new" && editing?.id === p.id ? "selected" : ""}`} data-id={p.id}>
                  <div class="pair-query">
                    <button type="button" class="link" onClick={() => setEditing(p)}>{p.query}</button>
                    <div class="pair-meta">
                      <Badge value={p.strategy} tone={p.strategy === "manual" ? "slate" : "violet"} />
                      <span class="strength" title="preference strength">
                        <span class="strength-bar"><span style={{ width: `${p.preference_strength * 100}%` }} /></span>
                        {p.preference_strength.toFixed(2)}
                      </span>
                      <span class="muted">{ago(p.updated_at)}</span>
                    </div>
                  </div>
                  <div class="pair-side chosen"><span class="side-label">Chosen</span>{p.chosen_response}</div>
                  <div class="pair-side rejected"><span class="side-label">Rejected</span>{p.rejected_response}</div>
                </article>
              ))}
            </div>
          )}
        </Card>
      )}
    </div>
  );
}

function Mining({ dataset, onMined }: { dataset: Dataset; onMined: () => void }) {
  const { notify } = useSession();
  const [chosen, setChosen] = useState<Set<Strategy>>(new Set(["correction", "thumbs", "rating"]));
  const [approvedOnly, setApprovedOnly] = useState(true);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<Record<string, number> | null>(null);
  // The exact preview: the same query as mining, as a dry run (nothing written), for every strategy.
  const preview = usePoll(
    () => ok(api.POST("/api/preference-pairs/bulk", { body: { dataset_id: dataset.id, strategies: STRATEGIES.map((s) => s.id), approved_only: approvedOnly, dry_run: true } })),
    5000,
    [dataset.id, approvedOnly],
  );
  const wouldAdd = preview.data?.created ?? {};
  const total = [...chosen].reduce((sum, s) => sum + (wouldAdd[s] ?? 0), 0);

  const mine = async () => {
    setBusy(true);
    try {
      const r = await ok(api.POST("/api/preference-pairs/bulk", { body: { dataset_id: dataset.id, strategies: [...chosen], approved_only: approvedOnly } }));
      setResult(r.created);
      const made = Object.values(r.created).reduce((a, b) => a + b, 0);
      notify(`${made} pair${made === 1 ? "" : "s"} mined · dataset has ${count(r.sample_count)}`);
      onMined();
      preview.reload();
    } catch (e) {
      notify(e instanceof ApiError ? e.detail : String(e), "error");
    } finally {
      setBusy(false);
    }
  };
  const toggle = (s: Strategy) => {
    const next = new Set(chosen);
    if (next.has(s)) next.delete(s);
    else next.add(s);
    setChosen(next);
  };

  return (
    <Card title="Mine pairs from feedback" actions={
      <>
        <label class="check"><input type="checkbox" checked={approvedOnly} onChange={() => setApprovedOnly(!approvedOnly)} /> approved feedback only</label>
        <Button variant="primary" onClick={mine} busy={busy} disabled={!chosen.size}>
          Mine pairs{preview.data ? ` (${count(total)})` : ""}
        </Button>
      </>
    }>
      {preview.error && <Alert tone="amber">{preview.error}</Alert>}
      <div class="strategies">
        {STRATEGIES.map((s) => (
          <label key={s.id} class={`strategy ${chosen.has(s.id) ? "on" : ""}`} data-strategy={s.id}>
            <input type="checkbox" checked={chosen.has(s.id)} onChange={() => toggle(s.id)} />
            <div>
              <div class="strategy-title">{s.title}</div>
              <div class="muted small">{s.explains}</div>
              <div class="strategy-count">
                <strong data-testid={`preview-${s.id}`}>{preview.data ? count(wouldAdd[s.id] ?? 0) : "…"}</strong>{" "}
                <span class="muted small">new pair{wouldAdd[s.id] === 1 ? "" : "s"} now</span>
                {result && result[s.id] != null && <span class="chip chip-green">+{result[s.id]} created</span>}
              </div>
            </div>
          </label>
        ))}
      </div>
    </Card>
  );
}

function PairForm({ dataset, pair, onDone }: { dataset: Dataset; pair: Pair | null; onDone: () => void }) {
  const { can, notify } = useSession();
  const [draft, setDraft] = useState<Draft>(pair ? draftOf(pair) : EMPTY);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const set = <K extends keyof Draft>(k: K, v: Draft[K]) => setDraft((d) => ({ ...d, [k]: v }));
  const editable = can("curator");

  const save = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const body = { ...draft, annotation_notes: draft.annotation_notes || null };
    try {
      if (pair) await ok(api.PATCH("/api/preference-pairs/{pair_id}", { params: { path: { pair_id: pair.id } }, body }));
      else await ok(api.POST("/api/preference-pairs", { body: { ...body, dataset_id: dataset.id } }));
      notify(pair ? "Pair saved" : "Pair created");
      onDone();
    } catch (err) {
      setError(err instanceof ApiError ? err.detail : String(err));
    } finally {
      setBusy(false);
    }
  };
  const remove = async () => {
    if (!pair) return;
    setBusy(true);
    try {
      await ok(api.DELETE("/api/preference-pairs/{pair_id}", { params: { path: { pair_id: pair.id } } }));
      notify("Pair deleted");
      onDone();
    } catch (err) {
      setError(err instanceof ApiError ? err.detail : String(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Card title={pair ? "Edit preference pair" : "Create preference pair"} class="pair-editor">
      <form onSubmit={save}>
        <Field label="Query" wide>
          <input name="query" required value={draft.query} disabled={!editable} onInput={(e) => set("query", e.currentTarget.value)} placeholder="How do I deploy to production?" />
        </Field>
        <div class="sides">
          <Field label="Chosen response (better)">
            <textarea name="chosen" class="side-chosen" rows={8} required value={draft.chosen_response} disabled={!editable} onInput={(e) => set("chosen_response", e.currentTarget.value)} />
          </Field>
          <Field label="Rejected response (worse)">
            <textarea name="rejected" class="side-rejected" rows={8} required value={draft.rejected_response} disabled={!editable} onInput={(e) => set("rejected_response", e.currentTarget.value)} />
          </Field>
        </div>
        <div class="form-grid">
          <Field label={`Preference strength: ${draft.preference_strength.toFixed(2)}`} hint="How clearly the chosen answer is better (0–1).">
            <input type="range" name="strength" min={0} max={1} step={0.05} value={draft.preference_strength} disabled={!editable}
              onInput={(e) => set("preference_strength", Number(e.currentTarget.value))} />
          </Field>
          <Field label="Notes" wide>
            <input name="notes" value={draft.annotation_notes} disabled={!editable} onInput={(e) => set("annotation_notes", e.currentTarget.value)} placeholder="Optional annotation notes" />
          </Field>
        </div>
        {pair && pair.source_feedback_ids.length > 0 && <p class="muted small">From {pair.source_feedback_ids.length} feedback item(s) by the {pair.strategy} strategy.</p>}
        {error && <Alert>{error}</Alert>}
        <div class="form-actions">
          {pair && editable && <Button variant="ghost" class="danger-text" onClick={remove} busy={busy}>Delete</Button>}
          <span class="spacer" />
          <Button onClick={onDone}>Cancel</Button>
          {editable && <Button variant="primary" type="submit" busy={busy}>Save pair</Button>}
        </div>
      </form>
    </Card>
  );
}
