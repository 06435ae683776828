import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, ApiError, ok, storedKey, storedMe, storeKey, storeMe, whenUnauthorized, type Me } from "./api/client";
import { Badge, Button } from "./components/ui";
import { PANELS } from "./panels";
import { SessionContext, sessionFor } from "./session";
import "./styles.css";

function currentPath(): string {
  return window.location.hash.replace(/^#\/?/, "").split("?")[0] || PANELS[0].path;
}

function Icon({ d }: { d: string }) {
  return (
    <svg class="icon" viewBox="0 0 24 24" aria-hidden="true">
      <path d={d} fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round" />
    </svg>
  );
}

function SignIn({ onSignedIn, reason }: { onSignedIn: (me: Me) => void; reason: string | null }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(reason);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    storeKey(key.trim());
    try {
      const me = await ok(api.GET("/api/feedback/me"));
      storeMe(me);
      onSignedIn(me);
    } catch (err) {
      storeKey(null);
      setError(err instanceof ApiError && err.status === 401 ? "That key is not valid (or has been revoked)." : String(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="signin">
      <form class="signin-card" onSubmit={submit}>
        <div class="brand brand-large">
          <span class="brand-mark" aria-hidden="true" />
          <span>Betabase <strong>RLHF</strong></span>
        </div>
        <h1>Sign in to Curate</h1>
        <p class="muted">Use an API key. It stays in this tab's session storage and is sent only to this gateway.</p>
        <label class="field">
          <span class="field-label">API key</span>
          <input type="password" name="api-key" autoComplete="off" placeholder="rlhf_…" value={key}
            onInput={(e) => setKey(e.currentTarget.value)} required />
        </label>
        {error && <div class="alert alert-red" role="alert">{error}</div>}
        <Button variant="primary" type="submit" busy={busy} class="btn-block">Sign in</Button>
        <p class="hint">No key yet? <code>rlhf keys create --org ORG --role curator</code></p>
      </form>
    </main>
  );
}

interface Toast {
  id: number;
  message: string;
  kind: "ok" | "error";
}

function App() {
  const [me, setMe] = useState<Me | null>(storedMe());
  const [checking, setChecking] = useState(Boolean(storedKey()) && !storedMe());
  const [reason, setReason] = useState<string | null>(null);
  const [path, setPath] = useState(currentPath());
  const [toasts, setToasts] = useState<Toast[]>([]);

  useEffect(() => {
    const onHash = () => setPath(currentPath());
    window.addEventListener("hashchange", onHash);
    whenUnauthorized(() => {
      storeKey(null);
      setMe(null);
      setReason("Your key was refused: sign in again.");
    });
    if (storedKey()) {
      ok(api.GET("/api/feedback/me"))
        .then((fresh) => {
          storeMe(fresh);
          setMe(fresh);
        })
        .catch(() => {
          storeKey(null);
          setMe(null);
        })
        .finally(() => setChecking(false));
    }
    return () => window.removeEventListener("hashchange", onHash);
  }, []);

  const notify = (message: string, kind: "ok" | "error" = "ok") => {
    const id = Date.now() + Math.random();
    setToasts((t) => [...t.slice(-2), { id, message, kind }]);
    window.setTimeout(() => setToasts((t) => t.filter((x) => x.id !== id)), kind === "error" ? 8000 : 4000);
  };

  if (checking) return <div class="boot" aria-busy="true" />;
  if (!me) return <SignIn reason={reason} onSignedIn={(m) => { setReason(null); setMe(m); }} />;

  const panel = PANELS.find((p) => p.path === path) ?? PANELS[0];
  const Current = panel.component;
  const signOut = () => {
    storeKey(null);
    setMe(null);
  };

  return (
    <SessionContext.Provider value={sessionFor(me, notify)}>
      <div class="shell">
        <nav class="sidebar" aria-label="Curate">
          <div class="brand">
            <span class="brand-mark" aria-hidden="true" />
            <span>Betabase <strong>RLHF</strong></span>
          </div>
          <div class="nav-section">Curate</div>
          <ul>
            {PANELS.map((p) => (
              <li key={p.path}>
                <a href={`#/${p.path}`} class={p === panel ? "active" : ""} aria-current={p === panel ? "page" : undefined}>
                  <Icon d={p.icon} />
                  {p.title}
                </a>
              </li>
            ))}
          </ul>
          <div class="sidebar-foot">
            <a href="/docs" class="muted-link">API reference</a>
          </div>
        </nav>
        <div class="main">
          <header class="topbar">
            <div class="crumbs">
              <span class="muted">Curate</span> <span class="sep">/</span> <strong>{panel.title}</strong>
            </div>
            <div class="whoami">
              <span class="org" title="organization">{me.organization}</span>
              <Badge value={me.role} />
              <Button variant="ghost" onClick={signOut}>Sign out</Button>
            </div>
          </header>
          <main class="content" id="content">
            <Current key={panel.path} />
          </main>
        </div>
        <div class="toasts" aria-live="polite">
          {toasts.map((t) => (
            <div key={t.id} class={`toast toast-${t.kind}`} role={t.kind === "error" ? "alert" : "status"}>{t.message}</div>
          ))}
        </div>
      </div>
    </SessionContext.Provider>
  );
}

render(<App />, document.getElementById("app")!);
