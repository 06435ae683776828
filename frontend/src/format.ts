const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const number = new Intl.NumberFormat();
const money = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" });

export const when = (iso: string | null | undefined) => (iso ? dateTime.format(new Date(iso)) : "—");
export const count = (n: number | null | undefined) => (n == null ? "—" : number.format(n));
export const usd = (n: number | null | undefined) => (n == null ? "—" : money.format(n));
export const shortId = (id: string) => id.slice(0, 8);
export const label = (s: string) => s.replace(/_/g, " ");

/** What `since` is, in words: "3 s ago", "5 min ago". */
export function ago(iso: string): string {
  const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return when(iso);
}
const percentFormat = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
const signedPercent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1, signDisplay: "exceptZero" });

/** 0.123 → "12.3%"; with `signed`, "+12.3%". */
export const percent = (x: number | null | undefined, signed = false) =>
  x == null || !Number.isFinite(x) ? "—" : (signed ? signedPercent : percentFormat).format(x);

/** A number with a few significant digits (metric values, differences). */
export function num(x: number | null | undefined, digits = 3, signed = false): string {
  if (x == null || !Number.isFinite(x)) return "—";
  const text = Math.abs(x) >= 1000 ? Math.round(x).toLocaleString() : Number(x.toPrecision(digits)).toString();
  return signed && x > 0 ? `+${text}` : text;
}

/** A p-value as people read it: "< 0.001", "0.042". */
export const pValue = (p: number | null | undefined) => (p == null ? "—" : p < 0.001 ? "< 0.001" : p.toFixed(3));
