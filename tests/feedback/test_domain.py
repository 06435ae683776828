"""Review rules of the feedback service (pure, no I/O)."""

import pytest

from services.feedback.domain import (
    InvalidTag,
    ReviewState,
    apply_review,
    normalize_tags,
)

PENDING = ReviewState("pending", None, (), None)


def test_tags_are_trimmed_lowercased_and_deduplicated_in_order():
    assert normalize_tags([" Deploy", "ui", "deploy ", "UI", "billing"]) == ("deploy", "ui", "billing")


@pytest.mark.parametrize("bad", [["  "], ["x" * 65]])
def test_empty_or_long_tags_are_refused(bad):
    with pytest.raises(InvalidTag):
        normalize_tags(bad)


def test_review_applies_only_what_was_set():
    after = apply_review(PENDING, {"status": "approved", "tags": ["A"]})
    assert after == ReviewState("approved", None, ("a",), None)
    assert apply_review(after, {"notes": "n"}) == ReviewState("approved", None, ("a",), "n")


def test_none_clears_a_correction_but_never_the_status():
    corrected = apply_review(PENDING, {"correction": "better"})
    assert apply_review(corrected, {"correction": None}).correction is None
    assert apply_review(corrected, {"status": None}).status == "pending"


def test_the_same_values_again_are_no_change():
    approved = apply_review(PENDING, {"status": "approved"})
    assert apply_review(approved, {"status": "approved"}) == approved


def test_review_refuses_fields_that_are_not_review_state():
    with pytest.raises(ValueError, match="query"):
        apply_review(PENDING, {"query": "rewritten"})

