"""API keys: stored hashed, each carrying an organization and a role, with an optional expiry.

Keys live in the platform's identity schema `rlhf_auth`, the one schema every service reads (its
lifecycle API is the accounts service's, services/accounts); a service's own data never leaves its
schema. Keys are 256-bit random tokens, so a plain SHA-256 is the right hash (a slow password hash
buys nothing against a key that cannot be guessed).

Every process checks keys with a `KeyVerifier`: a hit is cached (`ttl`, 30 s), an unknown key is
remembered briefly too, so that a key costs a query only on a cache miss. Revocation still takes
effect everywhere within a second: the revoking transaction NOTIFYs `REVOCATION_CHANNEL`, and each
process LISTENs on one connection and drops the key from its caches when the commit is delivered.
While a process cannot listen, it trusts a cached key for `UNHEARD_TTL` at most.

Failed authentications are counted per client address (`FailedAuthLimiter`): past the limit the
address answers 429 with Retry-After until its window ends, without touching the database.
"""

import asyncio
import hashlib
import hmac
import ipaddress
import math
import re
import secrets
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import BigInteger, Boolean, Column, DateTime, Index, MetaData, Table, Text, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import naming_metadata
from shared.errors import DomainError, Invalid
from shared.notifications import ChannelListener, dsn_of
from shared.observability import get_logger

AUTH_SCHEMA = "rlhf_auth"
KEY_PREFIX = "rlhf"
REVOCATION_CHANNEL = "rlhf_auth_key_revoked"  # payload: the revoked key's id
ORGANIZATION_RULE = "a slug: 1 to 63 of a-z, 0-9 and '-', starting with a letter or digit"
_ORGANIZATION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

