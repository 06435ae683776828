"""API keys: stored hashed, each carrying an organization and a role.

Keys live in the platform's identity schema `rlhf_auth`, the one table every service reads; a
service's own data never leaves its schema. Keys are 256-bit random tokens, so a plain SHA-256 is
the right hash (a slow password hash buys nothing against a key that cannot be guessed).
"""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum

from sqlalchemy import Boolean, Column, DateTime, MetaData, Table, Text, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import naming_metadata
from shared.errors import DomainError

AUTH_SCHEMA = "rlhf_auth"
KEY_PREFIX = "rlhf"

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
    """No key, or a key that is unknown or revoked: 401."""

    status, code = 401, "unauthorized"

    def __init__(self, message: str):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(DomainError):
    """A valid key whose role is too low: 403."""

    status, code = 403, "forbidden"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str]:
    """rlhf_<key_id>_<secret> -> (key_id, secret)"""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        raise AuthError("malformed API key")
    return parts[1], parts[2]


async def create_key(engine: AsyncEngine, *, organization: str, role: Role, name: str | None = None) -> str:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        await conn.execute(
            api_keys.insert().values(
                key_id=key_id, key_hash=_hash(secret), organization=organization, role=role.name, name=name
            )
        )
    return f"{KEY_PREFIX}_{key_id}_{secret}"


class KeyVerifier:
    """Checks bearer keys against the table, caching hits briefly (revocation takes effect within ttl)."""

    def __init__(self, engine: AsyncEngine, *, ttl: float = 30.0):
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def verify(self, token: str) -> Principal:
        hit = self._cache.get(token)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        key_id, secret = parse_key(token)
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(api_keys.c.key_hash, api_keys.c.organization, api_keys.c.role).where(
                        api_keys.c.key_id == key_id, api_keys.c.revoked.is_(False)
                    )
                )
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, _hash(secret)):
            raise AuthError("invalid API key")
        principal = Principal(key_id=key_id, organization=row.organization, role=Role[row.role])
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (now + self.ttl, principal)
        return principal
