"""The events every service speaks: one envelope, versioned payloads, topic names.

Payload models are frozen and additive: a consumer ignores fields it does not know, so a producer
may add fields to a version; removing or changing one is a new version on a new topic.
"""

import functools
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from shared.errors import FieldValueError

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
        return _topic_of(cls)

    def to_wire(self, *, event_id: uuid.UUID, organization: str, producer: str, correlation_id: str) -> str:
        """The envelope as it travels, in JSON: the head by orjson, the payload by pydantic's own
        serializer (both native code; building an Envelope model and dumping it costs several times
        more on the ingest path). The one encoder: the outbox and the tests both use it."""
        return _wire(self.type_name, self.version, self.model_dump_json(), event_id=event_id,
                     organization=organization, producer=producer, correlation_id=correlation_id)

    @classmethod
    def many_to_wire(cls, payloads: Iterable[Mapping[str, Any]], *, event_ids: Iterable[str], organization: str,
                     producer: str, correlation_ids: Iterable[str]) -> Iterator[str]:
        """What `to_wire` gives for events of this type, one per payload, each a plain mapping that
        another model validated already (a per-item hot path: no model built and validated a second
        time; the consumer validates what arrives). The payloads' values must be orjson's types: an
        id as its `str`. One head for the batch, one orjson call per event."""
        envelope = _head(cls.type_name, cls.version, event_id="", organization=organization, producer=producer,
                         correlation_id="")
        dumps = orjson.dumps
        for payload, event_id, correlation_id in zip(payloads, event_ids, correlation_ids, strict=True):
            envelope["event_id"], envelope["correlation_id"], envelope["payload"] = event_id, correlation_id, payload
            yield dumps(envelope).decode()

    def envelope(
        self,
        *,
        organization: str,
        producer: str,
        correlation_id: str | None = None,
        event_id: uuid.UUID | None = None,
    ) -> Envelope:
        """The envelope a consumer decodes from this event's wire form."""
        event_id = event_id or uuid.uuid4()
        wire = self.to_wire(event_id=event_id, organization=organization, producer=producer,
                            correlation_id=correlation_id or str(event_id))
        return Envelope.model_validate_json(wire)


@functools.cache
def _topic_of(cls: type[Event]) -> str:  # asked once per event written: the name is built once per type
    return topic_for(cls.type_name, cls.version)


def _wire(type_name: str, version: int, payload: str, *, event_id: uuid.UUID, organization: str, producer: str,
          correlation_id: str) -> str:
    head = orjson.dumps(_head(type_name, version, event_id=event_id, organization=organization, producer=producer,
                              correlation_id=correlation_id))
    return head[:-1].decode() + ',"payload":' + payload + "}"


def _head(type_name: str, version: int, *, event_id: uuid.UUID | str, organization: str, producer: str,
          correlation_id: str) -> dict[str, Any]:
    """The envelope but for its payload."""
    return {
        "event_id": event_id,
        "type": type_name,
        "version": version,
        "occurred_at": datetime.now(UTC),
        "organization": organization,
        "correlation_id": correlation_id,
        "producer": producer,
    }


_REGISTRY: dict[tuple[str, int], type[Event]] = {}


def register(cls: type[Event]) -> type[Event]:
    _REGISTRY[(cls.type_name, cls.version)] = cls
    return cls


class UnknownEvent(ValueError):
    """The envelope names a type or version this code does not know: it can never be processed."""


@functools.cache
def typed_envelope(cls: type[Event]) -> type[Envelope]:
    """An envelope whose type and version are `cls`'s and whose payload is a `cls`: a message of a known
    type decodes in one validation pass (~25% less CPU than the envelope, then its payload)."""
    return create_model(
        f"{cls.__name__}Envelope", __base__=Envelope,
        type=(Literal[cls.type_name], ...), version=(Literal[cls.version], ...), payload=(cls, ...),
    )


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
    latency_ms: int | None = Field(default=None, ge=0, le=2_147_483_647)  # an int4 column

    @model_validator(mode="after")
    def _value_fits_type(self):
        check_feedback_value(self.feedback_type, self.feedback_value)
        return self


def check_feedback_value(feedback_type: str, value: dict[str, Any]) -> None:
    """What feedback_value must hold for each type: a rating carries `rating` (1-5), a correction
    carries the corrected answer in `correction`. Thumbs and detailed feedback take any object."""
    if feedback_type == "rating":
        rating = value.get("rating")
        if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not 1 <= rating <= 5:
            raise FieldValueError("feedback_value.rating", "must be a number from 1 to 5 for a rating")
    elif feedback_type == "correction":
        correction = value.get("correction")
        if not isinstance(correction, str) or not correction.strip():
            raise FieldValueError("feedback_value.correction", "must be the corrected answer for a correction")


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


