"""HTTP shapes of the feedback service. Requests forbid unknown fields: no mass assignment."""

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.events import FeedbackFields, FeedbackType, ReviewStatus

MAX_BATCH = 1000


class FeedbackCreate(FeedbackFields):
    """Feedback as submitted over HTTP: query and response may be left out when `response_id` names
    an answer the router served (they, the model, experiment, variant and latency come from it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str | None = Field(default=None, min_length=1, max_length=100_000)  # type: ignore[assignment]
    response: str | None = Field(default=None, min_length=1, max_length=100_000)  # type: ignore[assignment]


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[FeedbackCreate] = Field(min_length=1, max_length=MAX_BATCH)


class FeedbackOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    organization: str
    session_id: str | None
    query: str
    response: str
    feedback_type: FeedbackType
    feedback_value: dict[str, Any]
    curator_email: str | None
    status: ReviewStatus
    correction: str | None
    tags: list[str]
    notes: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    response_id: str | None
    model_id: str | None
    experiment_id: str | None
    variant: str | None
    latency_ms: int | None
    source: str
    created_at: datetime
    updated_at: datetime


class FeedbackCreated(BaseModel):
    ids: list[uuid.UUID]
    count: int


class FeedbackPage(BaseModel):
    items: list[FeedbackOut]
    next_cursor: str | None


class FeedbackPatch(BaseModel):
    """Review one item: approve or reject (status), correct, tag, annotate."""

    model_config = ConfigDict(extra="forbid")

    status: ReviewStatus | None = None
    correction: str | None = Field(default=None, max_length=100_000)
    tags: list[str] | None = Field(default=None, max_length=50)
    notes: str | None = Field(default=None, max_length=10_000)

    @model_validator(mode="after")
    def _not_empty(self):
        if not self.model_fields_set:
            raise ValueError("name at least one of status, correction, tags, notes")
        return self


class BulkReview(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BATCH)
    action: Literal["approve", "reject"]
    notes: str | None = Field(default=None, max_length=10_000)


class BulkReviewResult(BaseModel):
    updated: list[uuid.UUID]
    unchanged: list[uuid.UUID]
    not_found: list[uuid.UUID]


class DayCount(BaseModel):
    day: date
    count: int


class FeedbackStats(BaseModel):
    total: int
    by_type: dict[str, int]
    by_status: dict[str, int]
    by_day: list[DayCount]


class Me(BaseModel):
    """Who a key is: every call it makes is scoped to `organization` and limited by `role`."""

    key_id: str
    organization: str
    role: Literal["viewer", "curator", "admin"]
