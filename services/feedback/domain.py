"""Pure rules of feedback review. No I/O."""

from dataclasses import dataclass, replace
from typing import Any

from shared.errors import Invalid, NotFound

ACTION_STATUS = {"approve": "approved", "reject": "rejected"}
MAX_TAG_LENGTH = 64
REVIEW_FIELDS = ("status", "correction", "tags", "notes")


class FeedbackNotFound(NotFound):
    """No such feedback in the caller's organization (another organization's ids included)."""

    def __init__(self, feedback_id: Any):
        super().__init__(f"feedback {feedback_id} not found")


class InvalidTag(Invalid):
    def __init__(self, message: str):
        super().__init__("tags", message)


@dataclass(frozen=True)
class ReviewState:
    status: str
    correction: str | None
    tags: tuple[str, ...]
    notes: str | None


def normalize_tags(tags: list[str]) -> tuple[str, ...]:
    """Tags are trimmed, lower-cased and de-duplicated, keeping the order given."""
    out: dict[str, None] = {}
    for tag in tags:
        clean = tag.strip().lower()
        if not clean:
            raise InvalidTag("tags must not be empty")
        if len(clean) > MAX_TAG_LENGTH:
            raise InvalidTag(f"tag longer than {MAX_TAG_LENGTH} characters: {clean[:20]}...")
        out[clean] = None
    return tuple(out)


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

