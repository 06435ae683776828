"""The registry's HTTP routes (/api/models). HTTP only: parse, authorize, open a unit of work, call
a handler, shape the answer. Domain errors are mapped once, by shared.http.create_app."""

import uuid
from typing import Literal

from fastapi import APIRouter, Query

from services.registry import domain, handlers, repository
from services.registry.schemas import (
    DeployBody,
    HistoryOut,
    LineageOut,
    ModelCreate,
    ModelOut,
    ModelPage,
    ModelUpdate,
    PolicyBody,
    PolicyOut,
    ReasonBody,
    Status,
)
from shared.http import DB, Admin, CorrelationId, Curator, ServiceRoute, Viewer
from shared.paging import InvalidCursor, created_cursor, decode_cursor, page_of

router = APIRouter(prefix="/api/models", tags=["models"], route_class=ServiceRoute)


def _policy_out(organization: str, policy: domain.Policy) -> PolicyOut:
    return PolicyOut(organization=organization, require_evaluation=policy.require_evaluation,
                     min_preference_accuracy=policy.min_preference_accuracy,
                     min_reward_margin=policy.min_reward_margin, max_eval_loss=policy.max_eval_loss,
                     min_token_accuracy=policy.min_token_accuracy, max_leak_findings=policy.max_leak_findings)


# The policy routes come before /{model_version_id}, which would otherwise claim "policy".
@router.get("/policy", response_model=PolicyOut)
async def get_policy(principal: Viewer, database: DB):
    async with database.read() as session:
        return _policy_out(principal.organization, await handlers.current_policy(session, principal.organization))


@router.put("/policy", response_model=PolicyOut)
async def put_policy(body: PolicyBody, principal: Admin, database: DB):
    async with database.unit_of_work() as uow:
        policy = await handlers.set_policy(uow, principal.organization, body.model_dump(), actor=principal.name)
    return _policy_out(principal.organization, policy)


@router.post("", status_code=201, response_model=ModelOut)
async def register(body: ModelCreate, principal: Curator, database: DB, cid: CorrelationId):
    async with database.unit_of_work() as uow:
        return await handlers.register_by_hand(uow, principal.organization, handlers.Registration(**body.model_dump()),
                                               actor=principal.name, correlation_id=cid)


@router.get("", response_model=ModelPage)
async def list_models(
    principal: Viewer,
    database: DB,
    name: str | None = Query(default=None, max_length=200),
    status: Status | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=200),
):
    after = decode_cursor(cursor) if cursor else None
    async with database.read() as session:
        rows = await repository.list_versions(session, principal.organization,
                                              repository.VersionFilter(name=name, status=status), limit, after)
    items, next_cursor = page_of(rows, limit, created_cursor)
    return ModelPage(items=[ModelOut.model_validate(r) for r in items], next_cursor=next_cursor)


@router.get("/{model_version_id}", response_model=ModelOut)
async def get_model(model_version_id: uuid.UUID, principal: Viewer, database: DB):
    async with database.read() as session:
        row = await repository.get(session, principal.organization, model_version_id)
    if row is None:
        raise domain.ModelNotFound(model_version_id)
    return row


@router.patch("/{model_version_id}", response_model=ModelOut)
async def update_model(model_version_id: uuid.UUID, body: ModelUpdate, principal: Curator, database: DB):
    async with database.unit_of_work() as uow:
        return await handlers.update(uow, principal.organization, model_version_id,
                                     handlers.Changes(**body.model_dump()), actor=principal.name)


@router.post("/{model_version_id}/deploy", response_model=ModelOut)
async def deploy(model_version_id: uuid.UUID, principal: Admin, database: DB, cid: CorrelationId,
                 body: DeployBody | None = None):
    body = body or DeployBody()
    request = handlers.DeployRequest(actor=principal.name, reason=body.reason, force=body.force,
                                     deployment_config=body.deployment_config, experiment_id=body.experiment_id)
    async with database.unit_of_work() as uow:
        return await handlers.deploy(uow, principal.organization, model_version_id, request, correlation_id=cid)


@router.post("/{model_version_id}/rollback", response_model=ModelOut)
async def rollback(model_version_id: uuid.UUID, principal: Admin, database: DB, cid: CorrelationId,
                   body: ReasonBody | None = None):
    async with database.unit_of_work() as uow:
        return await handlers.rollback(uow, principal.organization, model_version_id, actor=principal.name,
                                       reason=(body or ReasonBody()).reason, correlation_id=cid)


@router.post("/{model_version_id}/archive", response_model=ModelOut)
async def archive(model_version_id: uuid.UUID, principal: Curator, database: DB, cid: CorrelationId,
                  body: ReasonBody | None = None):
    async with database.unit_of_work() as uow:
        return await handlers.archive(uow, principal.organization, model_version_id, actor=principal.name,
                                      reason=(body or ReasonBody()).reason, correlation_id=cid)


@router.get("/{model_version_id}/history", response_model=list[HistoryOut])
async def history(model_version_id: uuid.UUID, principal: Viewer, database: DB,
                  scope: Literal["version", "name"] = "version",
                  limit: int = Query(default=500, ge=1, le=5000)):
    """Every status change of the version (scope=version) or of every version of its name (scope=name)."""
    async with database.read() as session:
        row = await repository.get(session, principal.organization, model_version_id)
        if row is None:
            raise domain.ModelNotFound(model_version_id)
        if scope == "name":
            return await repository.name_history(session, principal.organization, row.name, limit)
        return await repository.history(session, principal.organization, model_version_id, limit)


@router.get("/{model_version_id}/lineage", response_model=LineageOut)
async def lineage(model_version_id: uuid.UUID, principal: Viewer, database: DB,
                  limit: int = Query(default=100, ge=1, le=5000),
                  cursor: str | None = Query(default=None, max_length=20)):
    """version -> job -> dataset export -> preference pairs -> feedback ids (pairs paged by `cursor`)."""
    if cursor is not None and not cursor.isdigit():
        raise InvalidCursor("cursor is not one this API returned")
    async with database.read() as session:
        return await handlers.lineage(session, principal.organization, model_version_id, limit=limit,
                                      offset=int(cursor or 0))
