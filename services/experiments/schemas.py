"""HTTP shapes of the experiments API. Requests forbid unknown fields: no mass assignment."""

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.experiments.domain import BUILTIN_METRICS, LATENCY_QUANTILE_GUARDRAILS, STATUSES, VARIANTS

METRICS = ", ".join(BUILTIN_METRICS)
Status = Literal[STATUSES]
Variant = Literal[VARIANTS]
Winner = Literal[(*VARIANTS, "inconclusive")]
LATENCY_GUARDRAILS = ", ".join(LATENCY_QUANTILE_GUARDRAILS)


class SuccessMetricIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description=f"one of {METRICS}; the first is the primary metric")
    min_effect: float | None = Field(default=None, ge=0, description="the smallest difference worth deploying")
    kind: Literal["mean", "rate"] | None = Field(default=None, description="a metric other services report "
                                                 "(OutcomeRecorded): how to test it")
    higher_is_better: bool | None = Field(default=None, description="a reported metric's direction (default true)")


class GuardrailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str = Field(description=f"one of {METRICS}, {LATENCY_GUARDRAILS} (treatment's latency "
                        "percentile, from the router's latency sketch), or a reported metric with its kind")
    max_degradation: float = Field(default=0.0, ge=0,
                                   description="how much worse treatment may be (metric units) before it is paused; "
                                   f"for {LATENCY_GUARDRAILS} relative to control's (0.2: at most 20% above)")
    max_value: float | None = Field(default=None, gt=0, description=f"for {LATENCY_GUARDRAILS} only: an "
                                    "absolute limit in ms on treatment's percentile, instead of max_degradation")
    kind: Literal["mean", "rate"] | None = None
    higher_is_better: bool | None = None


class ExperimentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    control_model_id: uuid.UUID
    treatment_model_id: uuid.UUID
    traffic_split: float = Field(default=0.5, ge=0, le=1, description="treatment's share of units")
    success_metrics: list[SuccessMetricIn] = Field(min_length=1, max_length=20)
    guardrails: list[GuardrailIn] = Field(default_factory=list, max_length=20)
    min_sample_size: int = Field(default=0, ge=0, le=2**31 - 1, description="outcomes per variant before any "
                                 "decision")
    sequential: bool = Field(default=True, description="always-valid intervals, safe to watch continuously")
    end_date: datetime | None = None
    start: bool = Field(default=True, description="false: created as a draft, started later")


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)


class ExtendBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    end_date: datetime | None = None
    min_sample_size: int | None = Field(default=None, ge=0, le=2**31 - 1)


class FullDeployBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variant: Literal["control", "treatment"] | None = Field(
        default=None, description="deploy this variant whatever the result (an admin's override)")
    reason: str | None = Field(default=None, max_length=2000)


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: str = Field(min_length=1, max_length=500, description="a user, session or account id")


class AssignOut(BaseModel):
    experiment_id: uuid.UUID
    unit: str
    variant: Variant
    model_version_id: uuid.UUID


class ExperimentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    organization: str
    name: str
    model_name: str
    control_model_id: uuid.UUID
    treatment_model_id: uuid.UUID
    traffic_split: float
    status: Status
    status_reason: str | None
    start_date: datetime | None
    end_date: datetime | None
    success_metrics: list[dict[str, Any]]
    guardrails: list[dict[str, Any]]
    min_sample_size: int
    sequential: bool
    results: dict[str, Any] | None = Field(description="stored at the end; live in GET /api/experiments/{id}")
    winner: Winner | None
    deploy_requested_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class ExperimentPage(BaseModel):
    items: list[ExperimentOut]
    next_cursor: str | None
