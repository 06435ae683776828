"""The events every service speaks: one envelope, versioned payloads, topic names.

Payload models are frozen and additive: a consumer ignores fields it does not know, so a producer
may add fields to a version; removing or changing one is a new version on a new topic.
"""

import re
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TOPIC_PREFIX = "rlhf"
DLQ_SUFFIX = ".dlq"


def dot_case(name: str) -> str:
    """FeedbackReceived -> feedback.received"""
    return re.sub(r"(?<!^)(?=[A-Z])", ".", name).lower()


def topic_for(event_type: str, version: int) -> str:
    return f"{TOPIC_PREFIX}.{dot_case(event_type)}.v{version}"


def dlq_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


class Envelope(BaseModel):
    """What travels on every topic; the payload is the event's own versioned model, as JSON."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: uuid.UUID
    type: str = Field(min_length=1)
    version: int = Field(ge=1)
    occurred_at: datetime
    organization: str = Field(min_length=1)
    correlation_id: str
    producer: str
    payload: dict[str, Any]


class Event(BaseModel):
    """Base of every payload. Subclasses set `type_name` and `version`."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    type_name: ClassVar[str]
    version: ClassVar[int] = 1

    @classmethod
    def topic(cls) -> str:
        return topic_for(cls.type_name, cls.version)

    def envelope(
        self,
        *,
        organization: str,
        producer: str,
        correlation_id: str | None = None,
        event_id: uuid.UUID | None = None,
    ) -> Envelope:
        event_id = event_id or uuid.uuid4()
        # The event was validated when it was made; building the envelope need not validate again.
        return Envelope.model_construct(
            event_id=event_id,
            type=self.type_name,
            version=self.version,
            occurred_at=datetime.now(UTC),
            organization=organization,
            correlation_id=correlation_id or str(event_id),
            producer=producer,
            payload=self.model_dump(),  # JSON-encoded by the outbox (orjson) or model_dump(mode="json")
        )


_REGISTRY: dict[tuple[str, int], type[Event]] = {}


def register(cls: type[Event]) -> type[Event]:
    _REGISTRY[(cls.type_name, cls.version)] = cls
    return cls


class UnknownEvent(ValueError):
    """The envelope names a type or version this code does not know: it can never be processed."""


def decode_payload(envelope: Envelope) -> Event:
    """The typed payload of an envelope; raises UnknownEvent or pydantic.ValidationError."""
    cls = _REGISTRY.get((envelope.type, envelope.version))
    if cls is None:
        raise UnknownEvent(f"unknown event type/version: {envelope.type} v{envelope.version}")
    return cls.model_validate(envelope.payload)


FeedbackType = Literal["thumbs_up", "thumbs_down", "rating", "correction", "detailed"]
ReviewStatus = Literal["pending", "approved", "rejected"]


class FeedbackFields(BaseModel):
    """What a piece of feedback says: the contract shared by HTTP submissions and the bus."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    session_id: str | None = Field(default=None, max_length=200)
    query: str = Field(min_length=1, max_length=100_000)
    response: str = Field(min_length=1, max_length=100_000)
    feedback_type: FeedbackType
    feedback_value: dict[str, Any] = Field(default_factory=dict)
    curator_email: str | None = Field(default=None, max_length=320)
    tags: list[str] = Field(default_factory=list, max_length=50)
    # Attribution of the answer being rated, so feedback on A/B-tested answers can be traced.
    response_id: str | None = Field(default=None, max_length=200)
    model_id: str | None = Field(default=None, max_length=200)
    experiment_id: str | None = Field(default=None, max_length=200)
    variant: str | None = Field(default=None, max_length=100)
    latency_ms: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _value_fits_type(self):
        check_feedback_value(self.feedback_type, self.feedback_value)
        return self


def check_feedback_value(feedback_type: str, value: dict[str, Any]) -> None:
    """What feedback_value must hold for each type: a rating carries `rating` (1-5), a correction
    carries the corrected answer in `correction`. Thumbs and detailed feedback take any object."""
    if feedback_type == "rating":
        rating = value.get("rating")
        if isinstance(rating, bool) or not isinstance(rating, int | float) or not 1 <= rating <= 5:
            raise ValueError("feedback_value.rating must be a number from 1 to 5 for a rating")
    elif feedback_type == "correction":
        correction = value.get("correction")
        if not isinstance(correction, str) or not correction.strip():
            raise ValueError("feedback_value.correction must be the corrected answer for a correction")


@register
class FeedbackSubmitted(FeedbackFields, Event):
    """Raw feedback published by other platform services; the envelope's event_id dedupes it."""

    type_name: ClassVar[str] = "FeedbackSubmitted"


@register
class FeedbackReceived(FeedbackFields, Event):
    type_name: ClassVar[str] = "FeedbackReceived"

    feedback_id: uuid.UUID
    created_at: datetime
    source: Literal["http", "bus"]


@register
class FeedbackReviewed(Event):
    type_name: ClassVar[str] = "FeedbackReviewed"

    feedback_id: uuid.UUID
    status: ReviewStatus
    previous_status: ReviewStatus
    correction: str | None = None
    tags: list[str] = Field(default_factory=list)
    notes: str | None = None
    reviewer: str | None = None
    reviewed_at: datetime


@register
class DatasetExported(Event):
    """An immutable export version of a curated dataset, written to the object store."""

    type_name: ClassVar[str] = "DatasetExported"

    dataset_id: uuid.UUID
    name: str
    dataset_type: str
    export_version: int = Field(ge=1)
    format: str
    url: str  # the training split
    sha256: str
    validation_url: str | None = None
    validation_sha256: str | None = None
    manifest_url: str
    counts: dict[str, int]  # train, validation, total
    # Set when the dataset carries an auto-train policy: the training service launches a job.
    auto_train: dict[str, Any] | None = None


class _JobEvent(Event):
    job_id: uuid.UUID
    dataset_id: uuid.UUID | None = None
    provider: str
    base_model: str


@register
class JobStarted(_JobEvent):
    type_name: ClassVar[str] = "JobStarted"

    method: str
    provider_job_id: str | None = None
    cost_estimate: float | None = None


@register
class JobProgressed(_JobEvent):
    type_name: ClassVar[str] = "JobProgressed"

    status: str
    progress: float | None = None  # percent, 0-100
    epoch: float | None = None
    step: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


@register
class JobCompleted(_JobEvent):
    type_name: ClassVar[str] = "JobCompleted"

    resulting_model_id: str
    final_metrics: dict[str, float] = Field(default_factory=dict)
    actual_cost: float | None = None
    completed_at: datetime


@register
class JobFailed(_JobEvent):
    type_name: ClassVar[str] = "JobFailed"

    error: str
    failed_at: datetime
    cancelled: bool = False  # ended by a cancel (a person's or the provider's), not by an error


__all__ = [
    "DatasetExported",
    "Envelope",
    "JobCompleted",
    "JobFailed",
    "JobProgressed",
    "JobStarted",
    "Event",
    "FeedbackFields",
    "FeedbackReceived",
    "FeedbackReviewed",
    "FeedbackSubmitted",
    "UnknownEvent",
    "ValidationError",
    "decode_payload",
    "dlq_topic",
    "topic_for",
]