log = get_logger(__name__)
metadata: MetaData = naming_metadata(AUTH_SCHEMA)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("key_hash", Text, nullable=False),
    Column("organization", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("name", Text, nullable=True),
    Column("revoked", Boolean, nullable=False, server_default="false"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("created_by", Text, nullable=True),
    Column("rotated_from", Text, nullable=True),  # the key this one replaced
    Index("ix_api_keys_organization_created_at", "organization", "created_at"),
)

# Every creation, rotation and revocation, by whom: never updated, never deleted.
key_audit = Table(
    "key_audit",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("organization", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("action", Text, nullable=False),  # created, rotated, revoked
    Column("actor", Text, nullable=False),
    Column("details", JSONB, nullable=False, server_default="{}"),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_key_audit_organization_id", "organization", "id"),
)


class Role(IntEnum):
    viewer = 1
    curator = 2
    admin = 3


@dataclass(frozen=True)
class Principal:
    """Who is calling: every query is scoped to `organization`."""

    key_id: str
    organization: str
    role: Role

    @property
    def name(self) -> str:
        return f"key:{self.key_id}"

    def can(self, role: Role) -> bool:
        return self.role >= role


class AuthError(DomainError):
    """No key, or a key that is unknown, revoked or expired: 401."""

    status, code = 401, "unauthorized"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(DomainError):
    """A valid key whose role is too low: 403."""

    status, code = 403, "forbidden"


class TooManyFailures(DomainError):
    """The client's address failed to authenticate too often: 429 until its window ends."""

    status, code = 429, "too_many_failed_authentications"

    def __init__(self, retry_after: float):
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"too many failed authentications from this address; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


def check_organization(organization: str) -> str:
    """The organization as given, or Invalid naming the rule (it names folders, topics' routing
    and every row's scope: an empty name, '/' or '..' has no place in any of them)."""
    if not isinstance(organization, str) or not _ORGANIZATION.fullmatch(organization):
        raise Invalid("organization", f"organization {organization!r} is not valid: it must be {ORGANIZATION_RULE}")
    return organization


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str]:
    """rlhf_<key_id>_<secret> -> (key_id, secret)"""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        raise AuthError("malformed API key")
    return parts[1], parts[2]


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    token: str  # shown once: only its hash is stored


async def insert_key(
    conn: Any,
    *,
    organization: str,
    role: Role,
    name: str | None = None,
    expires_at: datetime | None = None,
    actor: str,
    rotated_from: str | None = None,
) -> IssuedKey:
    """A new key and its audit row, inside the caller's transaction (`conn`: a connection or session)."""
    check_organization(organization)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    await conn.execute(
        api_keys.insert().values(
            key_id=key_id, key_hash=_hash(secret), organization=organization, role=role.name, name=name,
            expires_at=expires_at, created_by=actor, rotated_from=rotated_from,
        )
    )
    details: dict[str, Any] = {"role": role.name, "name": name,
                               "expires_at": expires_at.isoformat() if expires_at else None}
    if rotated_from:
        details["rotated_from"] = rotated_from
    await conn.execute(
        key_audit.insert().values(organization=organization, key_id=key_id,
                                  action="rotated" if rotated_from else "created", actor=actor, details=details)
    )
    return IssuedKey(key_id=key_id, token=f"{KEY_PREFIX}_{key_id}_{secret}")


async def create_key(
    engine: AsyncEngine,
    *,
    organization: str,
    role: Role,
    name: str | None = None,
    expires_at: datetime | None = None,
    actor: str = "system",
) -> str:
    async with engine.begin() as conn:
        issued = await insert_key(conn, organization=organization, role=role, name=name, expires_at=expires_at,
                                  actor=actor)
    return issued.token


async def announce_revocation(conn: Any, key_id: str) -> None:
    """Inside the revoking transaction: PostgreSQL delivers it to every listening process at commit."""
    await conn.execute(text("SELECT pg_notify(:channel, :key_id)"), {"channel": REVOCATION_CHANNEL, "key_id": key_id})


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    # Failed authentications per client address and window before 429 (0 turns the limit off).
    rlhf_auth_failure_limit: int = 20
    rlhf_auth_failure_window_seconds: float = 60.0
    # Peers whose X-Forwarded-For is believed (the gateway; comma-separated addresses or networks).
    rlhf_trusted_proxies: str = "127.0.0.1,::1"


def trusted_networks(spec: str | None = None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The proxies whose X-Forwarded-For is believed: `spec`, or RLHF_TRUSTED_PROXIES."""
    spec = AuthSettings().rlhf_trusted_proxies if spec is None else spec
    return [ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip()]


def _trusted(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted) -> str:
    """The client a request came from: the peer, or when the peer is a trusted proxy the right-most
    X-Forwarded-For address that is not one (what a client writes there itself is further left).
    The gateway sends only the address it found this way, so a client cannot choose its own."""
    address = peer or "unknown"
    if not forwarded_for or not _trusted(address, trusted):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:  # not an address: the hop to its right is the last one known
            break
        if not _trusted(address, trusted):
            break
    return address


class FailedAuthLimiter:
    """Failed authentications per client address in fixed windows; one process's own count."""

    MAX_ADDRESSES = 100_000

    def __init__(self, limit: int, window: float):
        self.limit = limit
        self.window = window
        self._counts: dict[str, tuple[float, int]] = {}  # address -> (window start, failures)

    def retry_after(self, address: str, now: float) -> float:
        """0 when the address may try; otherwise the seconds until it may."""
        if self.limit <= 0:
            return 0.0
        start, failures = self._counts.get(address, (now, 0))
        if now - start >= self.window or failures < self.limit:
            return 0.0
        return start + self.window - now

    def record_failure(self, address: str, now: float) -> None:
        if self.limit <= 0:
            return
        start, failures = self._counts.get(address, (now, 0))
        if now - start >= self.window:
            start, failures = now, 0
        if address not in self._counts and len(self._counts) >= self.MAX_ADDRESSES:
            self._counts = {a: c for a, c in self._counts.items() if now - c[0] < self.window}
        self._counts[address] = (start, failures + 1)


class _RevocationListener:
    """One LISTEN connection per event loop and database, shared by the process's verifiers."""

    RETRY_SECONDS = 1.0
    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _RevocationListener]]" = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, dsn: str):
        self.generation = 0  # bumped by every revocation heard and every loss of the connection
        self.verifiers: weakref.WeakSet[KeyVerifier] = weakref.WeakSet()
        self._channel = ChannelListener(dsn, REVOCATION_CHANNEL, self._heard, on_lost=self._lost,
                                        retry_seconds=self.RETRY_SECONDS)

    @classmethod
    def of(cls, engine: AsyncEngine) -> "_RevocationListener":
        dsn = dsn_of(engine)
        listeners = cls._by_loop.setdefault(asyncio.get_running_loop(), {})
        if dsn not in listeners:
            listeners[dsn] = cls(dsn)
        return listeners[dsn]

    def ensure(self) -> bool:
        """Whether revocations are heard now (if not, cached keys live UNHEARD_TTL at most)."""
        return self._channel.ensure()

    def _heard(self, key_id: str) -> None:
        self.generation += 1
        for verifier in list(self.verifiers):
            verifier.forget(key_id)

    def _lost(self) -> None:
        # Revocations may be missed until we listen again: nothing cached before now is trusted.
        self.generation += 1
        for verifier in list(self.verifiers):
            verifier.forget_all()


