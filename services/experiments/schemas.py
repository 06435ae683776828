"""HTTP shapes of the experiments API. Requests forbid unknown fields: no mass assignment. An
experiment's results are typed too (ExperimentResults, domain.analyse()'s output), and forbid
unknown fields as well: a field analyse() adds or renames fails its tests (tests/experiments/
test_results_schema.py) rather than vanishing from the answer, and the UI's types follow it."""

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.experiments.domain import ACTIONS, BUILTIN_METRICS, LATENCY_QUANTILE_GUARDRAILS, STATUSES, VARIANTS

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


# ---- results: domain.analyse() ------------------------------------------------------------------

# Pairs are arrays of two, not tuples (prefixItems): openapi-fetch's response types turn tuples into
# plain arrays, which the UI's types would then not accept.
Interval = Annotated[list[float | None], Field(min_length=2, max_length=2,
                                                description="a 95% interval: low, high (null: unbounded)")]


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantMean(_Result):
    n: int = Field(description="outcomes of this metric in the variant")
    mean: float = Field(description="the variant's mean (a share for rates, 1-5 for ratings)")


class MetricResult(_Result):
    metric: str
    kind: Literal["rate", "mean", "rating"]
    test: Literal["welch_t", "two_proportion_z", "mann_whitney_u"]
    sequential: bool = Field(description="always-valid interval and p-value (a confidence sequence)")
    higher_is_better: bool
    control: VariantMean
    treatment: VariantMean
    difference: float = Field(description="treatment's mean minus control's, in the metric's units")
    ci: Interval = Field(description="the difference's 95% interval")
    lift: float | None = Field(description="treatment's mean over control's, minus 1; null when control's is 0")
    lift_ci: Interval | None
    p_value: float
    statistic: float = Field(description="the test's statistic (t, z, or Mann-Whitney's U)")
    p_value_adjusted: float = Field(description="Holm-adjusted over the success metrics")
    significant: bool = Field(description="p_value_adjusted below alpha")
    min_effect: float | None


class GuardrailResult(_Result):
    """A guardrail on a metric: breached when treatment is worse by more than max_degradation (in the
    metric's units) with always-valid confidence."""

    metric: str
    max_degradation: float
    difference: float = Field(description="treatment minus control")
    ci: Interval
    breached: bool


class LatencyGuardrailControl(_Result):
    n: int = Field(description="control's answers in the latency sketch")
    p95: float | None
    p95_upper_bound: float | None = Field(description="an always-valid upper bound on control's p95, in ms "
                                          "(null with max_value, or too few answers)")


class LatencyGuardrailTreatment(_Result):
    n: int
    p95: float | None
    share_above_threshold: float | None = Field(description="treatment's share of answers above threshold_ms")


class LatencyGuardrailResult(_Result):
    """A guardrail on treatment's latency p95 (from the latency sketch): breached when more than
    max_share_above of treatment's answers take longer than threshold_ms, with always-valid confidence."""

    metric: Literal[tuple(LATENCY_QUANTILE_GUARDRAILS)]
    max_degradation: float = Field(description="relative to control's p95 (0.2: at most 20% above)")
    max_value: float | None = Field(description="an absolute limit in ms, instead of max_degradation")
    control: LatencyGuardrailControl
    treatment: LatencyGuardrailTreatment
    threshold_ms: float | None = Field(description="the latency treatment's answers are counted above; null "
                                       "while there is none yet")
    max_share_above: float
    difference: float | None = Field(description="treatment's p95 minus control's, in ms")
    breached: bool
    reason: str | None = Field(default=None, exclude_if=lambda v: v is None, description="why, when breached")


class UnitsPerVariant(_Result):
    control: int
    treatment: int


class SampleRatio(_Result):
    """The sample-ratio check: units per variant against the configured split (chi-square)."""

    units: UnitsPerVariant
    expected_shares: list[float] = Field(min_length=2, max_length=2,
                                         description="control's and treatment's configured shares")
    chi_square: float
    p_value: float
    mismatch: bool = Field(description="p_value below 0.001: the results cannot be trusted")


class LatencyPercentiles(_Result):
    p50: float | None
    p95: float | None
    p99: float | None


class LatencyPerVariant(_Result):
    control: LatencyPercentiles
    treatment: LatencyPercentiles


class Recommendation(_Result):
    winner: Winner
    action: Literal[tuple(ACTIONS.values())]
    reason: str


class ExperimentResults(_Result):
    """An experiment's analysis (domain.analyse()): live while it runs, stored when it ends."""

    metrics: list[MetricResult] = Field(description="per success metric; the first is the primary")
    guardrails: list[LatencyGuardrailResult | GuardrailResult]
    srm: SampleRatio
    latency_ms: LatencyPerVariant | None = Field(default=None, exclude_if=lambda v: v is None,
                                                 description="latency percentiles per variant, in ms; absent from "
                                                 "results stored before they were measured")
    recommendation: Recommendation
    sequential: bool
    alpha: float


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
    results: ExperimentResults | None = Field(description="stored at the end; live in GET /api/experiments/{id}; "
                                              "null before it starts")
    winner: Winner | None
    deploy_requested_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class ExperimentPage(BaseModel):
    items: list[ExperimentOut]
    next_cursor: str | None
