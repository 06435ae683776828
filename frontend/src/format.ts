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
