"""Pure rules of curation: the dataset lifecycle, bulk-pairing strategies, the quality report and
score, paging cursors. No I/O."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import errors
from shared.errors import Conflict, Invalid

DATASET_TYPES = ("preference_pairs", "instruction_tuning", "dpo")
STATUSES = ("draft", "curating", "ready", "exported", "archived")
STRATEGIES = ("correction", "thumbs", "rating")
RATING_SPAN = 4.0  # ratings run 1–5: a gap of 4 is the strongest preference

# Who may follow whom. `exported` is reached only by an export; `archived` is the end.
TRANSITIONS: dict[str, set[str]] = {
    "draft": {"curating", "ready", "archived"},
    "curating": {"draft", "ready", "archived"},
    "ready": {"curating", "archived"},
    "exported": {"curating", "ready", "archived"},
    "archived": set(),
}
EXPORTABLE = {"ready", "exported"}


class NotFound(errors.NotFound):
    """No such dataset / pair / export in the caller's organization (another organization's ids too)."""

    def __init__(self, what: str, ident: Any):
        super().__init__(f"{what} {ident} not found")


class ValidationFailed(errors.DomainError):
    """An export refused because the data fails blocking rules; carries the report (422)."""

    status, code = 422, "dataset_invalid"

    def __init__(self, report: dict):
        super().__init__("the dataset fails validation; fix the rules listed and export again", report=report)
        self.report = report

    def body(self) -> dict:
        failing = [r for r in self.report["rules"] if r["severity"] == "error" and r["count"]]
        errors = [{"field": f"rules.{r['rule']}", "message": f"{r['count']}: {r['message']}"} for r in failing]
        return super().body() | {"errors": errors}


def check_transition(current: str, target: str, *, sample_count: int) -> None:
    if target == current:
        return
    if target == "exported":
        raise Conflict("status 'exported' is set by an export (POST /api/training-datasets/{id}/export)")
    if target not in TRANSITIONS[current]:
        raise Conflict(f"a dataset cannot go from {current} to {target}")
    if target == "ready" and sample_count == 0:
        raise Conflict("an empty dataset cannot be ready: add samples first")


def status_after_content_change(current: str) -> str:
    """Changing what a ready or exported dataset holds puts it back in curation."""
    if current == "archived":
        raise Conflict("an archived dataset cannot be changed")
    return "curating" if current in ("ready", "exported") else current


def check_exportable(status: str, sample_count: int) -> None:
    if status not in EXPORTABLE:
        raise Conflict(f"a {status} dataset cannot be exported: mark it ready first (PATCH status=ready)")
    if sample_count == 0:
        raise Conflict("an empty dataset cannot be exported")


def check_member_kind(dataset_type: str, *, pairs: bool) -> None:
    if pairs and dataset_type == "instruction_tuning":
        raise Invalid("dataset_id", "an instruction_tuning dataset holds approved feedback items, not pairs")
    if not pairs and dataset_type != "instruction_tuning":
        raise Invalid("feedback_ids", f"a {dataset_type} dataset holds preference pairs, not feedback items")


@dataclass(frozen=True)
class RuleResult:
    rule: str
    severity: str  # "error" blocks an export; "warning" is reported (exact duplicates are dropped)
    count: int
    message: str
    examples: list[dict]


def quality_score(total: int, results: list[RuleResult], min_examples: int) -> float:
    """1.0 for a clean dataset; each affected row costs 1 (error) or ½ (warning) of its share, and a
    dataset below the provider's minimum is scaled down by how far short it falls."""
    if total == 0:
        return 0.0
    row_rules = [r for r in results if r.rule not in ("min_samples", "max_samples")]
    penalty = sum(r.count * (1.0 if r.severity == "error" else 0.5) for r in row_rules)
    score = max(0.0, 1.0 - penalty / total)
    return round(score * min(1.0, total / max(min_examples, 1)), 4)


def report(
    *, fmt: str | None, provider: str, total: int, results: list[RuleResult], min_examples: int, at: datetime
) -> dict:
    blocking = [r for r in results if r.severity == "error" and r.count]
    return {
        "format": fmt,
        "provider": provider,
        "sample_count": total,
        "passed": not blocking,
        "quality_score": quality_score(total, results, min_examples),
        "rules": [r.__dict__ for r in results],
        "validated_at": at.isoformat(),
    }


