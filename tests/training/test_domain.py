"""The job state machine, provider status mapping and cost rules, without I/O."""

import pytest

from services.training import domain
from services.training.providers import bedrock, openai


@pytest.mark.parametrize(
    "current, target, allowed",
    [
        ("pending", "validating", True), ("validating", "training", True), ("queued", "completed", True),
        ("training", "queued", False), ("completed", "failed", False), ("cancelled", "training", False),
        ("failed", "cancelled", False), ("pending", "cancelled", True), ("training", "training", False),
    ],
)
def test_transitions(current, target, allowed):
    assert domain.can_transition(current, target) is allowed
    if not allowed:
        with pytest.raises(domain.IllegalTransition):
            domain.transition(current, target)


def test_provider_statuses_map_onto_one_state_machine():
    assert [openai.map_status(s) for s in ("validating_files", "queued", "running", "succeeded", "failed",
                                           "cancelled")] == ["validating", "queued", "training", "completed",
                                                             "failed", "cancelled"]
    assert [bedrock.map_status(s) for s in ("InProgress", "Completed", "Failed", "Stopping", "Stopped")] == [
        "training", "completed", "failed", "cancelled", "cancelled"]


def test_token_estimate_is_conservative_and_cost_scales_with_epochs():
    line = '{"messages": [{"role": "user", "content": "abcdef"}, {"role": "assistant", "content": "ghi"}]}'
    examples, tokens = domain.estimate_file_tokens([line, ""])
    assert examples == 1 and tokens == 3 + 2 * 4 + 3  # 9 chars / 3, two messages, one example
    one, three = domain.estimate_cost(1, 1_000_000, 1, 3.0), domain.estimate_cost(1, 1_000_000, 3, 3.0)
    assert (one.cost, three.cost) == (3.0, 9.0)


def test_openai_auto_epochs_follow_its_rule():
    assert [domain.openai_auto_epochs(n) for n in (10, 100, 20_000)] == [10, 3, 1]


def test_budget():
    domain.check_budget(5.0, None, 1000.0)
    domain.check_budget(5.0, 10.0, 5.0)
    with pytest.raises(domain.BudgetExceeded, match=r"\$5.01 exceeds the \$5.00 left"):
        domain.check_budget(5.01, 10.0, 5.0)


def test_a_local_launch_without_the_train_extra_names_the_install_command():
    from services.training.providers.huggingface import TRAIN_PACKAGES, missing_packages

    assert missing_packages() == []  # `make test` installs the train extra
    assert missing_packages((*TRAIN_PACKAGES, "no_such_trainer_lib")) == ["no_such_trainer_lib"]


def test_local_runs_cost_their_machine_hours_at_the_documented_default_prices():
    from services.training.settings import TrainingSettings

    fields = TrainingSettings.model_fields
    assert (fields["rlhf_local_cpu_hour_price"].default, fields["rlhf_local_gpu_hour_price"].default) == (0.50, 2.50)
    assert (fields["rlhf_local_tokens_per_hour"].default, fields["rlhf_local_device"].default) == (2_000_000, "cpu")
    settings = TrainingSettings(rlhf_local_cpu_hour_price=0.5, rlhf_local_gpu_hour_price=2.5,
                                rlhf_local_tokens_per_hour=2_000_000, rlhf_local_device="cpu")
    assert settings.local_price_per_million() == 0.25  # $0.50 an hour, two million tokens an hour
    assert domain.cost_of_hours(1.5, settings.local_hour_price("gpu")) == 3.75
    assert domain.cost_of_hours(90 / 3600, settings.local_hour_price("cpu")) == 0.0125