class ExportRef(BaseModel):
    """Which export version a job trained on, as DatasetExported announced it: enough for a
    downstream service to trace a model back to its files (`sources.jsonl` sits beside the manifest)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    dataset_id: uuid.UUID
    name: str
    export_version: int
    format: str
    sha256: str
    counts: dict[str, int] = Field(default_factory=dict)
    url: str | None = None
    validation_url: str | None = None
    manifest_url: str | None = None


class _JobEvent(Event):
    job_id: uuid.UUID
    dataset_id: uuid.UUID | None = None
    provider: str
    base_model: str
    # Additive: the export version trained on and the name the resulting model is registered under.
    export_version: int | None = None
    model_name: str | None = None


@register
class JobStarted(_JobEvent):
    type_name: ClassVar[str] = "JobStarted"

    method: str
    provider_job_id: str | None = None
    cost_estimate: float | None = None
    export: ExportRef | None = None


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
    # Additive: how the job ran, what it trained on, and its evaluation on the validation split
    # (see services/training/evaluation.py for the keys: eval_loss, preference_accuracy,
    # reward_margin, token_accuracy, validation_loss, leak_check, ...).
    method: str | None = None
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    cost_estimate: float | None = None
    provider_job_id: str | None = None
    export: ExportRef | None = None
    evaluation: dict[str, Any] | None = None


@register
class JobFailed(_JobEvent):
    type_name: ClassVar[str] = "JobFailed"

    error: str
    failed_at: datetime
    cancelled: bool = False  # ended by a cancel (a person's or the provider's), not by an error


# ---- the model registry ------------------------------------------------------------------------
# A version's `serving` says how to call it: {"kind": "openai", "model": ...} |
# {"kind": "openai_compatible", "base_url": ..., "model": ..., "api_key_env": ...} |
# {"kind": "bedrock", "model_arn": ...} | {"kind": "local", "base_model": ..., "adapter_url": ...}.
# Credentials are never in it: at most the NAME of an environment variable holding them.
# The experiment that caused a change is `source_experiment_id`, not `experiment_id`: the outbox
# keys events by `experiment_id` when present, and a name's deploys must stay in one order.


class _ModelEvent(Event):
    model_version_id: uuid.UUID
    name: str
    model_version: str  # the semver ("version" is the event schema's own version)


@register
class ModelRegistered(_ModelEvent):
    type_name: ClassVar[str] = "ModelRegistered"

    model_id: str
    base_model: str
    status: str
    serving: dict[str, Any]
    fine_tuning_job_id: uuid.UUID | None = None
    performance_metrics: dict[str, Any] = Field(default_factory=dict)
    registered_by: str
    registered_at: datetime


@register
class ModelDeployed(_ModelEvent):
    """The version now takes its name's traffic; `serving` says how to reach it."""

    type_name: ClassVar[str] = "ModelDeployed"

    model_id: str
    serving: dict[str, Any]
    deployment_config: dict[str, Any] = Field(default_factory=dict)
    previous_version_id: uuid.UUID | None = None
    previous_version: str | None = None
    deployed_by: str
    reason: str | None = None
    forced: bool = False
    source_experiment_id: str | None = None
    deployed_at: datetime


@register
class ModelRolledBack(_ModelEvent):
    """The name's traffic went back to this version (`model_version_id`) from `rolled_back_from_id`."""

    type_name: ClassVar[str] = "ModelRolledBack"

    model_id: str
    serving: dict[str, Any]
    deployment_config: dict[str, Any] = Field(default_factory=dict)
    rolled_back_from_id: uuid.UUID
    rolled_back_from_version: str  # semver
    rolled_back_by: str
    reason: str | None = None
    rolled_back_at: datetime


@register
class ModelArchived(_ModelEvent):
    type_name: ClassVar[str] = "ModelArchived"

    archived_by: str
    reason: str | None = None
    archived_at: datetime


@register
class DeploymentRequested(Event):
    """Asks the registry to deploy a version (an experiment's full deploy, an automation policy):
    the same checks as the HTTP deploy; a refusal comes back as DeploymentRefused."""

    type_name: ClassVar[str] = "DeploymentRequested"

    model_version_id: uuid.UUID
    requested_by: str = Field(min_length=1, max_length=200)
    reason: str | None = Field(default=None, max_length=2000)
    source_experiment_id: str | None = Field(default=None, max_length=200)
    deployment_config: dict[str, Any] = Field(default_factory=dict)


