"""Pure rules of feedback review. No I/O."""

from dataclasses import dataclass, replace
from typing import Any

from shared.errors import NotFound
from shared.tags import InvalidTag as InvalidTag  # the tag rule is shared: curation filters feedback by tags
from shared.tags import normalize_tags

ACTION_STATUS = {"approve": "approved", "reject": "rejected"}
REVIEW_FIELDS = ("status", "correction", "tags", "notes")


class FeedbackNotFound(NotFound):
    """No such feedback in the caller's organization (another organization's ids included)."""

    def __init__(self, feedback_id: Any):
        super().__init__(f"feedback {feedback_id} not found")


@dataclass(frozen=True)
class ReviewState:
    status: str
    correction: str | None
    tags: tuple[str, ...]
    notes: str | None


def apply_review(current: ReviewState, changes: dict[str, Any]) -> ReviewState:
    """The state after a review; `changes` holds only the fields the reviewer set (None clears)."""
    unknown = set(changes) - set(REVIEW_FIELDS)
    if unknown:
        raise ValueError(f"not review fields: {sorted(unknown)}")
    updates = dict(changes)
    if "tags" in updates:
        updates["tags"] = normalize_tags(updates["tags"] or [])
    if "status" in updates and updates["status"] is None:
        updates.pop("status")
    return replace(current, **updates)

