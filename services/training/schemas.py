"""HTTP shapes of the training service. Requests forbid unknown fields: no mass assignment."""

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from services.training.domain import STATUSES
from services.training.providers import PROVIDERS
from shared.downloads import public_export_ref, public_ref, public_refs

Method = Literal["sft", "dpo"]
Status = Literal[STATUSES]
ProviderName = Literal[tuple(PROVIDERS)]  # the registry's providers (a new one is a new module)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: uuid.UUID
    export_version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="default: the latest export")
    provider: ProviderName
    base_model: str = Field(min_length=1, max_length=500)
    method: Method = "sft"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    suffix: str | None = Field(default=None, min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    model_name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^\S(.*\S)?$",
                                   description="the name the registry registers the model as; default: the dataset's")


class Estimate(BaseModel):
    examples: int
    tokens_per_epoch: int
    epochs: int
    trained_tokens: int
    price_per_million_tokens: float
    cost_estimate: float
    budget_monthly_limit: float | None
    budget_spent: float
    budget_remaining: float | None
    within_budget: bool
    hyperparameters: dict[str, Any]


class MetricPointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    step: int
    epoch: float | None
    metrics: dict[str, float]


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    organization: str
    dataset_id: uuid.UUID
    export_version: int
    dataset_format: str
    provider: ProviderName
    base_model: str
    method: Method
    hyperparameters: dict[str, Any]
    suffix: str | None
    model_name: str | None
    export_ref: dict[str, Any] = Field(description="the export trained on, as DatasetExported described it")
    evaluation: dict[str, Any] | None = Field(description="on the export's validation split, once completed")
    status: Status
    job_id: str | None = Field(description="the provider's id for the job")
    provider_status: str | None
    training_metrics: dict[str, Any]
    resulting_model_id: str | None
    estimated_tokens: int
    epochs: int
    trained_tokens: int | None
    cost_estimate: float
    actual_cost: float | None
    error_message: str | None
    auto_launched: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    # Where files lie on the server is not the client's to see: the export by its API download URLs, a
    # local run's adapter as `store:<key>` (shared/downloads.py).
    @field_validator("export_ref")
    @classmethod
    def _export_downloads(cls, value):
        return public_export_ref(value)

    @field_validator("resulting_model_id")
    @classmethod
    def _stored_object(cls, value):
        return public_ref(value)

    @field_validator("training_metrics", "evaluation")
    @classmethod
    def _no_server_paths(cls, value):
        return public_refs(value)


class JobDetail(JobOut):
    loss_curve: list[dict[str, float]] = Field(description="[{step, loss}] in step order")
    metrics_history: list[MetricPointOut]


class JobPage(BaseModel):
    items: list[JobOut]


class JobEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    message: str
    data: dict[str, Any]
    created_at: datetime

    @field_validator("data")
    @classmethod
    def _no_server_paths(cls, value):
        return public_refs(value)


class BudgetSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A JSON number (cents at most), kept exact as a Decimal.
    monthly_limit: Annotated[Decimal, WithJsonSchema({"type": "number", "minimum": 0, "maximum": 10_000_000})] = Field(
        ge=0, le=10_000_000, decimal_places=2, description="US dollars per month")


class BudgetOut(BaseModel):
    organization: str
    monthly_limit: float | None
    spent_this_month: float
    remaining: float | None


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    actor: str
    action: str
    job_id: uuid.UUID | None
    details: dict[str, Any]
    at: datetime
