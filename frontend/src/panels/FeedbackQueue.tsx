// Panel 1: the review queue. Filters, keyset paging, a selection to approve or reject in bulk,
// and one item's correction, tags and notes.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, ApiError, ok, type Feedback } from "../api/client";
import { Alert, Badge, Button, Card, Empty, Field, PageHeader, Stat } from "../components/ui";
import { ago, count, label, when } from "../format";
import { useDebounced, usePoll } from "../hooks";
import { useSession } from "../session";

type Status = Feedback["status"];
type FeedbackType = Feedback["feedback_type"];
const STATUSES: Status[] = ["pending", "approved", "rejected"];
const TYPES: FeedbackType[] = ["thumbs_up", "thumbs_down", "rating", "correction", "detailed"];
const PAGE = 50;

interface Filters {
  status: Status | "";
  feedback_type: FeedbackType | "";
  tag: string;
  session_id: string;
  created_from: string;
  created_to: string;
}

const NO_FILTERS: Filters = { status: "pending", feedback_type: "", tag: "", session_id: "", created_from: "", created_to: "" };

function queryOf(f: Filters) {
  return {
    status: f.status || undefined,
    feedback_type: f.feedback_type || undefined,
    tag: f.tag.trim() || undefined,
    session_id: f.session_id.trim() || undefined,
    created_from: f.created_from ? new Date(`${f.created_from}T00:00:00`).toISOString() : undefined,
    created_to: f.created_to ? new Date(`${f.created_to}T23:59:59.999`).toISOString() : undefined,
  };
}

function valueOf(item: Feedback): string {
  const v = item.feedback_value as Record<string, unknown>;
  if (item.feedback_type === "rating" && v.rating != null) return `${v.rating}/5`;
  return "";
}