class KeyVerifier:
    """Checks bearer keys against the table. Valid keys are cached for `ttl` (never past their
    expiry), unknown ones for `unknown_ttl`; a revocation drops a key from every process's cache as
    soon as its transaction commits (see the module's docstring)."""

    UNHEARD_TTL = 0.5  # how long a cached key is trusted while revocations cannot be heard
    MAX_ENTRIES = 10_000

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        ttl: float = 30.0,
        unknown_ttl: float = 10.0,
        limiter: FailedAuthLimiter | None = None,
    ):
        self.engine = engine
        self.ttl = ttl
        self.unknown_ttl = unknown_ttl
        settings = AuthSettings()
        self.limiter = limiter or FailedAuthLimiter(
            settings.rlhf_auth_failure_limit, settings.rlhf_auth_failure_window_seconds
        )
        self.trusted_proxies = trusted_networks(settings.rlhf_trusted_proxies)
        self._cache: dict[str, tuple[float, Principal]] = {}  # token -> (until, principal)
        self._unknown: dict[str, float] = {}  # sha256 of token -> until
        self._listener: _RevocationListener | None = None

    def forget(self, key_id: str) -> None:
        self._cache = {t: hit for t, hit in self._cache.items() if hit[1].key_id != key_id}

    def forget_all(self) -> None:
        self._cache.clear()

    async def verify(self, token: str, *, client: str | None = None) -> Principal:
        """The key's principal, or AuthError; `client` (the caller's address) is refused with
        TooManyFailures while it is over the limit of failed lookups."""
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit and hit[0] > now:
            return hit[1]
        digest = _hash(token)
        if self._unknown.get(digest, 0.0) > now:
            raise AuthError("invalid API key")
        key_id, secret = parse_key(token)
        # Only failures that cost a lookup count: a client repeating one stale key (a UI left open
        # after its key was revoked) is answered from memory and is not guessing.
        if client is not None and (wait := self.limiter.retry_after(client, now)) > 0:
            raise TooManyFailures(wait)
        try:
            return await self._look_up(token, digest, key_id, secret, now)
        except AuthError:
            if client is not None:
                self.limiter.record_failure(client, now)
            raise

    async def _look_up(self, token: str, digest: str, key_id: str, secret: str, now: float) -> Principal:
        if self._listener is None:
            self._listener = _RevocationListener.of(self.engine)
            self._listener.verifiers.add(self)
        listening = self._listener.ensure()
        generation = self._listener.generation
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(api_keys.c.key_hash, api_keys.c.organization, api_keys.c.role, api_keys.c.expires_at).where(
                        api_keys.c.key_id == key_id,
                        api_keys.c.revoked.is_(False),
                        (api_keys.c.expires_at.is_(None)) | (api_keys.c.expires_at > func.now()),
                    )
                )
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, _hash(secret)):
            # Unknown, wrong, revoked and expired keys never become valid again: safe to remember.
            self._remember(self._unknown, digest, now + self.unknown_ttl)
            raise AuthError("invalid API key")
        principal = Principal(key_id=key_id, organization=row.organization, role=Role[row.role])
        if self._listener.generation == generation:  # no revocation heard while we read
            until = now + (self.ttl if listening else min(self.ttl, self.UNHEARD_TTL))
            if row.expires_at is not None:
                until = min(until, now + (row.expires_at - datetime.now(UTC)).total_seconds())
            self._remember(self._cache, token, (until, principal))
        return principal

    def _remember(self, cache: dict, key: str, value) -> None:
        if len(cache) >= self.MAX_ENTRIES:
            cache.clear()
        cache[key] = value
