// The typed API client: paths and shapes come from the services' OpenAPI (schema.d.ts is generated,
// see `make ui`), so a renamed field fails `tsc`, not a curator's screen.
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Feedback = Schemas["FeedbackOut"];
export type FeedbackStats = Schemas["FeedbackStats"];
export type Me = Schemas["Me"];
export type Dataset = Schemas["DatasetOut"];
export type DatasetExport = Schemas["ExportOut"];
export type Pair = Schemas["PairOut"];
export type Job = Schemas["JobOut"];
export type JobDetail = Schemas["JobDetail"];
export type JobEvent = Schemas["JobEventOut"];
export type Estimate = Schemas["Estimate"];
export type Budget = Schemas["BudgetOut"];
export type ModelVersion = Schemas["ModelOut"];
export type HistoryEntry = Schemas["HistoryOut"];
export type Lineage = Schemas["LineageOut"];
export type Experiment = Schemas["ExperimentOut"];
export type ExperimentStatus = Experiment["status"];
export type Provider = Job["provider"];
export type ExportFormat = DatasetExport["format"];

// An experiment's analysis (services/experiments/domain.py analyse(), typed in its OpenAPI as
// ExperimentResults): live while it runs, stored when it ends.
export type Variant = "control" | "treatment";
export type ExperimentResults = Schemas["ExperimentResults"];
export type MetricResult = Schemas["MetricResult"];
export type GuardrailResult = Schemas["GuardrailResult"];
export type LatencyGuardrailResult = Schemas["LatencyGuardrailResult"];
export type ConfidenceInterval = MetricResult["ci"]; // low, high (null: unbounded)

const KEY_STORAGE = "rlhf.apiKey";

export function storedKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function storeKey(key: string | null): void {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.clear(); // signing out forgets everything this tab kept
}

const ME_STORAGE = "rlhf.me";

/** Who the stored key was, last time the gateway said: a reload draws the panels at once and
 * checks the key again in the background (the services authorize every call anyway). */
export function storedMe(): Me | null {
  const raw = sessionStorage.getItem(ME_STORAGE);
  return raw && storedKey() ? (JSON.parse(raw) as Me) : null;
}

export function storeMe(me: Me): void {
  sessionStorage.setItem(ME_STORAGE, JSON.stringify(me));
}

/** What every error answer of the services carries: a code, a message, and per-field errors. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields: { field: string; message: string }[] = [],
    readonly body: Record<string, unknown> = {}, // the whole error answer (some carry more, e.g. `reasons`)
  ) {
    super(message);
  }

  get detail(): string {
    const fields = this.fields.map((f) => `${f.field}: ${f.message}`).join("; ");
    return fields && fields !== this.message ? `${this.message} (${fields})` : this.message;
  }
}

let onUnauthorized: () => void = () => {};
export function whenUnauthorized(callback: () => void): void {
  onUnauthorized = callback;
}

const auth: Middleware = {
  onRequest({ request }) {
    const key = storedKey();
    if (key) request.headers.set("Authorization", `Bearer ${key}`);
    return request;
  },
  onResponse({ response }) {
    if (response.status === 401) onUnauthorized();
    return response;
  },
};

export const api = createClient<paths>({ baseUrl: window.location.origin });
api.use(auth);

/** The data of an openapi-fetch answer, or an ApiError built from the service's error body. */
export async function ok<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (response.ok) return data as T;
  const body = (error ?? {}) as { error?: string; message?: string; errors?: { field: string; message: string }[] };
  throw new ApiError(response.status, body.error ?? "error", body.message ?? response.statusText, body.errors ?? [], body);
}

/** Downloads a file the API serves only with the key (a plain link cannot send the header). */
export async function download(path: string, filename: string): Promise<void> {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${storedKey() ?? ""}` } });
  if (!response.ok) throw new ApiError(response.status, "download_failed", `download failed (${response.status})`);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
