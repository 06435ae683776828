"""API keys' lifecycle, each step inside the caller's unit of work: the change, its audit row, the
NOTIFY that drops a revoked key from every process's cache at commit, and the events."""

from dataclasses import dataclass
from datetime import UTC, datetime

from services.accounts import domain, repository
from shared import auth
from shared.db import UnitOfWork
from shared.events import KeyCreated, KeyRevoked


@dataclass(frozen=True)
class NewKey:
    role: auth.Role
    name: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class IssuedKey:
    row: object  # the key as listed
    token: str  # the secret, shown once


async def create(uow: UnitOfWork, organization: str, new: NewKey, *, actor: str,
                 correlation_id: str | None = None, rotated_from: str | None = None) -> IssuedKey:
    expires_at = domain.check_expiry(new.expires_at, datetime.now(UTC))
    issued = await auth.insert_key(uow.session, organization=organization, role=new.role, name=new.name,
                                   expires_at=expires_at, actor=actor, rotated_from=rotated_from)
    row = await repository.get(uow.session, organization, issued.key_id)
    uow.emit(KeyCreated(key_id=row.key_id, role=row.role, name=row.name, expires_at=row.expires_at,
                        rotated_from=rotated_from, created_by=actor, created_at=row.created_at),
             organization=organization, correlation_id=correlation_id)
    return IssuedKey(row=row, token=issued.token)


async def revoke(uow: UnitOfWork, organization: str, key_id: str, *, actor: str,
                 correlation_id: str | None = None, replaced_by: str | None = None):
    row = await repository.get(uow.session, organization, key_id, for_update=True)
    if row is None:
        raise domain.KeyNotFound(key_id)
    if row.revoked:
        raise domain.KeyAlreadyRevoked(key_id)
    revoked_at = await repository.revoke(uow.session, key_id)
    details = {"replaced_by": replaced_by} if replaced_by else {}
    await repository.add_audit(uow.session, organization, key_id, "revoked", actor, details)
    await auth.announce_revocation(uow.session, key_id)
    uow.emit(KeyRevoked(key_id=key_id, replaced_by=replaced_by, revoked_by=actor, revoked_at=revoked_at),
             organization=organization, correlation_id=correlation_id)
    return await repository.get(uow.session, organization, key_id)


async def rotate(uow: UnitOfWork, organization: str, key_id: str, *, actor: str,
                 expires_at: datetime | None = None, correlation_id: str | None = None) -> IssuedKey:
    """A new key with the old one's name and role (and the given expiry); the old one revoked."""
    old = await repository.get(uow.session, organization, key_id, for_update=True)
    if old is None:
        raise domain.KeyNotFound(key_id)
    if old.revoked:
        raise domain.KeyAlreadyRevoked(key_id)
    issued = await create(uow, organization, NewKey(role=auth.Role[old.role], name=old.name, expires_at=expires_at),
                          actor=actor, correlation_id=correlation_id, rotated_from=key_id)
    await revoke(uow, organization, key_id, actor=actor, correlation_id=correlation_id, replaced_by=issued.row.key_id)
    return issued
