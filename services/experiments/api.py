"""The experiments' HTTP routes (/api/experiments). HTTP only: parse, authorize, open a unit of work,
call a handler, shape the answer. Domain errors are mapped once, by shared.http.create_app.

The issue's `POST /api/models/ab-test` is served here too, as another name of `POST
/api/experiments` (the gateway sends a path to the service of its longest prefix, so /api/models/ab-test
comes here while the rest of /api/models is the registry's)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from services.experiments import batching, domain, handlers, repository, routing
from services.experiments.batching import Batcher
from services.experiments.schemas import (
    AssignBody,
    AssignOut,
    ExperimentCreate,
    ExperimentOut,
    ExperimentPage,
    ExperimentResults,
    ExtendBody,
    FullDeployBody,
    ReasonBody,
    Status,
    Winner,
)
from shared.http import DB, Admin, CorrelationId, Curator, ServiceRoute, Viewer
from shared.paging import created_cursor, decode_cursor, page_of

router = APIRouter(prefix="/api/experiments", tags=["experiments"], route_class=ServiceRoute,
                   on_shutdown=[batching.drain_all])
ab_test_router = APIRouter(prefix="/api/models/ab-test", tags=["experiments"], route_class=ServiceRoute)


# The dependencies are coroutines although they never wait: FastAPI runs a plain function in its
# thread pool, a thread hop on every routed request for nothing.
async def batcher(request: Request) -> Batcher:
    """The process's writer of exposures and served answers (created with the first request)."""
    state = request.app.state
    if getattr(state, "experiments_batcher", None) is None:
        state.experiments_batcher = Batcher(state.db)
    return state.experiments_batcher


async def routes(request: Request) -> routing.RouteCache:
    state = request.app.state
    if getattr(state, "experiments_routes", None) is None:
        state.experiments_routes = routing.RouteCache(state.db)
    return state.experiments_routes


Batch = Annotated[Batcher, Depends(batcher)]
Routes = Annotated[routing.RouteCache, Depends(routes)]


@ab_test_router.post("", status_code=201, response_model=ExperimentOut)
@router.post("", status_code=201, response_model=ExperimentOut)
async def create(body: ExperimentCreate, principal: Curator, database: DB, cache: Routes, cid: CorrelationId):
    """An experiment between two versions of one name (served as the issue's POST /api/models/ab-test)."""
    command = handlers.NewExperiment(**body.model_dump(exclude={"success_metrics", "guardrails"}),
                                     success_metrics=[m.model_dump() for m in body.success_metrics],
                                     guardrails=[g.model_dump() for g in body.guardrails])
    async with database.unit_of_work() as uow:
        row = await handlers.create(uow, principal.organization, command, actor=principal.name, correlation_id=cid)
    cache.forget(principal.organization, row.id, row.model_name)
    return row


@router.get("", response_model=ExperimentPage)
async def list_experiments(
    principal: Viewer,
    database: DB,
    status: Status | None = None,
    model_name: str | None = Query(default=None, max_length=200),
    winner: Winner | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=200),
):
    after = decode_cursor(cursor) if cursor else None
    async with database.read() as session:
        rows = await repository.list_experiments(
            session, principal.organization,
            repository.ExperimentFilter(status=status, model_name=model_name, winner=winner), limit, after)
    items, next_cursor = page_of(rows, limit, created_cursor)
    return ExperimentPage(items=[ExperimentOut.model_validate(r) for r in items], next_cursor=next_cursor)


@router.get("/{experiment_id}", response_model=ExperimentOut)
async def get_experiment(experiment_id: uuid.UUID, principal: Viewer, database: DB):
    """One experiment; while it is live, `results` is the analysis of the outcomes so far."""
    async with database.read() as session:
        row = await repository.get_experiment(session, principal.organization, experiment_id)
        if row is None:
            raise handlers.ExperimentNotFound(experiment_id)
        out = ExperimentOut.model_validate(row)
        if row.status in ("running", "paused"):
            out.results = ExperimentResults.model_validate(await handlers.results_of(session, row))
    return out


