"""All of the experiments service's SQL. Every query is scoped to one organization."""

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, literal_column, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.experiments import domain
from services.experiments.models import (
    SCHEMA,
    Experiment,
    Exposure,
    LatencyBucket,
    ModelVersion,
    OutcomeStats,
    ServedResponse,
    VariantUnits,
)
from shared.bulk import execute_json

LIVE_STATUSES = ("running", "paused")
ROWS_PER_STATEMENT = 2000  # a statement takes at most 32,767 parameters


def chunks(rows: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        yield rows[start:start + ROWS_PER_STATEMENT]
# Rating counts per level, added element-wise (PostgreSQL has no array addition).
ADD_LEVELS = literal_column(
    "ARRAY(SELECT a + b FROM unnest(outcome_stats.levels, excluded.levels) WITH ORDINALITY AS t(a, b, i) ORDER BY i)")


# ---- the service's view of registered versions -----------------------------------------------

async def add_version(session: AsyncSession, organization: str, values: dict[str, Any]) -> None:
    """A registered version; nothing changes if a deploy of it was applied first."""
    await session.execute(insert(ModelVersion).values(organization=organization, **values)
                          .on_conflict_do_nothing(index_elements=["id"]))


async def make_live(session: AsyncSession, organization: str, values: dict[str, Any], at: datetime) -> None:
    """The version now takes its name's traffic (a deploy or a rollback made at `at`), unless a later
    change of the name was applied already; the name's other live version is deprecated."""
    name = values["name"]
    newer = await session.execute(select(ModelVersion.id).where(
        ModelVersion.organization == organization, ModelVersion.name == name, ModelVersion.status == "deployed",
        ModelVersion.status_at > at, ModelVersion.id != values["id"]))
    status = "deprecated" if newer.first() else "deployed"
    if status == "deployed":
        await session.execute(
            update(ModelVersion)
            .where(ModelVersion.organization == organization, ModelVersion.name == name,
                   ModelVersion.status == "deployed", ModelVersion.id != values["id"])
            .values(status="deprecated", status_at=at, updated_at=func.now()))
    stmt = insert(ModelVersion).values(organization=organization, status=status, status_at=at, **values)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={"serving": stmt.excluded.serving, "model_id": stmt.excluded.model_id, "status": stmt.excluded.status,
              "status_at": stmt.excluded.status_at, "updated_at": func.now()},
        where=(ModelVersion.organization == organization)
        & ((ModelVersion.status_at.is_(None)) | (ModelVersion.status_at <= at))))


async def set_version_status(session: AsyncSession, organization: str, version_id: uuid.UUID, status: str) -> None:
    await session.execute(update(ModelVersion).where(ModelVersion.organization == organization,
                                                     ModelVersion.id == version_id)
                          .values(status=status, updated_at=func.now()))


async def versions(session: AsyncSession, organization: str, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ModelVersion]:
    stmt = select(ModelVersion).where(ModelVersion.organization == organization, ModelVersion.id.in_(list(ids)))
    return {v.id: v for v in (await session.execute(stmt)).scalars()}


async def deployed_version(session: AsyncSession, organization: str, name: str) -> ModelVersion | None:
    stmt = select(ModelVersion).where(ModelVersion.organization == organization, ModelVersion.name == name,
                                      ModelVersion.status == "deployed")
    return (await session.execute(stmt)).scalars().first()


async def model_names(session: AsyncSession, organization: str) -> list[str]:
    """The names the router answers for: those with a deployed version."""
    stmt = (select(ModelVersion.name).where(ModelVersion.organization == organization,
                                            ModelVersion.status == "deployed")
            .distinct().order_by(ModelVersion.name))
    return list((await session.execute(stmt)).scalars())


# ---- experiments ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExperimentFilter:
    status: str | None = None
    model_name: str | None = None
    winner: str | None = None


async def add_experiment(session: AsyncSession, row: Experiment) -> None:
    session.add(row)
    await session.flush()


