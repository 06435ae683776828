// The few building blocks every panel shares.
import type { ButtonHTMLAttributes, ComponentChildren } from "preact";
import { label } from "../format";

const TONES: Record<string, string> = {
  pending: "amber", approved: "green", rejected: "red",
  draft: "slate", curating: "blue", ready: "green", exported: "violet", archived: "slate",
  validating: "blue", queued: "blue", training: "blue", completed: "green", failed: "red", cancelled: "slate",
  thumbs_up: "green", thumbs_down: "red", rating: "amber", correction: "violet", detailed: "blue",
  error: "red", warning: "amber", passed: "green",
  viewer: "slate", curator: "blue", admin: "violet",
  testing: "blue", deployed: "green", deprecated: "amber",
  running: "blue", paused: "amber", treatment: "violet", control: "slate", inconclusive: "amber",
  deploy: "green", rollback: "amber", archive: "slate", deprecate: "amber", register: "blue", patch: "slate",
};

/** A status as a coloured pill; `raw` shows the text as given (a version, a count) rather than as a word. */
export function Badge({ value, tone, raw }: { value: string; tone?: string; raw?: boolean }) {
  return <span class={`badge badge-${tone ?? TONES[value] ?? "slate"}${raw ? " badge-raw" : ""}`}>{raw ? value : label(value)}</span>;
}

export function Card(props: { title?: ComponentChildren; actions?: ComponentChildren; children: ComponentChildren; class?: string }) {
  return (
    <section class={`card ${props.class ?? ""}`}>
      {(props.title || props.actions) && (
        <header class="card-head">
          <h2>{props.title}</h2>
          <div class="card-actions">{props.actions}</div>
        </header>
      )}
      <div class="card-body">{props.children}</div>
    </section>
  );
}

export function PageHeader(props: { title: string; subtitle?: string; actions?: ComponentChildren }) {
  return (
    <div class="page-head">
      <div>
        <h1>{props.title}</h1>
        {props.subtitle && <p class="muted">{props.subtitle}</p>}
      </div>
      <div class="page-actions">{props.actions}</div>
    </div>
  );
}

export function Stat(props: { label: string; value: ComponentChildren; tone?: string; hint?: string }) {
  return (
    <div class={`stat stat-${props.tone ?? "slate"}`}>
      <div class="stat-label">{props.label}</div>
      <div class="stat-value">{props.value}</div>
      {props.hint && <div class="stat-hint">{props.hint}</div>}
    </div>
  );
}

export function Field(props: { label: string; hint?: string; children: ComponentChildren; wide?: boolean }) {
  return (
    <label class={`field ${props.wide ? "field-wide" : ""}`}>
      <span class="field-label">{props.label}</span>
      {props.children}
      {props.hint && <span class="field-hint">{props.hint}</span>}
    </label>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <div class="empty">{children}</div>;
}

export function Alert({ children, tone = "red" }: { children: ComponentChildren; tone?: string }) {
  return <div class={`alert alert-${tone}`} role="alert">{children}</div>;
}

export function Button(props: ButtonHTMLAttributes<HTMLButtonElement> & { variant?: "primary" | "danger" | "ghost" | "default"; busy?: boolean; disabled?: boolean; type?: "button" | "submit" }) {
  const { variant = "default", busy, class: cls, children, ...rest } = props;
  return (
    <button type="button" {...rest} class={`btn btn-${variant} ${cls ?? ""}`} disabled={props.disabled || busy} aria-busy={busy}>
      {busy && <span class="spinner" aria-hidden="true" />}
      {children}
    </button>
  );
}

export function Progress({ value, labelText }: { value: number | null | undefined; labelText: string }) {
  const pct = Math.max(0, Math.min(100, value ?? 0));
  return (
    <div class="progress" role="progressbar" aria-label={labelText} aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(pct)}>
      <div class="progress-bar" style={{ width: `${pct}%` }} />
    </div>
  );
}

/** A "filter by status" select: every status of a list, or all of them (""). */
export function StatusFilter<S extends string>(props: { value: S | ""; statuses: readonly S[]; onChange: (value: S | "") => void }) {
  return (
    <select aria-label="filter by status" value={props.value} onChange={(e) => props.onChange(e.currentTarget.value as S | "")}>
      <option value="">All statuses</option>
      {props.statuses.map((s) => <option value={s}>{label(s)}</option>)}
    </select>
  );
}
