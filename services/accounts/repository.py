"""All SQL of the accounts service: keys and their audit trail, every query scoped to an organization."""

from sqlalchemy import func, select, update

from services.accounts.models import api_keys, key_audit

# What a key's listing shows: never the secret (which is not stored) nor its hash.
KEY_COLUMNS = (
    api_keys.c.key_id, api_keys.c.organization, api_keys.c.role, api_keys.c.name, api_keys.c.revoked,
    api_keys.c.created_at, api_keys.c.expires_at, api_keys.c.revoked_at, api_keys.c.created_by,
    api_keys.c.rotated_from,
)


async def get(session, organization: str, key_id: str, *, for_update: bool = False):
    query = select(*KEY_COLUMNS).where(api_keys.c.organization == organization, api_keys.c.key_id == key_id)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def organization_of(session, key_id: str) -> str | None:
    """For the operator's command line, which names a key by its id alone."""
    return (await session.execute(select(api_keys.c.organization).where(api_keys.c.key_id == key_id))).scalar()


async def list_keys(session, organization: str | None, status: str | None, limit: int):
    """Newest first; `organization` None lists every organization's (the operator's command line)."""
    query = select(*KEY_COLUMNS).order_by(api_keys.c.created_at.desc(), api_keys.c.key_id).limit(limit)
    if organization is not None:
        query = query.where(api_keys.c.organization == organization)
    live = (api_keys.c.expires_at.is_(None)) | (api_keys.c.expires_at > func.now())
    if status == "active":
        query = query.where(api_keys.c.revoked.is_(False), live)
    elif status == "revoked":
        query = query.where(api_keys.c.revoked.is_(True))
    elif status == "expired":
        query = query.where(api_keys.c.revoked.is_(False), ~live)
    return list((await session.execute(query)).all())


async def revoke(session, key_id: str):
    """Marks the key revoked; returns its revocation time."""
    return (
        await session.execute(
            update(api_keys).where(api_keys.c.key_id == key_id)
            .values(revoked=True, revoked_at=func.now()).returning(api_keys.c.revoked_at)
        )
    ).scalar_one()


async def add_audit(session, organization: str, key_id: str, action: str, actor: str, details: dict) -> None:
    await session.execute(
        key_audit.insert().values(organization=organization, key_id=key_id, action=action, actor=actor,
                                  details=details)
    )


async def audit(session, organization: str, key_id: str | None, limit: int, before: int | None):
    """Newest first, keyset-paged on the row id."""
    query = select(key_audit).where(key_audit.c.organization == organization)
    if key_id:
        query = query.where(key_audit.c.key_id == key_id)
    if before is not None:
        query = query.where(key_audit.c.id < before)
    return list((await session.execute(query.order_by(key_audit.c.id.desc()).limit(limit + 1))).all())
