"""Pure rules of feedback review. No I/O."""

from dataclasses import dataclass, replace
from typing import Any

from shared.errors import Invalid, NotFound
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



class UnknownResponse(Invalid):
    """Feedback without its text whose response id is not (or no longer) known, or that has neither."""

    def __init__(self, response_id: str | None, missing: str, index: int | None):
        prefix = f"items.{index}." if index is not None else ""
        if response_id:
            field, message = "response_id", (f"response {response_id} is not known (served answers are kept for "
                                             "a while): send query and response with it")
        else:
            field, message = missing, f"{missing} is required unless response_id names an answer the router served"
        super().__init__(prefix + field, message)


def question_of(messages: list[dict[str, Any]]) -> str:
    """What was asked: the last user message's text (text parts of a multi-part message joined)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            if content:
                return str(content)
    return "(no user message)"
