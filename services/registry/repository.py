"""All of the registry's SQL. Every query is scoped to one organization."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.registry import domain
from services.registry.models import DeployPolicy, ModelVersion, StatusChange


@dataclass(frozen=True)
class VersionFilter:
    name: str | None = None
    status: str | None = None


async def lock_name(session: AsyncSession, organization: str, name: str) -> None:
    """Serialises every change to one name's versions (register, deploy, rollback, archive) until
    the transaction ends: concurrent deploys queue here instead of racing for the deployed slot."""
    key = f"registry.name:{organization}:{name}"
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))


async def get(session: AsyncSession, organization: str, model_version_id: uuid.UUID, *,
              for_update: bool = False) -> ModelVersion | None:
    stmt = select(ModelVersion).where(ModelVersion.organization == organization, ModelVersion.id == model_version_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def name_of(session: AsyncSession, organization: str, model_version_id: uuid.UUID) -> str | None:
    stmt = select(ModelVersion.name).where(ModelVersion.organization == organization,
                                           ModelVersion.id == model_version_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def by_job(session: AsyncSession, organization: str, job_id: uuid.UUID) -> ModelVersion | None:
    stmt = select(ModelVersion).where(ModelVersion.organization == organization,
                                      ModelVersion.fine_tuning_job_id == job_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def latest(session: AsyncSession, organization: str, name: str) -> ModelVersion | None:
    """The name's highest version."""
    stmt = (select(ModelVersion).where(ModelVersion.organization == organization, ModelVersion.name == name)
            .order_by(ModelVersion.major.desc(), ModelVersion.minor.desc(), ModelVersion.patch.desc()).limit(1))
    return (await session.execute(stmt)).scalar_one_or_none()


async def highest_patch(session: AsyncSession, row: ModelVersion) -> int:
    """The highest patch number registered for the row's name, major and minor."""
    stmt = select(func.max(ModelVersion.patch)).where(
        ModelVersion.organization == row.organization, ModelVersion.name == row.name,
        ModelVersion.major == row.major, ModelVersion.minor == row.minor)
    return int((await session.execute(stmt)).scalar_one() or 0)


async def version_taken(session: AsyncSession, organization: str, name: str, version: str) -> bool:
    stmt = select(ModelVersion.id).where(ModelVersion.organization == organization, ModelVersion.name == name,
                                         ModelVersion.version == version)
    return (await session.execute(stmt)).first() is not None


async def deployed(session: AsyncSession, organization: str, name: str) -> ModelVersion | None:
    stmt = (select(ModelVersion)
            .where(ModelVersion.organization == organization, ModelVersion.name == name,
                   ModelVersion.status == domain.DEPLOYED)
            .with_for_update())
    return (await session.execute(stmt)).scalar_one_or_none()


async def add(session: AsyncSession, version: ModelVersion) -> None:
    session.add(version)
    await session.flush()


async def list_versions(session: AsyncSession, organization: str, f: VersionFilter, limit: int,
                        after: tuple[datetime, uuid.UUID] | None) -> list[ModelVersion]:
    """Newest first on (created_at, id); `after` is the last row of the previous page."""
    stmt = select(ModelVersion).where(ModelVersion.organization == organization)
    if f.name:
        stmt = stmt.where(ModelVersion.name == f.name)
    if f.status:
        stmt = stmt.where(ModelVersion.status == f.status)
    if after:
        stmt = stmt.where(tuple_(ModelVersion.created_at, ModelVersion.id) < tuple_(*after))
    stmt = stmt.order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc()).limit(limit + 1)
    return list((await session.execute(stmt)).scalars())


def record(session: AsyncSession, version: ModelVersion, action: str, from_status: str | None, to_status: str,
           actor: str, *, reason: str | None = None, experiment_id: str | None = None, forced: bool = False,
           previous_version_id: uuid.UUID | None = None, **details: Any) -> None:
    session.add(StatusChange(
        organization=version.organization, model_version_id=version.id, name=version.name, version=version.version,
        action=action, from_status=from_status, to_status=to_status, actor=actor, reason=reason,
        experiment_id=experiment_id, forced=forced, previous_version_id=previous_version_id, details=details,
    ))


async def last_went_live(session: AsyncSession, organization: str, model_version_id: uuid.UUID) -> StatusChange | None:
    """The history row that last made this version the deployed one (a deploy or a rollback to it)."""
    stmt = (select(StatusChange)
            .where(StatusChange.organization == organization, StatusChange.model_version_id == model_version_id,
                   StatusChange.to_status == domain.DEPLOYED)
            .order_by(StatusChange.id.desc()).limit(1))
    return (await session.execute(stmt)).scalar_one_or_none()


async def history(session: AsyncSession, organization: str, model_version_id: uuid.UUID,
                  limit: int) -> list[StatusChange]:
    stmt = (select(StatusChange)
            .where(StatusChange.organization == organization, StatusChange.model_version_id == model_version_id)
            .order_by(StatusChange.id).limit(limit))
    return list((await session.execute(stmt)).scalars())


async def name_history(session: AsyncSession, organization: str, name: str, limit: int) -> list[StatusChange]:
    stmt = (select(StatusChange)
            .where(StatusChange.organization == organization, StatusChange.name == name)
            .order_by(StatusChange.id).limit(limit))
    return list((await session.execute(stmt)).scalars())


async def policy(session: AsyncSession, organization: str) -> DeployPolicy | None:
    stmt = select(DeployPolicy).where(DeployPolicy.organization == organization)
    return (await session.execute(stmt)).scalar_one_or_none()


async def set_policy(session: AsyncSession, organization: str, values: dict[str, Any], actor: str) -> None:
    stmt = insert(DeployPolicy).values(organization=organization, updated_by=actor, **values)
    stmt = stmt.on_conflict_do_update(index_elements=["organization"],
                                      set_={**values, "updated_by": actor, "updated_at": func.now()})
    await session.execute(stmt)