@register
class DeploymentRefused(Event):
    type_name: ClassVar[str] = "DeploymentRefused"

    model_version_id: uuid.UUID
    request_event_id: uuid.UUID
    code: str  # not_found, conflict, evaluation_gate
    reason: str
    source_experiment_id: str | None = None
    refused_at: datetime


# ---- experiments ---------------------------------------------------------------------------------
# Keyed by `experiment_id` (see shared/outbox.PARTITION_KEY_FIELDS): one experiment's events in order.


class _ExperimentEvent(Event):
    experiment_id: uuid.UUID
    name: str
    model_name: str
    control_model_id: uuid.UUID
    treatment_model_id: uuid.UUID
    traffic_split: float


@register
class ExperimentStarted(_ExperimentEvent):
    type_name: ClassVar[str] = "ExperimentStarted"

    success_metrics: list[dict[str, Any]] = Field(default_factory=list)
    guardrails: list[dict[str, Any]] = Field(default_factory=list)
    started_by: str
    started_at: datetime


@register
class ExperimentPaused(_ExperimentEvent):
    """All of the name's traffic goes to control until the experiment resumes; `reason` says why
    (a person, or a breached guardrail with `guardrail` naming it)."""

    type_name: ClassVar[str] = "ExperimentPaused"

    reason: str
    guardrail: str | None = None
    paused_by: str
    paused_at: datetime


@register
class ExperimentConcluded(_ExperimentEvent):
    """The experiment ended (completed or cancelled) with its full result and recommendation."""

    type_name: ClassVar[str] = "ExperimentConcluded"

    status: str  # completed, cancelled
    winner: str  # control, treatment, inconclusive
    reason: str
    results: dict[str, Any] = Field(default_factory=dict)
    winner_model_id: uuid.UUID | None = None
    concluded_by: str
    concluded_at: datetime


@register
class ResponseServed(Event):
    """An answer the router served (or failed to serve: `error`), so feedback can name only its id."""

    type_name: ClassVar[str] = "ResponseServed"

    response_id: str
    model_name: str
    model_version_id: uuid.UUID
    model_version: str
    experiment_id: uuid.UUID | None = None
    variant: str | None = None
    unit: str
    latency_ms: int = Field(ge=0)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated_cost: float | None = None
    messages: list[dict[str, Any]] = Field(default_factory=list)
    answer: str | None = None
    error: str | None = None
    served_at: datetime


@register
class OutcomeRecorded(Event):
    """A business outcome another platform service measured (a ticket deflected, the time to
    resolution) for an answer the router served (`response_id`) or for a user (`unit`, counted in
    every live experiment the unit was exposed to, or only in `experiment_id`). Any such metric can
    be an experiment's success or guardrail metric."""

    type_name: ClassVar[str] = "OutcomeRecorded"

    metric: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    value: float
    response_id: str | None = Field(default=None, max_length=200)
    unit: str | None = Field(default=None, max_length=500)
    experiment_id: uuid.UUID | None = None
    recorded_at: datetime | None = None


@register
class KeyCreated(Event):
    """An API key was made (by rotation when `rotated_from` names the key it replaces); never its secret."""

    type_name: ClassVar[str] = "KeyCreated"

    key_id: str
    role: str
    name: str | None = None
    expires_at: datetime | None = None
    rotated_from: str | None = None
    created_by: str
    created_at: datetime


@register
class KeyRevoked(Event):
    """An API key stopped working (each process drops it from its cache when the revocation
    commits, not when this is consumed); `replaced_by` names the key a rotation made in its place."""

    type_name: ClassVar[str] = "KeyRevoked"

    key_id: str
    replaced_by: str | None = None
    revoked_by: str
    revoked_at: datetime


__all__ = [
    "DatasetExported",
    "DeploymentRefused",
    "DeploymentRequested",
    "Envelope",
    "ExportRef",
    "JobCompleted",
    "JobFailed",
    "JobProgressed",
    "JobStarted",
    "KeyCreated",
    "KeyRevoked",
    "ModelArchived",
    "ModelDeployed",
    "ModelRegistered",
    "ModelRolledBack",
    "Event",
    "ExperimentConcluded",
    "ExperimentPaused",
    "ExperimentStarted",
    "OutcomeRecorded",
    "ResponseServed",
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
