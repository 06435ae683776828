import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "./api/client";

/** Calls `load` now and every `intervalMs` while the page is visible (live updates by polling). */
export function usePoll<T>(load: () => Promise<T>, intervalMs: number | null, deps: unknown[]) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const latest = useRef(load);
  latest.current = load;
  const [tick, setTick] = useState(0);

  useEffect(() => {
    let cancelled = false;
    let timer: number | undefined;
    const run = async () => {
      try {
        const value = await latest.current();
        if (!cancelled) {
          setData(value);
          setError(null);
        }
      } catch (e) {
        if (!cancelled) setError(e instanceof ApiError ? e.detail : String(e));
      } finally {
        if (!cancelled) {
          setLoading(false);
          if (intervalMs) timer = window.setTimeout(tickOnce, intervalMs);
        }
      }
    };
    const tickOnce = () => {
      if (document.visibilityState === "visible") void run();
      else timer = window.setTimeout(tickOnce, intervalMs ?? 2000);
    };
    setLoading(true);
    void run();
    return () => {
      cancelled = true;
      window.clearTimeout(timer);
    };
  }, [...deps, intervalMs, tick]);

  return { data, error, loading, reload: () => setTick((t) => t + 1), setData };
}

/** A value that follows `value` once it has stopped changing for `ms`. */
export function useDebounced<T>(value: T, ms: number): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = window.setTimeout(() => setSettled(value), ms);
    return () => window.clearTimeout(timer);
  }, [value, ms]);
  return settled;
}

/** A parameter of the hash route (#/panel?name=value): follows the address, and sets it. */
export function useHashParam(name: string): [string | null, (value: string | null) => void] {
  const read = () => new URLSearchParams(window.location.hash.split("?")[1] ?? "").get(name);
  const [value, setValue] = useState<string | null>(read());
  useEffect(() => {
    const onHash = () => setValue(read());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, [name]);
  const set = (next: string | null) => {
    const [path, query] = window.location.hash.split("?");
    const params = new URLSearchParams(query ?? "");
    if (next == null) params.delete(name);
    else params.set(name, next);
    const rest = params.toString();
    window.history.replaceState(null, "", `${path || "#/"}${rest ? `?${rest}` : ""}`);
    setValue(next);
  };
  return [value, set];
}
