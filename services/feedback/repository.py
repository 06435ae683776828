"""All of the feedback service's SQL. Every query is scoped to one organization."""

import operator
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import and_, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.feedback.models import FEEDBACK_COPY_COLUMNS, SCHEMA, Feedback, ServedResponse
from shared.bulk import copy_or_insert, transaction_time, uses_copy


@dataclass(frozen=True)
class FeedbackFilter:
    status: str | None = None
    feedback_type: str | None = None
    tag: str | None = None
    session_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


# What a batch writes; created_at and updated_at come from their DEFAULT now() (see add_many).
_BULK_COLUMNS = [c for c in FEEDBACK_COPY_COLUMNS if c not in ("created_at", "updated_at")]
_BULK_VALUES = operator.itemgetter(*_BULK_COLUMNS)
_VALUE_AT = _BULK_COLUMNS.index("feedback_value")


async def add_many(session: AsyncSession, rows: list[dict[str, Any]]) -> datetime:
    """Bulk insert into rlhf_feedback inside the session's transaction; returns the time the rows were
    created (and last updated) at. A batch is one COPY whose rows take that time from the columns'
    DEFAULT now(), the transaction's start: asyncpg encodes a timestamp in Python, ~0.7 µs each (two
    of them were 40% of a row's COPY). A few rows are INSERTs with the clock's time."""
    records = []
    for row in rows:
        record = list(_BULK_VALUES(row))
        record[_VALUE_AT] = orjson.dumps(record[_VALUE_AT]).decode()
        records.append(record)
    if uses_copy(len(records)):
        created = await transaction_time(session)
        columns = _BULK_COLUMNS
    else:
        created = datetime.now(UTC)
        columns = [*_BULK_COLUMNS, "created_at", "updated_at"]
        records = [[*record, created, created] for record in records]
    await copy_or_insert(session, SCHEMA, "rlhf_feedback", columns, records)
    return created


async def get(session: AsyncSession, organization: str, feedback_id: uuid.UUID, *, for_update: bool = False):
    stmt = select(Feedback).where(Feedback.organization == organization, Feedback.id == feedback_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_many_for_update(session: AsyncSession, organization: str, ids: list[uuid.UUID]) -> list[Feedback]:
    stmt = (
        select(Feedback)
        .where(Feedback.organization == organization, Feedback.id.in_(ids))
        .order_by(Feedback.id)  # a stable lock order, so concurrent bulk reviews cannot deadlock
        .with_for_update()
    )
    return list((await session.execute(stmt)).scalars())


def _filtered(organization: str, f: FeedbackFilter):
    conditions = [Feedback.organization == organization]
    if f.status:
        conditions.append(Feedback.status == f.status)
    if f.feedback_type:
        conditions.append(Feedback.feedback_type == f.feedback_type)
    if f.tag:
        conditions.append(Feedback.tags.contains([f.tag]))
    if f.session_id:
        conditions.append(Feedback.session_id == f.session_id)
    if f.created_from:
        conditions.append(Feedback.created_at >= f.created_from)
    if f.created_to:
        conditions.append(Feedback.created_at < f.created_to)
    return conditions


async def page(
    session: AsyncSession,
    organization: str,
    f: FeedbackFilter,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Feedback]:
    """Newest first, keyset-paged on (created_at, id): stable under concurrent inserts."""
    conditions = _filtered(organization, f)
    if after:
        conditions.append(tuple_(Feedback.created_at, Feedback.id) < tuple_(*after))
    stmt = (
        select(Feedback)
        .where(and_(*conditions))
        .order_by(Feedback.created_at.desc(), Feedback.id.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def stats(session: AsyncSession, organization: str, f: FeedbackFilter) -> dict[str, Any]:
    where = and_(*_filtered(organization, f))
    by_type = await session.execute(
        select(Feedback.feedback_type, func.count()).where(where).group_by(Feedback.feedback_type)
    )
    by_status = await session.execute(select(Feedback.status, func.count()).where(where).group_by(Feedback.status))
    day = func.date_trunc("day", Feedback.created_at).label("day")
    by_day = await session.execute(select(day, func.count()).where(where).group_by(day).order_by(day))
    types = dict(by_type.all())
    return {
        "total": sum(types.values()),
        "by_type": types,
        "by_status": dict(by_status.all()),
        "by_day": [{"day": d.date(), "count": n} for d, n in by_day.all()],
    }


__all__ = ["FeedbackFilter", "add_many", "get", "get_many_for_update", "page", "stats"]


async def add_served(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(ServedResponse).values(rows).on_conflict_do_nothing())


async def served(session: AsyncSession, organization: str, response_ids) -> dict[str, ServedResponse]:
    stmt = select(ServedResponse).where(ServedResponse.organization == organization,
                                        ServedResponse.response_id.in_(list(response_ids)))
    return {r.response_id: r for r in (await session.execute(stmt)).scalars()}


async def prune_served(session: AsyncSession, before: datetime) -> int:
    result = await session.execute(delete(ServedResponse).where(ServedResponse.served_at < before))
    return result.rowcount or 0
