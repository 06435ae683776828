"""HTTP shapes of the registry. Requests forbid unknown fields: no mass assignment."""

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.registry.domain import STATUSES
from shared.downloads import public_ref, public_refs

SERVING = (
    'how to call the version: {"kind": "openai", "model": "ft:gpt-4o-mini:..."} | '
    '{"kind": "openai_compatible", "base_url": "http(s)://...", "model": "...", "api_key_env": "ENV_VAR_NAME"} | '
    '{"kind": "bedrock", "model_arn": "arn:aws:bedrock:..."} | '
    '{"kind": "local", "base_model": "...", "adapter_url": "store:<key> (an object of the object store, as '
    'answers name it; file://... inside the store is taken too) or s3://..."}'
)
Status = Literal[STATUSES]
Name = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Name
    version: str | None = Field(default=None, max_length=40, description="semver; default: by the rules")
    model_id: str = Field(min_length=1, max_length=500, description="the provider's model id")
    base_model: str = Field(min_length=1, max_length=500)
    serving: dict[str, Any] = Field(description=SERVING)
    performance_metrics: dict[str, Any] = Field(default_factory=dict)
    deployment_config: dict[str, Any] = Field(default_factory=dict)
    description: str | None = Field(default=None, max_length=5000)


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(default=None, max_length=40, description="a patch bump: same major.minor, higher patch")
    bump: Literal["patch"] | None = Field(default=None, description="the next free patch number")
    serving: dict[str, Any] | None = Field(default=None, description=SERVING)
    deployment_config: dict[str, Any] | None = None
    performance_metrics: dict[str, Any] | None = Field(default=None, description="merged into the stored metrics")
    description: str | None = Field(default=None, max_length=5000)


class DeployBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployment_config: dict[str, Any] | None = None
    reason: str | None = Field(default=None, max_length=2000)
    force: bool = Field(default=False, description="deploy despite the evaluation gate (admin; needs a reason)")
    experiment_id: str | None = Field(default=None, max_length=200)


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    organization: str
    name: str
    version: str
    model_id: str
    base_model: str
    fine_tuning_job_id: uuid.UUID | None
    status: Status
    performance_metrics: dict[str, Any]
    deployment_config: dict[str, Any]
    serving: dict[str, Any]
    description: str | None
    registered_by: str
    created_at: datetime
    updated_at: datetime
    deployed_at: datetime | None

    # A local adapter is named `store:<key>`, never by where it lies on the server (shared/downloads.py).
    @field_validator("model_id")
    @classmethod
    def _stored_object(cls, value):
        return public_ref(value)

    @field_validator("serving", "performance_metrics", "deployment_config")
    @classmethod
    def _no_server_paths(cls, value):
        return public_refs(value)


class ModelPage(BaseModel):
    items: list[ModelOut]
    next_cursor: str | None


class HistoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    model_version_id: uuid.UUID
    name: str
    version: str
    action: str
    from_status: Status | None = Field(serialization_alias="from")
    to_status: Status = Field(serialization_alias="to")
    actor: str = Field(serialization_alias="who")
    at: datetime = Field(serialization_alias="when")
    reason: str | None
    experiment_id: str | None
    forced: bool
    details: dict[str, Any]

    @field_validator("details")
    @classmethod
    def _no_server_paths(cls, value):
        return public_refs(value)


class PolicyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require_evaluation: bool = True
    min_preference_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_reward_margin: float | None = None
    max_eval_loss: float | None = Field(default=None, ge=0)
    min_token_accuracy: float | None = Field(default=None, ge=0, le=1)
    max_leak_findings: int | None = Field(default=None, ge=0, le=2**31 - 1)  # an integer column


class PolicyOut(PolicyBody):
    model_config = ConfigDict(extra="ignore", from_attributes=True)

    organization: str


class LineageOut(BaseModel):
    model_version: dict[str, Any]
    job: dict[str, Any] | None
    dataset: dict[str, Any] | None = Field(description="the export trained on; its files by their API download URLs")

    @field_validator("model_version", "job", "dataset")
    @classmethod
    def _no_server_paths(cls, value):
        return public_refs(value)
    pairs: list[dict[str, Any]] = Field(description="the exported examples (preference pairs) with their feedback ids")
    feedback_ids: list[str]
    next_cursor: str | None
