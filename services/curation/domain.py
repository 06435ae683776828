"""Pure rules of curation: the commands its handlers take, the dataset lifecycle, what an export
reads and writes (ExportPlan), the quality report and score. No I/O."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.curation import formats
from shared import errors
from shared.errors import Conflict, Invalid

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
DEFAULT_FORMAT = {"instruction_tuning": "openai_sft", "preference_pairs": "jsonl", "dpo": "jsonl"}
DATASET_SETTINGS = ("name", "description", "system_prompt", "validation_ratio", "split_seed", "export_format",
                    "auto_train")
SPLIT_SETTINGS = {"system_prompt", "validation_ratio", "split_seed"}  # what an export writes depends on these
PAIR_TEXTS = ("query", "chosen_response", "rejected_response", "preference_strength", "context_documents")


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


# ---------------------------------------------------------------------------------------------
# Commands: what the handlers are asked to do, typed (api.py builds them from the HTTP bodies)


@dataclass(frozen=True)
class CreateDataset:
    name: str
    dataset_type: str
    description: str | None = None
    feedback_ids: list[uuid.UUID] = field(default_factory=list)  # an instruction dataset's members
    system_prompt: str | None = None
    validation_ratio: float = 0.1
    split_seed: int = 0
    export_format: str | None = None
    auto_train: dict[str, Any] | None = None
    curator_email: str | None = None


@dataclass(frozen=True)
class ChangeDataset:
    """A partial update: only the fields in `given` change (a given None clears a field)."""

    given: frozenset[str]
    name: str | None = None
    description: str | None = None
    status: str | None = None
    feedback_ids: list[uuid.UUID] | None = None
    add_feedback_ids: list[uuid.UUID] | None = None
    remove_feedback_ids: list[uuid.UUID] | None = None
    system_prompt: str | None = None
    validation_ratio: float | None = None
    split_seed: int | None = None
    export_format: str | None = None
    auto_train: dict[str, Any] | None = None

    def settings(self) -> dict[str, Any]:
        """The given plain settings (name, description, split, format …), by name; the name and the
        split's ratio and seed cannot be cleared."""
        settings = {name: getattr(self, name) for name in DATASET_SETTINGS if name in self.given}
        for name in ("name", "validation_ratio", "split_seed"):
            if name in settings and settings[name] is None:
                raise Invalid(name, f"{name} cannot be cleared")
        return settings


@dataclass(frozen=True)
class CreatePair:
    dataset_id: uuid.UUID
    query: str
    chosen_response: str
    rejected_response: str
    preference_strength: float = 1.0
    context_documents: list[Any] = field(default_factory=list)
    annotator_email: str | None = None
    annotation_notes: str | None = None
    source_feedback_ids: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class ChangePair:
    """A partial update: only the fields in `given` change."""

    given: frozenset[str]
    query: str | None = None
    chosen_response: str | None = None
    rejected_response: str | None = None
    preference_strength: float | None = None
    context_documents: list[Any] | None = None
    annotator_email: str | None = None
    annotation_notes: str | None = None

    def changes(self) -> dict[str, Any]:
        """The given fields by name; the texts and the strength cannot be cleared."""
        changes = {name: getattr(self, name) for name in sorted(self.given)}
        for name, value in changes.items():
            if value is None and name in PAIR_TEXTS:
                raise Invalid(name, f"{name} cannot be cleared")
        return changes


@dataclass(frozen=True)
class PairFeedback:
    """Make pairs from the feedback curation has seen, by named strategies (STRATEGIES)."""

    dataset_id: uuid.UUID
    strategies: list[str]
    feedback_ids: list[uuid.UUID] | None = None
    tags: list[str] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    approved_only: bool = False
    max_pairs_per_query: int = 10
    min_rating_gap: float = 1
    annotator_email: str | None = None


@dataclass(frozen=True)
class ExportDataset:
    dataset_id: uuid.UUID
    format: str
    validation_ratio: float | None = None  # None: the dataset's own
    split_seed: int | None = None  # None: the dataset's own


# ---------------------------------------------------------------------------------------------
# The dataset lifecycle


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


def check_recordable(status: str) -> None:
    """An export's version is recorded unless the dataset was archived while it ran."""
    if status == "archived":
        raise Conflict("the dataset was archived during the export")

