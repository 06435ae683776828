"""Pure rules of fine-tuning jobs: the state machine, which export formats each provider takes,
token and cost estimates, budgets. No I/O."""

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.errors import Conflict, DomainError, Invalid, NotFound

PENDING, VALIDATING, QUEUED, TRAINING = "pending", "validating", "queued", "training"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
STATUSES = (PENDING, VALIDATING, QUEUED, TRAINING, COMPLETED, FAILED, CANCELLED)
ACTIVE = (VALIDATING, QUEUED, TRAINING)  # at the provider, watched by the monitor
TERMINAL = (COMPLETED, FAILED, CANCELLED)

# The one state machine for every provider. A job may skip forward (a provider can report
# `running` the first time we look) but never go back, and a terminal state is final.
_ORDER = {PENDING: 0, VALIDATING: 1, QUEUED: 2, TRAINING: 3}


class JobNotFound(NotFound):
    """No such job in the caller's organization."""

    def __init__(self, job_id: Any):
        super().__init__(f"fine-tuning job {job_id} not found")


class DatasetNotFound(NotFound):
    """The organization has no such exported dataset version (DatasetExported not seen)."""

    code = "dataset_not_found"

    def __init__(self, dataset_id: Any, version: int | None = None):
        which = f"version {version} of dataset {dataset_id}" if version else f"dataset {dataset_id}"
        super().__init__(f"no export of {which} is known here (has it been exported?)", field="dataset_id")


class IllegalTransition(Conflict):
    """The job cannot move from its state to the one asked for (409)."""


class InvalidLaunch(Invalid):
    """A launch the provider would refuse: names the field and the reason (422)."""


class MissingCredentials(DomainError):
    """The provider is not configured on this deployment (503 would blame us; 424 names the gap)."""

    status, code = 424, "provider_not_configured"

    def __init__(self, message: str):
        super().__init__(message, field="provider")


class BudgetExceeded(DomainError):
    """The estimate is more than what is left of the organization's monthly budget (402)."""

    status, code = 402, "budget_exceeded"


def can_transition(current: str, target: str) -> bool:
    if current in TERMINAL or current == target:
        return False
    if target in TERMINAL:
        return True
    return _ORDER[target] > _ORDER[current]


def transition(current: str, target: str) -> str:
    if not can_transition(current, target):
        raise IllegalTransition(f"a {current} job cannot become {target}")
    return target


# Export format -> the (provider, method) pairs that accept it, per the providers' documents.
ACCEPTED_FORMATS: dict[tuple[str, str], tuple[str, ...]] = {
    ("openai", "sft"): ("openai_sft",),
    ("openai", "dpo"): ("openai_dpo",),
    ("bedrock", "sft"): ("bedrock_claude",),
    ("huggingface", "sft"): ("openai_sft",),
    ("huggingface", "dpo"): ("trl_dpo",),
}


def check_format(provider: str, method: str, export_format: str) -> None:
    accepted = ACCEPTED_FORMATS.get((provider, method))
    if not accepted:
        methods = sorted(m for p, m in ACCEPTED_FORMATS if p == provider)
        raise InvalidLaunch("method", f"{provider} does not train with {method}; it offers {', '.join(methods)}")
    if export_format not in accepted:
        everything = ", ".join(f"{m}: {'/'.join(f)}" for (p, m), f in sorted(ACCEPTED_FORMATS.items()) if p == provider)
        raise InvalidLaunch(
            "dataset",
            f"the dataset version is exported as {export_format!r}; {provider} {method} accepts "
            f"{' or '.join(accepted)} (all {provider} formats: {everything})",
        )


# Tokens: a conservative estimate without a tokenizer (tiktoken needs data downloaded at run
# time). English BPE averages ~4 characters per token; counting one per 3 characters, plus the
# 4-token framing OpenAI's cookbook adds per message and 3 per example, over-estimates on purpose,
# so a budget check errs on the side of refusing.
CHARS_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 4
TOKENS_PER_EXAMPLE = 3


