"""The feedback service's HTTP routes. HTTP only: parse, authorize, call a handler, shape the answer."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.feedback import domain, handlers, repository
from services.feedback.schemas import (
    BulkReview,
    BulkReviewResult,
    FeedbackBatch,
    FeedbackCreate,
    FeedbackCreated,
    FeedbackOut,
    FeedbackPage,
    FeedbackPatch,
    FeedbackStats,
    Me,
)
from shared.events import FeedbackType, ReviewStatus
from shared.http import DB, CorrelationId, Curator, ServiceRoute, Viewer
from shared.input_guard import StorableDatetime
from shared.paging import created_cursor, decode_cursor, page_of
from shared.tags import normalize_tag

router = APIRouter(prefix="/api/feedback", tags=["feedback"], route_class=ServiceRoute)





# A coroutine though it never waits: FastAPI runs a plain function in its thread pool.
async def filters(
    status: ReviewStatus | None = None,
    feedback_type: FeedbackType | None = None,
    tag: str | None = Query(default=None, max_length=64),
    session_id: str | None = Query(default=None, max_length=200),
    created_from: StorableDatetime | None = None,
    created_to: StorableDatetime | None = None,
) -> repository.FeedbackFilter:
    return repository.FeedbackFilter(
        status=status,
        feedback_type=feedback_type,
        tag=normalize_tag(tag) if tag else None,
        session_id=session_id,
        created_from=created_from,
        created_to=created_to,
    )


Filters = Annotated[repository.FeedbackFilter, Depends(filters)]


# Submitting feedback is open to every role: it is the product's input. Reviewing needs a curator.
@router.post("", status_code=201, response_model=FeedbackCreated)
async def create_feedback(item: FeedbackCreate, principal: Viewer, database: DB, cid: CorrelationId):
    async with database.unit_of_work() as uow:
        items = await handlers.attribute(uow.session, principal.organization, [item])
        ids = await handlers.store_feedback(
            uow, principal.organization, items, source="http", correlation_ids=[cid]
        )
    return FeedbackCreated(ids=ids, count=1)


@router.post("/batch", status_code=201, response_model=FeedbackCreated)
async def create_feedback_batch(batch: FeedbackBatch, principal: Viewer, database: DB, cid: CorrelationId):
    """All or nothing: one invalid item fails the whole batch (422 lists each item's errors)."""
    async with database.unit_of_work() as uow:
        items = await handlers.attribute(uow.session, principal.organization, batch.items, batch=True)
        ids = await handlers.store_feedback(
            uow, principal.organization, items, source="http", correlation_ids=[cid] * len(batch.items)
        )
    return FeedbackCreated(ids=ids, count=len(ids))


@router.get("", response_model=FeedbackPage)
async def list_feedback(
    principal: Viewer,
    database: DB,
    f: Filters,
    cursor: str | None = Query(default=None, max_length=200),
    limit: int = Query(default=50, ge=1, le=500),
):
    after = decode_cursor(cursor) if cursor else None
    async with database.read() as session:
        rows = await repository.page(session, principal.organization, f, after=after, limit=limit + 1)
    rows, next_cursor = page_of(rows, limit, created_cursor)
    return FeedbackPage(items=[FeedbackOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/stats", response_model=FeedbackStats)
async def feedback_stats(principal: Viewer, database: DB, f: Filters):
    async with database.read() as session:
        return await repository.stats(session, principal.organization, f)


@router.get("/me", response_model=Me)
async def who_am_i(principal: Viewer):
    """The caller's key: its organization and role (what the UI shows, and hides by)."""
    return Me(key_id=principal.key_id, organization=principal.organization, role=principal.role.name)


@router.post("/review", response_model=BulkReviewResult)
async def bulk_review(body: BulkReview, principal: Curator, database: DB, cid: CorrelationId):
    changes = {"status": domain.ACTION_STATUS[body.action]}
    if body.notes is not None:
        changes["notes"] = body.notes
    async with database.unit_of_work() as uow:
        updated, unchanged, not_found = await handlers.review_many(
            uow, principal.organization, body.ids, changes, reviewer=principal.name, correlation_id=cid
        )
    return BulkReviewResult(updated=updated, unchanged=unchanged, not_found=not_found)


@router.get("/{feedback_id}", response_model=FeedbackOut)
async def get_feedback(feedback_id: uuid.UUID, principal: Viewer, database: DB):
    async with database.read() as session:
        row = await repository.get(session, principal.organization, feedback_id)
    if row is None:
        raise domain.FeedbackNotFound(feedback_id)
    return row


@router.patch("/{feedback_id}", response_model=FeedbackOut)
async def review_feedback(
    feedback_id: uuid.UUID, patch: FeedbackPatch, principal: Curator, database: DB, cid: CorrelationId
):
    changes = patch.model_dump(include=patch.model_fields_set)
    async with database.unit_of_work() as uow:
        row = await handlers.review_feedback(
            uow, principal.organization, feedback_id, changes, reviewer=principal.name, correlation_id=cid
        )
    return row
