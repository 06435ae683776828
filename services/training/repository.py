"""All of the training service's SQL. Every query about a job is scoped to one organization,
except the monitor's, which walks every organization's active jobs."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.training import domain
from services.training.models import AuditEntry, Budget, DatasetVersion, FineTuningJob, JobEvent, JobMetric


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    provider: str | None = None
    dataset_id: uuid.UUID | None = None


async def upsert_dataset(session: AsyncSession, values: dict[str, Any]) -> None:
    stmt = insert(DatasetVersion).values(**values)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=["organization", "dataset_id", "export_version"]))


async def get_dataset(session: AsyncSession, organization: str, dataset_id: uuid.UUID, version: int | None):
    stmt = select(DatasetVersion).where(DatasetVersion.organization == organization,
                                        DatasetVersion.dataset_id == dataset_id)
    if version is not None:
        stmt = stmt.where(DatasetVersion.export_version == version)
    return (await session.execute(stmt.order_by(DatasetVersion.export_version.desc()).limit(1))).scalar_one_or_none()


async def add_job(session: AsyncSession, job: FineTuningJob) -> None:
    session.add(job)
    await session.flush()


async def get_job(session: AsyncSession, organization: str, job_id: uuid.UUID, *, for_update: bool = False):
    stmt = select(FineTuningJob).where(FineTuningJob.organization == organization, FineTuningJob.id == job_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def lock_job(session: AsyncSession, job_id: uuid.UUID):
    stmt = select(FineTuningJob).where(FineTuningJob.id == job_id).with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


@asynccontextmanager
async def job_claim(engine: AsyncEngine, job_id: uuid.UUID) -> AsyncIterator[bool]:
    """Yields whether this process now holds the job's advisory lock, which it keeps until the block
    ends. Monitors hold it while a provider call for the job is in flight, so that two replicas never
    submit or poll the same job at once. It is a session lock on a connection of its own, outside
    any transaction, so no transaction stays open during the provider call; a crashed process's
    connection closes and PostgreSQL releases its locks."""
    key = f"training.job:{job_id}"
    async with engine.connect() as conn:
        held = (await conn.execute(select(func.pg_try_advisory_lock(func.hashtextextended(key, 0))))).scalar_one()
        await conn.commit()
        try:
            yield held
        finally:
            if held:
                await _unlock(conn, key)


async def _unlock(conn, key: str) -> None:
    try:
        await conn.execute(select(func.pg_advisory_unlock(func.hashtextextended(key, 0))))
        await conn.commit()
    except BaseException:
        # Never hand a connection that may still hold the lock back to the pool: closing it releases the lock.
        await conn.invalidate()
        raise


async def list_jobs(session: AsyncSession, organization: str, f: JobFilter, limit: int) -> list[FineTuningJob]:
    stmt = select(FineTuningJob).where(FineTuningJob.organization == organization)
    if f.status:
        stmt = stmt.where(FineTuningJob.status == f.status)
    if f.provider:
        stmt = stmt.where(FineTuningJob.provider == f.provider)
    if f.dataset_id:
        stmt = stmt.where(FineTuningJob.dataset_id == f.dataset_id)
    stmt = stmt.order_by(FineTuningJob.created_at.desc(), FineTuningJob.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def jobs_to_submit(session: AsyncSession, now: datetime, limit: int = 20) -> list[uuid.UUID]:
    stmt = (
        select(FineTuningJob.id)
        .where(FineTuningJob.status == domain.PENDING,
               or_(FineTuningJob.next_attempt_at.is_(None), FineTuningJob.next_attempt_at <= now))
        .order_by(FineTuningJob.created_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def jobs_to_poll(session: AsyncSession, now: datetime, limit: int = 100) -> list[uuid.UUID]:
    stmt = (
        select(FineTuningJob.id)
        .where(FineTuningJob.status.in_(domain.ACTIVE), FineTuningJob.job_id.is_not(None),
               or_(FineTuningJob.next_attempt_at.is_(None), FineTuningJob.next_attempt_at <= now))
        .order_by(FineTuningJob.updated_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def add_metrics(session: AsyncSession, job_id: uuid.UUID, points: list[dict[str, Any]]) -> set[int]:
    """Inserts metric points; returns the steps that were new (a repeat after a restart is ignored)."""
    if not points:
        return set()
    stmt = (
        insert(JobMetric)
        .values([{"job_id": job_id, **p} for p in points])
        .on_conflict_do_nothing(index_elements=["job_id", "step"])
        .returning(JobMetric.step)
    )
    return set((await session.execute(stmt)).scalars())


async def metrics(session: AsyncSession, job_id: uuid.UUID) -> list[JobMetric]:
    stmt = select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.step)
    return list((await session.execute(stmt)).scalars())


def add_event(session: AsyncSession, job_id: uuid.UUID, kind: str, message: str, **data: Any) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data))


async def events(session: AsyncSession, job_id: uuid.UUID, limit: int) -> list[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id).limit(limit)
    return list((await session.execute(stmt)).scalars())


def audit(session: AsyncSession, organization: str, actor: str, action: str, job_id: uuid.UUID | None,
          **details: Any) -> None:
    session.add(AuditEntry(organization=organization, actor=actor, action=action, job_id=job_id, details=details))


async def audit_log(session: AsyncSession, organization: str, limit: int) -> list[AuditEntry]:
    stmt = select(AuditEntry).where(AuditEntry.organization == organization).order_by(AuditEntry.id.desc()).limit(limit)
    return list((await session.execute(stmt)).scalars())


async def budget(session: AsyncSession, organization: str, *, for_update: bool = False) -> Budget | None:
    stmt = select(Budget).where(Budget.organization == organization)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def set_budget(session: AsyncSession, organization: str, limit: Decimal, actor: str) -> None:
    stmt = insert(Budget).values(organization=organization, monthly_limit=limit, updated_by=actor)
    stmt = stmt.on_conflict_do_update(
        index_elements=["organization"],
        set_={"monthly_limit": limit, "updated_by": actor, "updated_at": func.now()},
    )
    await session.execute(stmt)


async def month_spend(session: AsyncSession, organization: str, since: datetime) -> float:
    """Spent or committed this month: actual cost where known, the estimate of jobs still running,
    nothing for jobs that ended without a bill."""
    committed = case(
        (FineTuningJob.actual_cost.is_not(None), FineTuningJob.actual_cost),
        (FineTuningJob.status.in_((domain.FAILED, domain.CANCELLED)), 0),
        else_=FineTuningJob.cost_estimate,
    )
    stmt = select(func.coalesce(func.sum(committed), 0)).where(
        FineTuningJob.organization == organization, FineTuningJob.created_at >= since
    )
    return float((await session.execute(stmt)).scalar_one())
