"""Curation's pure rules, without I/O: what an export or a validation will do (ExportPlan), who may
change a dataset's members, what a partial update may clear, and the quality report."""

import uuid
from datetime import UTC, datetime

import pytest

from services.curation import domain


def dataset(**overrides):
    row = dict(id=uuid.uuid4(), organization="org-a", name="Ops", dataset_type="dpo", status="ready",
               sample_count=40, content_version=3, export_version=2, export_format=None, system_prompt="Be brief.",
               validation_ratio=0.1, split_seed=0, feedback_ids=[])
    return row | overrides


def test_an_export_is_planned_as_the_next_version_with_the_dataset_s_split_unless_asked_otherwise():
    row = dataset()
    plan = domain.plan_export(row, domain.ExportDataset(row["id"], "openai_dpo"))
    assert (plan.version, plan.validation_ratio, plan.split_seed, plan.validation_only) == (3, 0.1, 0, False)
    assert plan.prefix == f"datasets/org-a/{row['id']}/v3"
    assert plan.max_bytes == 65_536 * 3 - len("Be brief.")  # the system prompt takes its share of each example
    other = domain.plan_export(row, domain.ExportDataset(row["id"], "trl_dpo", validation_ratio=0.2, split_seed=7))
    assert (other.validation_ratio, other.split_seed, other.max_bytes) == (0.2, 7, None)


def test_an_export_is_refused_before_anything_is_read():
    row = dataset()
    with pytest.raises(domain.Invalid) as bad_format:
        domain.plan_export(row, domain.ExportDataset(row["id"], "csv"))
    assert bad_format.value.field == "format"
    with pytest.raises(domain.Conflict):
        domain.plan_export(dataset(status="draft"), domain.ExportDataset(row["id"], "jsonl"))
    with pytest.raises(domain.Invalid):  # one answer per prompt cannot make preference lines
        domain.plan_export(dataset(dataset_type="instruction_tuning"), domain.ExportDataset(row["id"], "trl_dpo"))


def test_a_validation_writes_nothing_and_defaults_to_the_dataset_s_format():
    plan = domain.plan_validation(dataset(status="draft", export_format="bedrock_claude"), None)
    assert (plan.fmt, plan.validation_only, plan.version) == ("bedrock_claude", True, 2)
    members = [uuid.uuid4(), uuid.uuid4()]
    plan = domain.plan_validation(dataset(dataset_type="instruction_tuning", feedback_ids=members), None)
    assert (plan.fmt, plan.members) == ("openai_sft", tuple(members))


def test_members_are_replaced_added_and_removed_without_repeats():
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    change = domain.ChangeDataset(given=frozenset({"add_feedback_ids", "remove_feedback_ids"}),
                                  add_feedback_ids=[c, a], remove_feedback_ids=[b])
    assert domain.new_members("instruction_tuning", [a, b], change) == [a, c]
    assert domain.new_members("instruction_tuning", [a], domain.ChangeDataset(given=frozenset({"name"}))) is None
    with pytest.raises(domain.Invalid):
        domain.new_members("dpo", [], domain.ChangeDataset(given=frozenset({"feedback_ids"}), feedback_ids=[a]))


def test_a_pair_s_texts_cannot_be_cleared_but_its_notes_can():
    assert domain.ChangePair(given=frozenset({"annotation_notes"})).changes() == {"annotation_notes": None}
    with pytest.raises(domain.Invalid) as cleared:
        domain.ChangePair(given=frozenset({"chosen_response"})).changes()
    assert cleared.value.field == "chosen_response"


def test_the_report_counts_duplicates_and_blocks_on_errors():
    plan = domain.plan_export(dataset(), domain.ExportDataset(uuid.uuid4(), "openai_dpo"))
    found = domain.Findings(
        rule_counts={"empty_field": 0, "chosen_equals_rejected": 1, "too_long": 0},
        rule_examples={"empty_field": [], "chosen_equals_rejected": [{"id": "x", "prompt": "p"}], "too_long": []},
        rows={"train": 30, "validation": 5}, duplicates=[{"ids": ["a", "b", "c"], "prompt": "p"}], near_duplicates=[],
    )
    report = domain.report(plan, found, at=datetime.now(UTC))
    rules = {r["rule"]: r for r in report["rules"]}
    assert report["sample_count"] == 37 and rules["exact_duplicate"]["count"] == 2
    assert not report["passed"] and rules["chosen_equals_rejected"]["count"] == 1
    assert "provider_schema" not in rules  # an export's lines are built to the provider's structure
