// Who is signed in: the key's organization and role. The UI hides what a role may not do; the
// services refuse it anyway.
import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { Me } from "./api/client";

export type Role = Me["role"];
const RANK: Record<Role, number> = { viewer: 1, curator: 2, admin: 3 };

export interface Session {
  me: Me;
  can: (role: Role) => boolean;
  notify: (message: string, kind?: "ok" | "error") => void;
}

export function sessionFor(me: Me, notify: Session["notify"]): Session {
  return { me, notify, can: (role) => RANK[me.role] >= RANK[role] };
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("useSession outside a signed-in page");
  return session;
}
