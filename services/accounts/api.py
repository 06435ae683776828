"""The accounts service's HTTP routes (/api/keys): an organization's admins create, list, rotate
and revoke its API keys and read their audit trail. HTTP only; errors are mapped by shared.http."""

from datetime import UTC, datetime

from fastapi import APIRouter, Path, Query, Request

from services.accounts import domain, handlers, repository
from services.accounts.schemas import IssuedKeyOut, KeyAuditOut, KeyAuditPage, KeyCreate, KeyList, KeyOut, KeyRotate
from shared import auth
from shared.http import DB, Admin, CorrelationId, ServiceRoute
from shared.paging import InvalidCursor

router = APIRouter(prefix="/api/keys", tags=["keys"], route_class=ServiceRoute)

KEY_ID = "^[0-9a-f]{1,64}$"
KeyId = Path(pattern=KEY_ID, description="the key's id (the part after rlhf_)")


def key_out(row, now: datetime | None = None) -> dict:
    fields = {name: getattr(row, name) for name in KeyOut.model_fields if name != "status"}
    return fields | {"status": domain.status_of(row.revoked, row.expires_at, now or datetime.now(UTC))}


def _forget_here(request: Request, key_id: str) -> None:
    """This process drops the key at once (its next request must not race the NOTIFY's delivery);
    every other process drops it when the NOTIFY reaches it."""
    request.app.state.verifier.forget(key_id)


def issued_out(issued: handlers.IssuedKey) -> IssuedKeyOut:
    return IssuedKeyOut(**key_out(issued.row), key=issued.token)


@router.post("", status_code=201, response_model=IssuedKeyOut)
async def create_key(body: KeyCreate, principal: Admin, database: DB, cid: CorrelationId):
    if body.organization is not None:
        auth.check_organization(body.organization)
        if body.organization != principal.organization:
            raise domain.OtherOrganization(principal.organization, body.organization)
    new = handlers.NewKey(role=auth.Role[body.role], name=body.name, expires_at=body.expires_at)
    async with database.unit_of_work() as uow:
        issued = await handlers.create(uow, principal.organization, new, actor=principal.name, correlation_id=cid)
    return issued_out(issued)


@router.get("", response_model=KeyList)
async def list_keys(principal: Admin, database: DB,
                    status: domain.KeyStatus | None = Query(default=None),
                    limit: int = Query(default=500, ge=1, le=5000)):
    async with database.read() as session:
        rows = await repository.list_keys(session, principal.organization, status, limit)
    now = datetime.now(UTC)
    return KeyList(items=[KeyOut(**key_out(r, now)) for r in rows])


# Before /{key_id}, which would otherwise claim "audit".
@router.get("/audit", response_model=KeyAuditPage)
async def audit(principal: Admin, database: DB,
                key_id: str | None = Query(default=None, pattern=KEY_ID),
                limit: int = Query(default=100, ge=1, le=1000),
                cursor: str | None = Query(default=None, max_length=20)):
    """Every creation, rotation and revocation of the organization's keys, newest first."""
    if cursor is not None and not (cursor.isdigit() and 0 < int(cursor) < 2**63):
        raise InvalidCursor("cursor is not one this API returned")
    async with database.read() as session:
        rows = await repository.audit(session, principal.organization, key_id, limit, int(cursor) if cursor else None)
    more, rows = len(rows) > limit, rows[:limit]
    return KeyAuditPage(items=[KeyAuditOut.model_validate(r, from_attributes=True) for r in rows],
                     next_cursor=str(rows[-1].id) if more else None)


@router.get("/{key_id}", response_model=KeyOut)
async def get_key(principal: Admin, database: DB, key_id: str = KeyId):
    async with database.read() as session:
        row = await repository.get(session, principal.organization, key_id)
    if row is None:
        raise domain.KeyNotFound(key_id)
    return KeyOut(**key_out(row))


@router.post("/{key_id}/revoke", response_model=KeyOut)
async def revoke_key(request: Request, principal: Admin, database: DB, cid: CorrelationId, key_id: str = KeyId):
    """The key stops working in every service within a second of this answer (at once, normally)."""
    async with database.unit_of_work() as uow:
        row = await handlers.revoke(uow, principal.organization, key_id, actor=principal.name, correlation_id=cid)
    _forget_here(request, key_id)
    return KeyOut(**key_out(row))


@router.post("/{key_id}/rotate", status_code=201, response_model=IssuedKeyOut)
async def rotate_key(request: Request, principal: Admin, database: DB, cid: CorrelationId, key_id: str = KeyId,
                     body: KeyRotate | None = None):
    """A new key with the same name and role (its secret shown once); the old key is revoked."""
    async with database.unit_of_work() as uow:
        issued = await handlers.rotate(uow, principal.organization, key_id, actor=principal.name,
                                       expires_at=(body or KeyRotate()).expires_at, correlation_id=cid)
    _forget_here(request, key_id)
    return issued_out(issued)
