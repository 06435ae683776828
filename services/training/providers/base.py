"""What every provider offers the service: validate a launch before anything is sent, submit a
job, poll it for status and metrics from a saved cursor, cancel it. One module per provider."""

from dataclasses import dataclass, field
from typing import Any, Protocol

from services.training.domain import InvalidLaunch
from services.training.settings import TrainingSettings
from shared.errors import DomainError


class ProviderError(DomainError):
    """The provider refused or failed the request; `transient` errors are worth retrying."""

    status, code = 503, "provider_unavailable"

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message, headers={"Retry-After": "10"})
        self.transient = transient


@dataclass(frozen=True)
class JobSpec:
    """What a provider needs to start a job; files are read from the object store by URL."""

    job_id: str
    organization: str
    base_model: str
    method: str
    hyperparameters: dict[str, Any]
    training_url: str
    validation_url: str | None
    suffix: str | None


@dataclass(frozen=True)
class Submission:
    provider_job_id: str
    provider_status: str
    status: str  # ours


@dataclass(frozen=True)
class MetricPoint:
    step: int
    values: dict[str, float]
    epoch: float | None = None


@dataclass
class Snapshot:
    """One look at a job: its status (ours and the provider's), metrics since the cursor, the new cursor."""

    provider_status: str
    status: str
    cursor: dict[str, Any]
    points: list[MetricPoint] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    total_steps: int | None = None
    epoch: float | None = None
    trained_tokens: int | None = None
    resulting_model_id: str | None = None
    error: str | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None  # a local run's own evaluation (see worker.py)


class Provider(Protocol):
    name: str
    local: bool  # runs on this machine (cost 0, capacity-limited)

    def models(self, settings: TrainingSettings) -> list[str] | None:
        """Base models this provider fine-tunes; None when any model passing `check_model` will do."""

    def check_model(self, base_model: str, settings: TrainingSettings) -> str | None:
        """Raises InvalidLaunch for a model the provider cannot fine-tune; may return the name the job
        stores it by (None: as given)."""

    def normalize_hyperparameters(self, method: str, given: dict[str, Any]) -> dict[str, Any]:
        """Checks ranges (InvalidLaunch naming the field) and returns the values that will be sent."""

    def epochs(self, hyperparameters: dict[str, Any], examples: int) -> int:
        """How many passes over the data the job will make (for the cost estimate)."""

    def check_credentials(self, settings: TrainingSettings) -> None:
        """Raises MissingCredentials when this deployment cannot reach the provider."""

    async def submit(self, job: JobSpec, settings: TrainingSettings) -> Submission: ...

    async def poll(self, provider_job_id: str, cursor: dict[str, Any], settings: TrainingSettings) -> Snapshot: ...

    async def cancel(self, provider_job_id: str, settings: TrainingSettings) -> None: ...


def check_range(hp: dict[str, Any], name: str, low: float, high: float, *, integer: bool,
                low_open: bool = False) -> None:
    """InvalidLaunch unless hp[name] (when given) is a number in [low, high] ((low, high] if low_open)."""
    if name not in hp or hp[name] in (None, "auto"):
        return
    value = hp[name]
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InvalidLaunch(f"hyperparameters.{name}", f"{name} must be {'an integer' if integer else 'a number'}")
    below = value <= low if low_open else value < low
    if below or value > high:
        bracket = "(" if low_open else "["
        raise InvalidLaunch(f"hyperparameters.{name}", f"{name} must be in {bracket}{low}, {high}]; got {value}")


def reject_unknown(hp: dict[str, Any], allowed: set[str], provider: str) -> None:
    unknown = sorted(set(hp) - allowed)
    if unknown:
        raise InvalidLaunch(
            f"hyperparameters.{unknown[0]}",
            f"{provider} does not take {', '.join(unknown)}; it takes {', '.join(sorted(allowed))}",
        )