def _texts(value) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, inner in value.items():
            if key in ("role", "weight", "name"):
                continue
            yield from _texts(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _texts(inner)


def _messages(value) -> int:
    if isinstance(value, dict):
        return ("content" in value) + sum(_messages(v) for v in value.values())
    if isinstance(value, list):
        return sum(_messages(v) for v in value)
    return 0


def estimate_example_tokens(example: dict) -> int:
    chars = sum(len(t) for t in _texts(example))
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * _messages(example) + TOKENS_PER_EXAMPLE


def estimate_file_tokens(lines: Iterable[str | bytes]) -> tuple[int, int]:
    """(examples, tokens) of a JSON-lines training file."""
    examples = tokens = 0
    for line in lines:
        if not line.strip():
            continue
        examples += 1
        tokens += estimate_example_tokens(json.loads(line))
    return examples, tokens


def openai_auto_epochs(examples: int) -> int:
    """What OpenAI picks for n_epochs="auto" (its cookbook's rule): 3, raised for tiny sets and
    lowered for big ones so a run sees between 100 and 25,000 examples."""
    target, low, high, max_epochs = 3, 100, 25_000, 25
    if examples and examples * target < low:
        return min(max_epochs, math.ceil(low / examples))
    if examples * target > high:
        return max(1, high // examples)
    return target


@dataclass(frozen=True)
class CostEstimate:
    examples: int
    tokens_per_epoch: int
    epochs: int
    price_per_million: float
    cost: float

    @property
    def trained_tokens(self) -> int:
        return self.tokens_per_epoch * self.epochs


def estimate_cost(examples: int, tokens_per_epoch: int, epochs: int, price_per_million: float) -> CostEstimate:
    cost = round(tokens_per_epoch * epochs * price_per_million / 1_000_000, 4)
    return CostEstimate(examples, tokens_per_epoch, epochs, price_per_million, cost)


def cost_of_tokens(trained_tokens: int, price_per_million: float) -> float:
    return round(trained_tokens * price_per_million / 1_000_000, 4)


def cost_of_hours(hours: float, hour_price: float) -> float:
    """A local run: the machine's hours (CPU or GPU) at its hourly price."""
    return round(max(hours, 0.0) * hour_price, 4)


def month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def budget_remaining(limit: float | None, spent: float) -> float | None:
    """What is left of a monthly limit (None: no limit)."""
    return None if limit is None else max(0.0, limit - spent)


def within_budget(estimate: float, limit: float | None, spent: float) -> bool:
    left = budget_remaining(limit, spent)
    return left is None or estimate <= left


def check_budget(estimate: float, limit: float | None, spent: float) -> None:
    if not within_budget(estimate, limit, spent):
        left = budget_remaining(limit, spent)
        raise BudgetExceeded(
            f"estimated cost ${estimate:.2f} exceeds the ${left:.2f} left of this month's "
            f"${limit:.2f} fine-tuning budget (${spent:.2f} spent or committed)"
        )


def progress_percent(step: int | None, total: int | None) -> float | None:
    if not step or not total:
        return None
    return round(min(100.0, 100.0 * step / total), 1)


# What a provider measures on the validation file, under the names the registry's deploy policy
# reads: OpenAI's metrics events carry valid_loss / valid_mean_token_accuracy every few steps and
# full_valid_* at the end; Bedrock writes validation_loss (read by its provider at completion).
PROVIDER_EVALUATION_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "openai": {"validation_loss": ("full_valid_loss", "valid_loss"),
               "token_accuracy": ("full_valid_mean_token_accuracy", "valid_mean_token_accuracy")},
    "bedrock": {"validation_loss": ("validation_loss",)},
}


def provider_evaluation(provider: str, metrics: dict[str, float], has_validation: bool) -> dict[str, Any] | None:
    """A remote job's evaluation from its metrics; None when it had no validation split to measure."""
    keys = PROVIDER_EVALUATION_KEYS.get(provider)
    if keys is None or not has_validation:
        return None
    evaluation: dict[str, Any] = {"kind": provider}
    for ours, theirs in keys.items():
        value = next((metrics[k] for k in theirs if isinstance(metrics.get(k), int | float)), None)
        if value is not None:
            evaluation[ours] = float(value)
    return evaluation
