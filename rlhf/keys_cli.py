"""`rlhf keys create | list | revoke | rotate | audit`.

When a stack answers at the gateway's URL the commands go through its admin API (/api/keys, with an
admin key from --key or RLHF_API_KEY), so a key always lands in the database that stack uses, never
in a second one made by another RLHF_DATA_DIR. When nothing answers there, or with --direct (the
platform operator's way to make the first admin key of a new organization), they work on the
database itself, through the accounts service's own handlers (same audit trail, same events), and
say which database that is. The key itself is the one line on stdout; everything else goes to stderr.
"""

import asyncio
import getpass
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import typer

from shared import auth
from shared.errors import DomainError

DEFAULT_URL = "http://127.0.0.1:8000"
_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def expiry(expires_at: str | None, expires_in: str | None) -> datetime | None:
    """--expires-at (ISO 8601; without a zone: UTC) or --expires-in (90d, 12h, 30m, 45s)."""
    if expires_at and expires_in:
        raise typer.BadParameter("give --expires-at or --expires-in, not both")
    if expires_in:
        match = _DURATION.fullmatch(expires_in.strip())
        if not match:
            raise typer.BadParameter("a number and a unit: 90d, 12h, 30m or 45s", param_hint="--expires-in")
        return datetime.now(UTC) + timedelta(**{_UNITS[match[2]]: int(match[1])})
    if expires_at:
        try:
            when = datetime.fromisoformat(expires_at)
        except ValueError as exc:
            raise typer.BadParameter("an ISO 8601 date or time, e.g. 2027-01-31T00:00:00Z",
                                     param_hint="--expires-at") from exc
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def stack_answers(url: str) -> bool:
    try:
        httpx.get(f"{url.rstrip('/')}/healthz", timeout=3.0)
    except httpx.ConnectError:
        return False
    except httpx.HTTPError:
        return True  # something listens there; the API call will say what is wrong
    return True


# ---- through the running stack ---------------------------------------------------------------------

@dataclass
class Api:
    url: str
    key: str

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"}
        try:
            response = httpx.request(method, f"{self.url.rstrip('/')}/api/keys{path}", headers=headers, timeout=30,
                                     **kwargs)
        except httpx.HTTPError as exc:
            fail(f"the stack at {self.url} did not answer: {exc}")
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = body.get("message", "") + "".join(
                    f"\n  {e['field']}: {e['message']}" for e in body.get("errors", []))
            except ValueError:
                detail = response.text
            fail(f"{response.status_code} from {self.url}: {detail}")
        return response.json()

    def create(self, org: str | None, role: str, name: str | None, expires_at: datetime | None) -> dict:
        body = {"role": role, "name": name, "expires_at": expires_at.isoformat() if expires_at else None}
        return self.call("POST", "", json=body | ({"organization": org} if org else {}))

    def list_keys(self, org: str | None, status: str | None) -> list[dict]:
        items = self.call("GET", "", params={"status": status} if status else {})["items"]
        if org and any(item["organization"] != org for item in items):
            fail(f"your admin key lists its own organization's keys only, not {org!r}")
        return items

    def revoke(self, key_id: str) -> dict:
        return self.call("POST", f"/{key_id}/revoke")

    def rotate(self, key_id: str, expires_at: datetime | None) -> dict:
        body = {"expires_at": expires_at.isoformat() if expires_at else None}
        return self.call("POST", f"/{key_id}/rotate", json=body)

    def audit(self, key_id: str | None, limit: int) -> list[dict]:
        params: dict[str, Any] = {"limit": limit} | ({"key_id": key_id} if key_id else {})
        return self.call("GET", "/audit", params=params)["items"]


# ---- on the database itself ------------------------------------------------------------------------