export function FeedbackQueue() {
  const { can, notify } = useSession();
  const [filters, setFilters] = useState<Filters>(NO_FILTERS);
  const query = useDebounced(queryOf(filters), 250);
  const key = JSON.stringify(query);
  const [items, setItems] = useState<Feedback[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loadingMore, setLoadingMore] = useState(false);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [open, setOpen] = useState<Feedback | null>(null);
  const [busy, setBusy] = useState<"approve" | "reject" | "add" | null>(null);
  // Instruction-tuning datasets are made of approved feedback items: the selection can join one.
  const datasets = usePoll(() => ok(api.GET("/api/training-datasets", { params: { query: { dataset_type: "instruction_tuning", limit: 200 } } })), 10_000, []);
  const targets = (datasets.data?.items ?? []).filter((d) => d.status !== "archived");

  // Counts by status answer "how much is left to review": every status, whatever the status filter.
  const stats = usePoll(() => ok(api.GET("/api/feedback/stats", { params: { query: { ...query, status: undefined } } })), 2000, [key]);
  // The first page follows the queue live; pages loaded further down stay as they are.
  const first = usePoll(() => ok(api.GET("/api/feedback", { params: { query: { ...query, limit: PAGE } } })), 2000, [key]);

  useEffect(() => {
    if (!first.data) return;
    setItems((current) => {
      const head = first.data!.items;
      const seen = new Set(head.map((i) => i.id));
      const tail = current.length > PAGE ? current.slice(PAGE).filter((i) => !seen.has(i.id)) : [];
      return [...head, ...tail];
    });
    setCursor((c) => (items.length > PAGE ? c : first.data!.next_cursor));
  }, [first.data]);

  useEffect(() => {
    setItems([]);
    setSelected(new Set());
  }, [key]);

  const loadMore = async () => {
    if (!cursor) return;
    setLoadingMore(true);
    try {
      const page = await ok(api.GET("/api/feedback", { params: { query: { ...query, limit: PAGE, cursor } } }));
      setItems((current) => [...current, ...page.items]);
      setCursor(page.next_cursor);
    } catch (e) {
      notify(e instanceof ApiError ? e.detail : String(e), "error");
    } finally {
      setLoadingMore(false);
    }
  };

  const review = async (action: "approve" | "reject") => {
    setBusy(action);
    try {
      const result = await ok(api.POST("/api/feedback/review", { body: { ids: [...selected], action } }));
      notify(`${result.updated.length} ${result.updated.length === 1 ? "item" : "items"} ${action === "approve" ? "approved" : "rejected"}`);
      setSelected(new Set());
      first.reload();
      stats.reload();
    } catch (e) {
      notify(e instanceof ApiError ? e.detail : String(e), "error");
    } finally {
      setBusy(null);
    }
  };

  const addTo = async (datasetId: string) => {
    if (!datasetId) return;
    setBusy("add");
    try {
      const d = await ok(api.PATCH("/api/training-datasets/{dataset_id}", {
        params: { path: { dataset_id: datasetId } }, body: { add_feedback_ids: [...selected] },
      }));
      notify(`Added to “${d.name}”: it now has ${count(d.sample_count)} items`);
      setSelected(new Set());
    } catch (e) {
      notify(e instanceof ApiError ? e.detail : String(e), "error");
    } finally {
      setBusy(null);
    }
  };

  const allSelected = items.length > 0 && items.every((i) => selected.has(i.id));
  const toggleAll = () => setSelected(allSelected ? new Set() : new Set(items.map((i) => i.id)));
  const toggle = (id: string) => {
    const next = new Set(selected);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setSelected(next);
  };
  const set = <K extends keyof Filters>(k: K, v: Filters[K]) => setFilters((f) => ({ ...f, [k]: v }));
  const s = stats.data;
  const byStatus = s?.by_status ?? {};
  const activeFilters = useMemo(() => Object.entries(filters).filter(([k, v]) => v && !(k === "status")).length, [filters]);

  return (
    <div class="panel">
      <PageHeader title="Feedback Queue" subtitle="Review what users said about the model's answers; approved items feed datasets and pairs." />
      <div class="stats">
        <Stat label="Matching" value={count(s ? (filters.status ? byStatus[filters.status] ?? 0 : s.total) : null)} hint={activeFilters ? `${activeFilters} filter${activeFilters > 1 ? "s" : ""} on` : "all feedback"} />
        <Stat label="Pending" value={count(byStatus.pending ?? 0)} tone="amber" />
        <Stat label="Approved" value={count(byStatus.approved ?? 0)} tone="green" />
        <Stat label="Rejected" value={count(byStatus.rejected ?? 0)} tone="red" />
      </div>

      <Card>
        <div class="filters" role="search">
          <Field label="Status">
            <select value={filters.status} onChange={(e) => set("status", e.currentTarget.value as Status | "")}>
              <option value="">Any</option>
              {STATUSES.map((x) => <option value={x}>{label(x)}</option>)}
            </select>
          </Field>
          <Field label="Type">
            <select value={filters.feedback_type} onChange={(e) => set("feedback_type", e.currentTarget.value as FeedbackType | "")}>
              <option value="">Any</option>
              {TYPES.map((x) => <option value={x}>{label(x)}</option>)}
            </select>
          </Field>
          <Field label="Tag">
            <input value={filters.tag} placeholder="e.g. billing" onInput={(e) => set("tag", e.currentTarget.value)} />
          </Field>
          <Field label="Session">
            <input value={filters.session_id} placeholder="session id" onInput={(e) => set("session_id", e.currentTarget.value)} />
          </Field>
          <Field label="From">
            <input type="date" value={filters.created_from} onInput={(e) => set("created_from", e.currentTarget.value)} />
          </Field>
          <Field label="To">
            <input type="date" value={filters.created_to} onInput={(e) => set("created_to", e.currentTarget.value)} />
          </Field>
          <Button variant="ghost" class="filters-reset" onClick={() => setFilters({ ...NO_FILTERS, status: "" })}>Clear</Button>
        </div>
      </Card>

      <Card
        title={<span>Items <span class="muted">{count(items.length)}{cursor ? "+" : ""} shown</span></span>}
        actions={can("curator") && (
          <div class="bulk" aria-label="bulk review">
            <span class="muted">{selected.size} selected</span>
            <Button variant="primary" disabled={!selected.size} busy={busy === "approve"} onClick={() => review("approve")}>Approve</Button>
            <Button variant="danger" disabled={!selected.size} busy={busy === "reject"} onClick={() => review("reject")}>Reject</Button>
            {targets.length > 0 && (
              <select aria-label="add the selection to a dataset" value="" disabled={!selected.size || busy === "add"}
                onChange={(e) => addTo(e.currentTarget.value)}>
                <option value="">Add to dataset…</option>
                {targets.map((d) => <option value={d.id}>{d.name}</option>)}
              </select>
            )}
          </div>
        )}
      >
        {first.error && <Alert>{first.error}</Alert>}
        {!first.loading && items.length === 0 ? (
          <Empty>No feedback matches these filters.</Empty>
        ) : (
          <div class="table-wrap">
            <table class="table">
              <thead>
                <tr>
                  {can("curator") && (
                    <th class="col-check"><input type="checkbox" aria-label="select all" checked={allSelected} onChange={toggleAll} /></th>
                  )}
                  <th>Query</th>
                  <th>Response</th>
                  <th>Type</th>
                  <th>Tags</th>
                  <th>Status</th>
                  <th>Received</th>
                </tr>
              </thead>
              <tbody>
                {items.map((item) => (
                  <tr key={item.id} class={selected.has(item.id) ? "selected" : ""} data-id={item.id}>
                    {can("curator") && (
                      <td class="col-check">
                        <input type="checkbox" aria-label={`select ${item.query.slice(0, 40)}`} checked={selected.has(item.id)} onChange={() => toggle(item.id)} />
                      </td>
                    )}
                    <td class="cell-text">
                      <button type="button" class="link" onClick={() => setOpen(item)}>{item.query}</button>
                    </td>
                    <td class="cell-text muted">{item.correction ? <span title="corrected">✎ {item.correction}</span> : item.response}</td>
                    <td><Badge value={item.feedback_type} /> <span class="muted">{valueOf(item)}</span></td>
                    <td>{item.tags.map((t) => <span class="chip">{t}</span>)}</td>
                    <td><Badge value={item.status} /></td>
                    <td class="nowrap muted" title={when(item.created_at)}>{ago(item.created_at)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {cursor && (
          <div class="more">
            <Button onClick={loadMore} busy={loadingMore}>Load more</Button>
          </div>
        )}
      </Card>

      {open && <ReviewDrawer item={open} onClose={() => setOpen(null)} onSaved={() => { setOpen(null); first.reload(); stats.reload(); }} />}
    </div>
  );
}

function ReviewDrawer({ item, onClose, onSaved }: { item: Feedback; onClose: () => void; onSaved: () => void }) {
  const { can, notify } = useSession();
  const [correction, setCorrection] = useState(item.correction ?? "");
  const [tags, setTags] = useState(item.tags.join(", "));
  const [notes, setNotes] = useState(item.notes ?? "");
  const [busy, setBusy] = useState(false);
  const editable = can("curator");

  const save = async (status?: Status) => {
    setBusy(true);
    try {
      await ok(api.PATCH("/api/feedback/{feedback_id}", {
        params: { path: { feedback_id: item.id } },
        body: {
          ...(status ? { status } : {}),
          correction: correction.trim() || null,
          tags: tags.split(",").map((t) => t.trim()).filter(Boolean),
          notes: notes.trim() || null,
        },
      }));
      notify(status ? `Feedback ${status}` : "Feedback saved");
      onSaved();
    } catch (e) {
      notify(e instanceof ApiError ? e.detail : String(e), "error");
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="drawer-backdrop" onClick={(e) => e.target === e.currentTarget && onClose()}>
      <div class="drawer" role="dialog" aria-modal="true" aria-labelledby="drawer-title">
        <header class="drawer-head">
          <h2 id="drawer-title">Review feedback</h2>
          <Button variant="ghost" onClick={onClose} aria-label="close">✕</Button>
        </header>
        <div class="drawer-body">
          <div class="meta">
            <Badge value={item.feedback_type} /> <Badge value={item.status} />
            <span class="muted">{when(item.created_at)}</span>
            {item.session_id && <span class="muted">session {item.session_id}</span>}
            {item.model_id && <span class="muted">model {item.model_id}</span>}
          </div>
          <h3 class="section-title">Query</h3>
          <div class="quote">{item.query}</div>
          <h3 class="section-title">Response</h3>
          <div class="quote">{item.response}</div>
          {Object.keys(item.feedback_value).length > 0 && (
            <>
              <h3 class="section-title">Feedback value</h3>
              <pre class="code">{JSON.stringify(item.feedback_value, null, 2)}</pre>
            </>
          )}
          <Field label="Correction" hint="The answer the model should have given (becomes the chosen side of a pair).">
            <textarea rows={4} value={correction} disabled={!editable} onInput={(e) => setCorrection(e.currentTarget.value)} />
          </Field>
          <Field label="Tags" hint="Comma-separated.">
            <input value={tags} disabled={!editable} onInput={(e) => setTags(e.currentTarget.value)} />
          </Field>
          <Field label="Notes">
            <textarea rows={2} value={notes} disabled={!editable} onInput={(e) => setNotes(e.currentTarget.value)} />
          </Field>
          {item.reviewed_by && <p class="muted">Reviewed by {item.reviewed_by} · {when(item.reviewed_at)}</p>}
        </div>
        {editable && (
          <footer class="drawer-foot">
            <Button onClick={() => save()} busy={busy}>Save</Button>
            <span class="spacer" />
            <Button variant="danger" onClick={() => save("rejected")} busy={busy}>Reject</Button>
            <Button variant="primary" onClick={() => save("approved")} busy={busy}>Approve</Button>
          </footer>
        )}
      </div>
    </div>
  );
}
