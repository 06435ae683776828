"""What the feedback service does, one function per purpose. Each runs inside a unit of work
that its caller (api.py or consumers.py) opened; none commits or publishes by itself."""

import functools
import os
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from services.feedback import domain, repository
from services.feedback.models import Feedback
from shared.consumer import Delivery
from shared.db import UnitOfWork
from shared.events import FeedbackFields, FeedbackReceived, FeedbackReviewed, FeedbackSubmitted, ResponseServed
from shared.ids import new_ids
from shared.observability import FEEDBACK_INGESTED

_FIELDS = frozenset(FeedbackFields.model_fields)


async def store_feedback(
    uow: UnitOfWork,
    organization: str,
    items: Sequence[FeedbackFields],
    *,
    source: str,
    correlation_ids: Sequence[str | None] | None = None,
) -> list[uuid.UUID]:
    """Store feedback items and announce each one as FeedbackReceived (carrying the correlation id
    of the request or event that brought it)."""
    ids = new_ids(2 * len(items))  # each item's id, then its event's
    ids, event_ids = ids[: len(items)], ids[len(items) :]
    rows, payloads = [], []
    for item, feedback_id in zip(items, ids, strict=True):
        fields = _fields_of(item)
        if fields["tags"]:
            fields["tags"] = list(domain.normalize_tags(fields["tags"]))
        rows.append(dict(fields, id=feedback_id, organization=organization, status="pending", source=source))
        # FeedbackReceived's fields, which the item's model validated already: no second model per item.
        payloads.append(dict(fields, feedback_id=str(feedback_id), source=source))
    created = await repository.add_many(uow.session, rows)
    for payload in payloads:
        payload["created_at"] = created
    uow.emit_many(FeedbackReceived, payloads, organization=organization, event_ids=event_ids,
                  correlation_ids=correlation_ids or [None] * len(items))
    FEEDBACK_INGESTED.labels(uow.service, source).inc(len(rows))
    return ids


def _fields_of(item: FeedbackFields) -> dict:
    """The item's validated values as they are, in a new dict (a model_dump copies each value: ~15% of
    a consumer's CPU per item); a model with exactly FeedbackFields' fields is copied whole."""
    values = item.__dict__
    if _has_only_feedback_fields(type(item)):
        return values.copy()
    return {name: values[name] for name in _FIELDS}


@functools.cache
def _has_only_feedback_fields(model: type[FeedbackFields]) -> bool:
    return model.model_fields.keys() == _FIELDS  # (pydantic keeps extra fields out of __dict__)


async def store_submitted_feedback(uow: UnitOfWork, deliveries: Sequence[Delivery[FeedbackSubmitted]]) -> None:
    """Feedback other platform services published on rlhf.feedback.submitted.v1."""
    by_org: dict[str, list[Delivery]] = defaultdict(list)
    for d in deliveries:
        by_org[d.envelope.organization].append(d)
    for organization, batch in by_org.items():
        await store_feedback(
            uow, organization, [d.event for d in batch], source="bus",
            correlation_ids=[d.envelope.correlation_id for d in batch],
        )


def _review_state(row: Feedback) -> domain.ReviewState:
    return domain.ReviewState(row.status, row.correction, tuple(row.tags or ()), row.notes)


def _apply(uow: UnitOfWork, row: Feedback, changes: dict, reviewer: str, correlation_id: str | None) -> bool:
    """Apply review changes to a locked row; emit FeedbackReviewed if anything changed."""
    before = _review_state(row)
    after = domain.apply_review(before, changes)
    if after == before:
        return False
    now = datetime.now(UTC)
    row.status, row.correction, row.tags, row.notes = after.status, after.correction, list(after.tags), after.notes
    row.reviewed_by, row.reviewed_at, row.updated_at = reviewer, now, now
    uow.emit(
        FeedbackReviewed(
            feedback_id=row.id,
            status=after.status,
            previous_status=before.status,
            correction=after.correction,
            tags=list(after.tags),
            notes=after.notes,
            reviewer=reviewer,
            reviewed_at=now,
        ),
        organization=row.organization,
        correlation_id=correlation_id,
    )
    return True


async def review_feedback(
    uow: UnitOfWork,
    organization: str,
    feedback_id: uuid.UUID,
    changes: dict,
    *,
    reviewer: str,
    correlation_id: str | None = None,
) -> Feedback:
    row = await repository.get(uow.session, organization, feedback_id, for_update=True)
    if row is None:
        raise domain.FeedbackNotFound(feedback_id)
    _apply(uow, row, changes, reviewer, correlation_id)
    return row


async def review_many(
    uow: UnitOfWork,
    organization: str,
    ids: Sequence[uuid.UUID],
    changes: dict,
    *,
    reviewer: str,
    correlation_id: str | None = None,
) -> tuple[list[uuid.UUID], list[uuid.UUID], list[uuid.UUID]]:
    """Bulk approve or reject; returns (updated, unchanged, not_found)."""
    rows = await repository.get_many_for_update(uow.session, organization, list(dict.fromkeys(ids)))
    found = {row.id for row in rows}
    updated, unchanged = [], []
    for row in rows:
        (updated if _apply(uow, row, changes, reviewer, correlation_id) else unchanged).append(row.id)
    not_found = [i for i in dict.fromkeys(ids) if i not in found]
    return updated, unchanged, not_found


# ---- served responses: feedback that names only a response id ----------------------------------

SERVED_RETENTION_DAYS = float(os.environ.get("RLHF_SERVED_RESPONSE_RETENTION_DAYS", "30"))


async def keep_served_responses(uow: UnitOfWork, deliveries: Sequence[Delivery[ResponseServed]]) -> None:
    """Answers the router served, kept (RLHF_SERVED_RESPONSE_RETENTION_DAYS, default 30) so that
    feedback on them needs only their response id. Failed calls have no answer to rate."""
    rows = []
    for d in deliveries:
        e = d.event
        if e.error is not None or e.answer is None:
            continue
        rows.append({"organization": d.envelope.organization, "response_id": e.response_id,
                     "query": domain.question_of(e.messages), "response": e.answer, "model_id": str(e.model_version_id),
                     "model_name": e.model_name, "model_version": e.model_version,
                     "experiment_id": str(e.experiment_id) if e.experiment_id else None, "variant": e.variant,
                     "latency_ms": e.latency_ms, "served_at": e.served_at})
    await repository.add_served(uow.session, rows)


async def attribute(session, organization: str, items: Sequence[FeedbackFields], *,
                    batch: bool = False) -> list[FeedbackFields]:
    """Items that name a served response get what the client left out from it: query, response, model,
    experiment, variant and latency. An item with neither the text nor a known response id is refused."""
    wanted = {i.response_id for i in items if i.response_id}
    served = await repository.served(session, organization, wanted) if wanted else {}
    out = []
    for index, item in enumerate(items):
        row = served.get(item.response_id) if item.response_id else None
        if row is None:
            if not item.query or not item.response:
                raise domain.UnknownResponse(item.response_id, "query" if not item.query else "response",
                                             index if batch else None)
            out.append(item)
            continue
        known = {"query": row.query, "response": row.response, "model_id": row.model_id,
                 "experiment_id": row.experiment_id, "variant": row.variant, "latency_ms": row.latency_ms}
        given = item.model_dump(include=set(FeedbackFields.model_fields), exclude_none=True)
        out.append(FeedbackFields.model_validate(known | given))
    return out


async def prune_served_responses(uow: UnitOfWork) -> int:
    cutoff = datetime.now(UTC) - timedelta(days=SERVED_RETENTION_DAYS)
    return await repository.prune_served(uow.session, cutoff)