class Direct:
    """The accounts service's handlers on the database, in this process."""

    def __init__(self) -> None:
        from rlhf.cli import _database_url
        from rlhf.stack import redacted

        self.url, self._server = _database_url()
        self.where = redacted(self.url) if self._server is None else f"the embedded PostgreSQL in {self._server_dir()}"
        self.actor = f"cli:{getpass.getuser()}"

    def _server_dir(self) -> str:
        from rlhf.cli import _data_dir

        return str((_data_dir() / "postgres").resolve())

    def run(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        from shared.db import Database
        from shared.migrations import upgrade
        from shared.service import AUTH_MIGRATIONS

        async def main() -> Any:
            db = Database(self.url, schema=auth.AUTH_SCHEMA, producer="accounts", pool_size=1)
            try:
                await upgrade(db.engine, metadata=auth.metadata, versions=AUTH_MIGRATIONS)
                return await work(db)
            finally:
                await db.dispose()

        try:
            return asyncio.run(main())
        except DomainError as exc:
            fail(exc.message)

    def create(self, org: str | None, role: str, name: str | None, expires_at: datetime | None) -> dict:
        from services.accounts import api, handlers

        if not org:
            raise typer.BadParameter("--org is needed when working on the database directly", param_hint="--org")

        async def work(db):
            async with db.unit_of_work() as uow:
                issued = await handlers.create(uow, org, handlers.NewKey(auth.Role[role], name, expires_at),
                                               actor=self.actor)
            return api.key_out(issued.row) | {"key": issued.token}

        return self.run(work)

    def list_keys(self, org: str | None, status: str | None) -> list[dict]:
        from services.accounts import api, repository

        async def work(db):
            async with db.read() as session:
                return [api.key_out(row) for row in await repository.list_keys(session, org, status, 100_000)]

        return self.run(work)

    def _in_org_of(self, key_id: str, step: Callable[[Any, str], Awaitable[Any]]) -> Any:
        from services.accounts import domain, repository

        async def work(db):
            async with db.read() as session:
                org = await repository.organization_of(session, key_id)
            if org is None:
                raise domain.KeyNotFound(key_id)
            return await step(db, org)

        return self.run(work)

    def revoke(self, key_id: str) -> dict:
        from services.accounts import api, handlers

        async def step(db, org):
            async with db.unit_of_work() as uow:
                return api.key_out(await handlers.revoke(uow, org, key_id, actor=self.actor))

        return self._in_org_of(key_id, step)

    def rotate(self, key_id: str, expires_at: datetime | None) -> dict:
        from services.accounts import api, handlers

        async def step(db, org):
            async with db.unit_of_work() as uow:
                issued = await handlers.rotate(uow, org, key_id, actor=self.actor, expires_at=expires_at)
            return api.key_out(issued.row) | {"key": issued.token}

        return self._in_org_of(key_id, step)

    def audit(self, key_id: str | None, limit: int) -> list[dict]:
        from sqlalchemy import select

        async def work(db):
            query = select(auth.key_audit).order_by(auth.key_audit.c.id.desc()).limit(limit)
            if key_id:
                query = query.where(auth.key_audit.c.key_id == key_id)
            async with db.read() as session:
                return [dict(row._mapping) for row in (await session.execute(query)).all()]

        return self.run(work)


def target(url: str, key: str | None, direct: bool) -> Api | Direct:
    """The running stack's API when one answers at `url`; the database otherwise (or with --direct)."""
    if not direct and stack_answers(url):
        if not key:
            fail(f"a stack answers at {url}: keys are managed through it, with an admin key (--key or "
                 "RLHF_API_KEY). --direct works on the database instead (the operator's way to make the first "
                 "admin key of a new organization).")
        return Api(url, key)
    chosen = Direct()
    why = "--direct" if direct else f"no stack answers at {url}"
    typer.secho(f"{why}: working on the database directly ({chosen.where})", fg=typer.colors.YELLOW, err=True)
    return chosen


def describe(key: dict) -> str:
    expires = f", expires {key['expires_at']}" if key.get("expires_at") else ""
    return f"key {key['key_id']} of {key['organization']}, role {key['role']}{expires}"


def print_keys(items: list[dict]) -> None:
    columns = ("key_id", "organization", "role", "status", "name", "created_at", "expires_at")
    rows = [[_text(item.get(c)) for c in columns] for item in items]
    _table(columns, rows)


def print_audit(items: list[dict]) -> None:
    columns = ("at", "key_id", "action", "actor", "details")
    _table(columns, [[_text(item.get(c)) for c in columns] for item in items])


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v is not None) or "-"
    return str(value)


def _table(columns: tuple[str, ...], rows: list[list[str]]) -> None:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    for line in [list(columns), *rows]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