async def get_experiment(session: AsyncSession, organization: str, experiment_id: uuid.UUID, *,
                         for_update: bool = False) -> Experiment | None:
    stmt = select(Experiment).where(Experiment.organization == organization, Experiment.id == experiment_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def experiments_by_id(session: AsyncSession, ids: Iterable[uuid.UUID], *,
                            for_update: bool = False) -> list[Experiment]:
    stmt = select(Experiment).where(Experiment.id.in_(list(ids))).order_by(Experiment.id)
    if for_update:
        stmt = stmt.with_for_update()
    return list((await session.execute(stmt)).scalars())


async def live_experiment(session: AsyncSession, organization: str, model_name: str) -> Experiment | None:
    stmt = select(Experiment).where(Experiment.organization == organization, Experiment.model_name == model_name,
                                    Experiment.status.in_(LIVE_STATUSES))
    return (await session.execute(stmt)).scalar_one_or_none()


async def list_experiments(session: AsyncSession, organization: str, filters: ExperimentFilter, limit: int,
                           after: tuple[datetime, uuid.UUID] | None) -> Sequence[Experiment]:
    stmt = select(Experiment).where(Experiment.organization == organization)
    if filters.status:
        stmt = stmt.where(Experiment.status == filters.status)
    if filters.model_name:
        stmt = stmt.where(Experiment.model_name == filters.model_name)
    if filters.winner:
        stmt = stmt.where(Experiment.winner == filters.winner)
    if after:
        stmt = stmt.where(tuple_(Experiment.created_at, Experiment.id) < tuple_(*after))
    stmt = stmt.order_by(Experiment.created_at.desc(), Experiment.id.desc()).limit(limit + 1)
    return list((await session.execute(stmt)).scalars())


# ---- exposures and outcomes -------------------------------------------------------------------------

_RECORD_EXPOSURES = f"""
    WITH new AS (
        INSERT INTO "{SCHEMA}".exposures (experiment_id, unit, variant)
        SELECT f.* FROM jsonb_to_recordset($1::jsonb) AS f(experiment_id uuid, unit text, variant text)
        ON CONFLICT DO NOTHING
        RETURNING experiment_id, variant)
    INSERT INTO "{SCHEMA}".variant_units AS v (experiment_id, variant, units)
    SELECT experiment_id, variant, count(*) FROM new GROUP BY experiment_id, variant ORDER BY experiment_id, variant
    ON CONFLICT (experiment_id, variant) DO UPDATE SET units = v.units + excluded.units"""


async def record_exposures(session: AsyncSession, rows: Sequence[tuple[uuid.UUID, str, str]]) -> None:
    """First exposures of (experiment, unit, variant), and the units per variant grown by the ones
    that were new: one prepared statement for any batch (the batch is one JSON parameter)."""
    unique = {(e, u): {"experiment_id": e, "unit": u, "variant": v} for e, u, v in rows}
    await execute_json(session, _RECORD_EXPOSURES, list(unique.values()))


async def add_outcomes(session: AsyncSession, tallies: dict[tuple[uuid.UUID, str, str], domain.Tally]) -> None:
    """Adds tallies (experiment, variant, metric) -> Tally to the running statistics."""
    if not tallies:
        return
    values = [{"experiment_id": e, "variant": v, "metric": m, "n": t.n, "total": t.total, "total_sq": t.total_sq,
               "levels": t.levels} for (e, v, m), t in sorted(tallies.items())]
    ins = insert(OutcomeStats).values(values)
    await session.execute(ins.on_conflict_do_update(
        index_elements=["experiment_id", "variant", "metric"],
        set_={"n": OutcomeStats.n + ins.excluded.n, "total": OutcomeStats.total + ins.excluded.total,
              "total_sq": OutcomeStats.total_sq + ins.excluded.total_sq,
              "levels": ADD_LEVELS}))


async def add_latencies(session: AsyncSession, counts: dict[tuple[uuid.UUID, str, int], int]) -> None:
    """Adds (experiment, variant, bucket) -> count to the latency sketches."""
    rows = [{"experiment_id": e, "variant": v, "bucket": b, "count": n} for (e, v, b), n in sorted(counts.items())]
    for chunk in chunks(rows):
        ins = insert(LatencyBucket).values(list(chunk))
        await session.execute(ins.on_conflict_do_update(
            index_elements=["experiment_id", "variant", "bucket"],
            set_={"count": LatencyBucket.count + ins.excluded.count}))


async def variant_data(session: AsyncSession, experiment_id: uuid.UUID) -> dict[str, domain.VariantData]:
    units = {v: n for v, n in (await session.execute(
        select(VariantUnits.variant, VariantUnits.units).where(VariantUnits.experiment_id == experiment_id))).all()}
    tallies: dict[str, dict[str, domain.Tally]] = {v: {} for v in domain.VARIANTS}
    rows = await session.execute(select(OutcomeStats).where(OutcomeStats.experiment_id == experiment_id))
    for row in rows.scalars():
        tallies.setdefault(row.variant, {})[row.metric] = domain.Tally(row.n, row.total, row.total_sq, list(row.levels))
    buckets: dict[str, dict[int, int]] = {v: {} for v in domain.VARIANTS}
    rows = await session.execute(select(LatencyBucket.variant, LatencyBucket.bucket, LatencyBucket.count)
                                 .where(LatencyBucket.experiment_id == experiment_id))
    for variant, bucket, count in rows.all():
        buckets.setdefault(variant, {})[bucket] = count
    return {v: domain.VariantData(units.get(v, 0), tallies.get(v, {}), buckets.get(v, {})) for v in domain.VARIANTS}


_ADD_SERVED = f"""
    INSERT INTO "{SCHEMA}".served_responses (response_id, organization, experiment_id, variant, served_at)
    SELECT f.response_id, f.organization, f.experiment_id, f.variant, coalesce(f.served_at, now())
    FROM jsonb_to_recordset($1::jsonb) AS f(response_id text, organization text, experiment_id uuid, variant text,
                                            served_at timestamptz)
    ON CONFLICT DO NOTHING"""


async def add_served(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Which experiment and variant served each response (rows without `served_at` are served now)."""
    await execute_json(session, _ADD_SERVED, rows)


async def served(session: AsyncSession, organization: str, response_ids: Iterable[str]) -> dict[str, ServedResponse]:
    stmt = select(ServedResponse).where(ServedResponse.organization == organization,
                                        ServedResponse.response_id.in_(list(response_ids)))
    return {r.response_id: r for r in (await session.execute(stmt)).scalars()}


async def live_exposures(session: AsyncSession, organization: str, unit: str,
                         experiment_id: uuid.UUID | None) -> list[tuple[uuid.UUID, str]]:
    """(experiment, variant) of every live experiment the unit was exposed to (or only `experiment_id`)."""
    stmt = (select(Exposure.experiment_id, Exposure.variant)
            .join(Experiment, Experiment.id == Exposure.experiment_id)
            .where(Experiment.organization == organization, Experiment.status.in_(LIVE_STATUSES),
                   Exposure.unit == unit))
    if experiment_id is not None:
        stmt = stmt.where(Exposure.experiment_id == experiment_id)
    return [(e, v) for e, v in (await session.execute(stmt)).all()]


async def prune_served(session: AsyncSession, before: datetime) -> int:
    result = await session.execute(delete(ServedResponse).where(ServedResponse.served_at < before))
    return result.rowcount or 0