def check_member_kind(dataset_type: str, *, pairs: bool) -> None:
    if pairs and dataset_type == "instruction_tuning":
        raise Invalid("dataset_id", "an instruction_tuning dataset holds approved feedback items, not pairs")
    if not pairs and dataset_type != "instruction_tuning":
        raise Invalid("feedback_ids", f"a {dataset_type} dataset holds preference pairs, not feedback items")


def check_changeable(status: str) -> None:
    if status == "archived":
        raise Conflict("an archived dataset cannot be changed")


def check_archivable(status: str, sample_count: int) -> None:
    check_transition(status, "archived", sample_count=sample_count)
    if status == "archived":
        raise Conflict("the dataset is already archived")


def new_members(dataset_type: str, current: list[uuid.UUID], change: ChangeDataset) -> list[uuid.UUID] | None:
    """An instruction dataset's members after `change` (None when it does not touch them): replaced,
    added to, removed from, without repeats, in the order given."""
    if change.feedback_ids is None and change.add_feedback_ids is None and change.remove_feedback_ids is None:
        return None
    check_member_kind(dataset_type, pairs=False)
    members = list(change.feedback_ids if change.feedback_ids is not None else current)
    members += change.add_feedback_ids or []
    removed = set(change.remove_feedback_ids or [])
    return [m for m in dict.fromkeys(members) if m not in removed]


