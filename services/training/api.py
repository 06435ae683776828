"""The training service's HTTP routes (/api/fine-tuning). HTTP only: parse, authorize, call a
handler, shape the answer; domain errors become status codes once, in `install`."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.training import domain, handlers, repository
from services.training.schemas import (
    AuditOut,
    BudgetOut,
    BudgetSet,
    Estimate,
    JobCreate,
    JobDetail,
    JobEventOut,
    JobOut,
    JobPage,
    ProviderName,
    Status,
)
from services.training.settings import TrainingSettings, get_training_settings
from shared.http import DB, Admin, CorrelationId, Curator, ErrorBody, ServiceRoute, Viewer

router = APIRouter(prefix="/api/fine-tuning", tags=["fine-tuning"], route_class=ServiceRoute)

Config = Annotated[TrainingSettings, Depends(get_training_settings)]
# What a launch can answer beyond every route's errors (shared.http.ServiceRoute declares those).
NOT_CONFIGURED = {424: {"model": ErrorBody, "description": "the provider is not configured on this deployment"}}
OVER_BUDGET = {402: {"model": ErrorBody, "description": "the launch would exceed the monthly budget"}}
PROVIDER_DOWN = {503: {"model": ErrorBody, "description": "the provider is unreachable; Retry-After says when to "
                                                          "try again"}}





def launch_request(body: JobCreate) -> handlers.LaunchRequest:
    return handlers.LaunchRequest(**body.model_dump())


@router.post("/estimate", response_model=Estimate, responses=NOT_CONFIGURED)
async def estimate(body: JobCreate, principal: Viewer, database: DB, settings: Config):
    """What a launch would cost, checked like a launch, without starting anything."""
    async with database.unit_of_work() as uow:
        plan = await handlers.plan_launch(uow, principal.organization, launch_request(body), settings)
        limit, spent = await handlers.budget_left(uow, principal.organization, lock=False)
    e = plan.estimate
    return Estimate(
        examples=e.examples, tokens_per_epoch=e.tokens_per_epoch, epochs=e.epochs, trained_tokens=e.trained_tokens,
        price_per_million_tokens=e.price_per_million, cost_estimate=e.cost, budget_monthly_limit=limit,
        budget_spent=spent, budget_remaining=domain.budget_remaining(limit, spent),
        within_budget=domain.within_budget(e.cost, limit, spent),
        hyperparameters=plan.hyperparameters,
    )


@router.post("/jobs", status_code=201, response_model=JobOut, responses=NOT_CONFIGURED | OVER_BUDGET)
async def launch(body: JobCreate, principal: Curator, database: DB, settings: Config, cid: CorrelationId):
    async with database.unit_of_work() as uow:
        return await handlers.launch_job(
            uow, principal.organization, launch_request(body), settings, actor=principal.name, correlation_id=cid
        )


@router.get("/jobs", response_model=JobPage)
async def list_jobs(
    principal: Viewer,
    database: DB,
    status: Status | None = None,
    provider: ProviderName | None = None,
    dataset_id: uuid.UUID | None = None,
    limit: int = Query(default=50, ge=1, le=500),
):
    f = repository.JobFilter(status=status, provider=provider, dataset_id=dataset_id)
    async with database.read() as session:
        rows = await repository.list_jobs(session, principal.organization, f, limit)
    return JobPage(items=[JobOut.model_validate(r) for r in rows])


@router.get("/jobs/{job_id}", response_model=JobDetail)
async def get_job(job_id: uuid.UUID, principal: Viewer, database: DB):
    async with database.read() as session:
        job = await repository.get_job(session, principal.organization, job_id)
        if job is None:
            raise domain.JobNotFound(job_id)
        points = await repository.metrics(session, job.id)
    curve = [{"step": p.step, "loss": p.metrics["loss"]} for p in points if "loss" in p.metrics]
    return JobDetail(**JobOut.model_validate(job).model_dump(), loss_curve=curve,
                     metrics_history=[{"step": p.step, "epoch": p.epoch, "metrics": p.metrics} for p in points])


@router.get("/jobs/{job_id}/events", response_model=list[JobEventOut])
async def job_events(job_id: uuid.UUID, principal: Viewer, database: DB,
                     limit: int = Query(default=500, ge=1, le=5000)):
    async with database.read() as session:
        if await repository.get_job(session, principal.organization, job_id) is None:
            raise domain.JobNotFound(job_id)
        return await repository.events(session, job_id, limit)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=PROVIDER_DOWN)
async def cancel(job_id: uuid.UUID, principal: Curator, database: DB, settings: Config, cid: CorrelationId):
    async with database.unit_of_work() as uow:
        return await handlers.cancel_job(
            uow, principal.organization, job_id, settings, actor=principal.name, correlation_id=cid
        )


@router.get("/budget", response_model=BudgetOut)
async def get_budget(principal: Viewer, database: DB):
    async with database.unit_of_work() as uow:
        limit, spent = await handlers.budget_left(uow, principal.organization, lock=False)
    return BudgetOut(organization=principal.organization, monthly_limit=limit, spent_this_month=spent,
                     remaining=domain.budget_remaining(limit, spent))


@router.put("/budget", response_model=BudgetOut)
async def put_budget(body: BudgetSet, principal: Admin, database: DB):
    async with database.unit_of_work() as uow:
        await handlers.set_budget(uow, principal.organization, body.monthly_limit, actor=principal.name)
        limit, spent = await handlers.budget_left(uow, principal.organization, lock=False)
    return BudgetOut(organization=principal.organization, monthly_limit=limit, spent_this_month=spent,
                     remaining=domain.budget_remaining(limit, spent))


@router.get("/audit", response_model=list[AuditOut])
async def audit(principal: Admin, database: DB, limit: int = Query(default=100, ge=1, le=1000)):
    async with database.read() as session:
        return await repository.audit_log(session, principal.organization, limit)