async def _move(experiment_id, action, principal, database, cache: routing.RouteCache, cid, body: ReasonBody | None):
    async with database.unit_of_work() as uow:
        row = await handlers.change_status(uow, principal.organization, experiment_id, action, actor=principal.name,
                                           reason=(body or ReasonBody()).reason, correlation_id=cid)
    cache.forget(principal.organization, row.id, row.model_name)
    return row


@router.post("/{experiment_id}/start", response_model=ExperimentOut)
async def start(experiment_id: uuid.UUID, principal: Curator, database: DB, cache: Routes,
                cid: CorrelationId, body: ReasonBody | None = None):
    return await _move(experiment_id, "start", principal, database, cache, cid, body)


@router.post("/{experiment_id}/pause", response_model=ExperimentOut)
async def pause(experiment_id: uuid.UUID, principal: Curator, database: DB, cache: Routes,
                cid: CorrelationId, body: ReasonBody | None = None):
    """Everyone goes to control until it resumes."""
    return await _move(experiment_id, "pause", principal, database, cache, cid, body)


@router.post("/{experiment_id}/resume", response_model=ExperimentOut)
async def resume(experiment_id: uuid.UUID, principal: Curator, database: DB, cache: Routes,
                 cid: CorrelationId, body: ReasonBody | None = None):
    return await _move(experiment_id, "resume", principal, database, cache, cid, body)


@router.post("/{experiment_id}/complete", response_model=ExperimentOut)
async def complete(experiment_id: uuid.UUID, principal: Curator, database: DB, cache: Routes, batch: Batch,
                   cid: CorrelationId, body: ReasonBody | None = None):
    """Ends it: results and winner stored, ExperimentConcluded on the bus. The exposures this process
    still holds are written first, so that the result counts every unit it has assigned."""
    await batch.drain()
    return await _move(experiment_id, "complete", principal, database, cache, cid, body)


@router.post("/{experiment_id}/cancel", response_model=ExperimentOut)
async def cancel(experiment_id: uuid.UUID, principal: Curator, database: DB, cache: Routes,
                 cid: CorrelationId, body: ReasonBody | None = None):
    return await _move(experiment_id, "cancel", principal, database, cache, cid, body)


@router.post("/{experiment_id}/extend", response_model=ExperimentOut)
async def extend(experiment_id: uuid.UUID, body: ExtendBody, principal: Curator, database: DB):
    async with database.unit_of_work() as uow:
        return await handlers.extend(uow, principal.organization, experiment_id, end_date=body.end_date,
                                     min_sample_size=body.min_sample_size)


@router.post("/{experiment_id}/full-deploy", response_model=ExperimentOut)
async def full_deploy(experiment_id: uuid.UUID, principal: Admin, database: DB, cache: Routes, batch: Batch,
                      cid: CorrelationId, body: FullDeployBody | None = None):
    """Concludes the experiment (with this process's pending exposures written first, as for
    complete) and asks the registry (DeploymentRequested) to deploy the winner."""
    body = body or FullDeployBody()
    await batch.drain()
    async with database.unit_of_work() as uow:
        row = await handlers.full_deploy(uow, principal.organization, experiment_id, actor=principal.name,
                                         variant=body.variant, reason=body.reason, correlation_id=cid)
    cache.forget(principal.organization, row.id, row.model_name)
    return row


@router.post("/{experiment_id}/assign", response_model=AssignOut)
async def assign(experiment_id: uuid.UUID, body: AssignBody, principal: Viewer, cache: Routes, batch: Batch):
    """The unit's variant and version, for callers that route themselves (the exposure is recorded).
    Experiments are cached for half a second, like the router's routes."""
    row = await cache.experiment(principal.organization, experiment_id)
    if row is None:
        raise handlers.ExperimentNotFound(experiment_id)
    variant = domain.assign(row.seed, body.unit, row.traffic_split, status=row.status)
    if row.status in ("running", "paused"):
        batch.exposure(row.id, body.unit, variant)
    version = row.treatment_model_id if variant == domain.TREATMENT else row.control_model_id
    return AssignOut(experiment_id=row.id, unit=body.unit, variant=variant, model_version_id=version)