def check_format(fmt: str, dataset_type: str) -> None:
    try:
        formats.check_format(fmt, dataset_type)
    except formats.UnsupportedFormat as exc:
        raise Invalid("format", str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# Validation and export


@dataclass(frozen=True)
class ExportPlan:
    """One pass over a dataset's examples, decided before it starts: which examples (the dataset as
    its snapshot shows it), how they are split and shaped, and whether files are written (an export)
    or not (a validation, which checks every line against the provider's rules instead)."""

    organization: str
    dataset_id: uuid.UUID
    name: str
    dataset_type: str
    members: tuple[uuid.UUID, ...]  # an instruction dataset's feedback ids (a pair dataset's pairs are its own)
    sample_count: int
    content_version: int
    fmt: str
    system_prompt: str | None
    validation_ratio: float
    split_seed: int
    max_bytes: int | None  # an example's limit in UTF-8 bytes (the too_long rule); None: no limit
    version: int  # the export version the files are written as
    validation_only: bool = False

    @property
    def prefix(self) -> str:
        """Where the version's files go in the object store."""
        return f"datasets/{self.organization}/{self.dataset_id}/v{self.version}"

    @property
    def rules(self) -> formats.ProviderRules:
        return formats.RULES[self.fmt]


def plan_export(dataset: dict[str, Any], command: ExportDataset) -> ExportPlan:
    """An export of `dataset` (a row of training_datasets) as the next version, if it may be exported."""
    check_format(command.format, dataset["dataset_type"])
    check_exportable(dataset["status"], dataset["sample_count"])
    ratio = dataset["validation_ratio"] if command.validation_ratio is None else command.validation_ratio
    seed = dataset["split_seed"] if command.split_seed is None else command.split_seed
    return _plan(dataset, command.format, ratio, seed, version=dataset["export_version"] + 1)


def plan_validation(dataset: dict[str, Any], fmt: str | None) -> ExportPlan:
    """A validation of `dataset` for `fmt` (by default its export format, else its type's default)."""
    fmt = fmt or dataset["export_format"] or DEFAULT_FORMAT[dataset["dataset_type"]]
    check_format(fmt, dataset["dataset_type"])
    return _plan(dataset, fmt, dataset["validation_ratio"], dataset["split_seed"], version=dataset["export_version"],
                 validation_only=True)


def _plan(dataset: dict[str, Any], fmt: str, ratio: float, seed: int, *, version: int,
          validation_only: bool = False) -> ExportPlan:
    limit = formats.RULES[fmt].max_tokens_per_example
    system_bytes = len((dataset["system_prompt"] or "").encode())
    return ExportPlan(
        organization=dataset["organization"], dataset_id=dataset["id"], name=dataset["name"],
        dataset_type=dataset["dataset_type"],
        members=tuple(dataset["feedback_ids"]) if dataset["dataset_type"] == "instruction_tuning" else (),
        sample_count=dataset["sample_count"], content_version=dataset["content_version"], fmt=fmt,
        system_prompt=dataset["system_prompt"], validation_ratio=ratio, split_seed=seed,
        max_bytes=limit * formats.BYTES_PER_TOKEN - system_bytes if limit else None, version=version,
        validation_only=validation_only,
    )


@dataclass(frozen=True)
class Findings:
    """What one pass over a dataset's examples found: the row rules counted while the examples went
    by (with their first examples), the rows of each split, and the duplicate searches' groups."""

    rule_counts: dict[str, int]  # empty_field, chosen_equals_rejected, too_long
    rule_examples: dict[str, list[dict]]
    rows: dict[str, int]  # distinct examples per split
    duplicates: list[dict]  # groups of identical examples: ids (the first is the one exported), prompt
    near_duplicates: list  # groups equal up to case, spacing and punctuation: ids, distinct_examples, prompt
    line_failure_count: int = 0  # validation: lines the provider's rules reject
    line_failures: list[dict] = field(default_factory=list)

    @property
    def distinct(self) -> int:
        return self.rows["train"] + self.rows["validation"]

    @property
    def duplicates_dropped(self) -> int:
        return sum(len(d["ids"]) - 1 for d in self.duplicates)

    @property
    def total(self) -> int:
        return self.distinct + self.duplicates_dropped


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


def rule_results(plan: ExportPlan, found: Findings) -> list[RuleResult]:
    """The quality report's rules, from what a pass over the examples found."""
    rules, counts, examples = plan.rules, found.rule_counts, found.rule_examples
    train_rows, validation_rows = found.rows["train"], found.rows["validation"]
    near = found.near_duplicates
    results = [
        RuleResult("empty_field", "error", counts["empty_field"],
                   "prompt, chosen or rejected is empty or only whitespace", examples["empty_field"]),
        RuleResult("chosen_equals_rejected", "error", counts["chosen_equals_rejected"],
                   "the chosen answer is the rejected one", examples["chosen_equals_rejected"]),
        RuleResult("exact_duplicate", "warning", found.duplicates_dropped, "identical examples; each is exported once",
                   found.duplicates[:3]),
        RuleResult("near_duplicate", "warning", sum(g["distinct_examples"] - 1 for g in near),
                   "examples equal up to case, spacing and punctuation",
                   [{"ids": g["ids"], "prompt": g["prompt"]} for g in near[:3]]),
        # the side of the split is a function of the prompt key: no prompt can be on both sides
        RuleResult("split_overlap", "error", 0, "prompts found in both the train and validation splits", []),
        RuleResult("too_long", "error", counts["too_long"],
                   f"over {rules.max_tokens_per_example} estimated tokens (UTF-8 bytes / {formats.BYTES_PER_TOKEN}) "
                   f"per example for {rules.provider}", examples["too_long"]),
        RuleResult("min_samples", "error", int(found.distinct < rules.min_examples),
                   f"{rules.provider} needs at least {rules.min_examples} examples; there are {found.distinct}", []),
    ]
    if rules.max_train_examples:
        over = train_rows > rules.max_train_examples or validation_rows > (rules.max_validation_examples or 0)
        results.append(RuleResult(
            "max_samples", "error", int(over),
            f"{rules.provider} takes at most {rules.max_train_examples} training and {rules.max_validation_examples} "
            f"validation examples; the split gives {train_rows} and {validation_rows}", [],
        ))
    if plan.validation_only:
        results.append(RuleResult("provider_schema", "error", found.line_failure_count,
                                  f"lines the {plan.fmt} format's rules reject", found.line_failures))
    return results


def report(plan: ExportPlan, found: Findings, *, at: datetime) -> dict:
    """The quality report: every rule's result, whether the blocking ones pass, and the score. A
    validation counts the dataset's samples; an export, the examples its snapshot held."""
    results = rule_results(plan, found)
    total = plan.sample_count if plan.validation_only else found.total
    blocking = [r for r in results if r.severity == "error" and r.count]
    return {
        "format": plan.fmt,
        "provider": plan.rules.provider,
        "sample_count": total,
        "passed": not blocking,
        "quality_score": quality_score(total, results, plan.rules.min_examples),
        "rules": [r.__dict__ for r in results],
        "validated_at": at.isoformat(),
    }
