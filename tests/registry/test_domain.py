"""The registry's pure rules: version numbers, serving shapes, the evaluation gate."""

import pytest

from services.registry import domain
from services.registry.domain import Policy, Version, gate, next_version, parse_version
from shared.errors import Invalid


def test_a_new_name_starts_at_1_0_0_and_fine_tunes_bump_minor_or_major():
    assert next_version(None, None, "llama") == Version(1, 0, 0)
    assert next_version(Version(1, 3, 2), "llama", "llama") == Version(1, 4, 0)
    assert next_version(Version(1, 3, 2), "llama", "mistral") == Version(2, 0, 0)


@pytest.mark.parametrize("text", ["1.0", "v1.0.0", "01.0.0", "1.0.0-rc1", "", "1.0.0.0", "a.b.c"])
def test_invalid_version_strings_are_refused(text):
    with pytest.raises(Invalid) as err:
        parse_version(text)
    assert err.value.field == "version"


def test_a_patch_may_only_raise_the_patch_number():
    domain.check_patch_bump(Version(1, 2, 0), Version(1, 2, 3))
    for wanted in (Version(1, 3, 0), Version(2, 2, 1), Version(1, 2, 0)):
        with pytest.raises(Invalid):
            domain.check_patch_bump(Version(1, 2, 0), wanted)


def test_serving_shapes():
    assert domain.check_serving({"kind": "openai", "model": "ft:gpt-4o-mini:x"}) == {"kind": "openai",
                                                                                     "model": "ft:gpt-4o-mini:x"}
    compatible = {"kind": "openai_compatible", "base_url": "https://vllm.internal/v1", "model": "m",
                  "api_key_env": "VLLM_API_KEY"}
    assert domain.check_serving(compatible) == compatible
    arn = "arn:aws:bedrock:us-east-1:123456789012:custom-model/anthropic.claude-3-haiku/abc"
    assert domain.check_serving({"kind": "bedrock", "model_arn": arn})["model_arn"] == arn
    local = {"kind": "local", "base_model": "/models/tiny", "adapter_url": "s3://bucket/adapters/x/"}
    assert domain.check_serving(local) == local


@pytest.mark.parametrize("serving, field", [
    ({"kind": "openai_compatible", "base_url": "ftp://host/v1", "model": "m"}, "serving.base_url"),
    ({"kind": "openai_compatible", "base_url": "file:///etc/passwd", "model": "m"}, "serving.base_url"),
    ({"kind": "openai_compatible", "base_url": "https://u:p@host/v1", "model": "m"}, "serving.base_url"),
    ({"kind": "openai_compatible", "base_url": "https://host/v1", "model": "m", "api_key": "sk-123"},
     "serving.api_key"),
    ({"kind": "openai_compatible", "base_url": "https://host/v1", "model": "m", "api_key_env": "sk-123"},
     "serving.api_key_env"),
    ({"kind": "bedrock", "model_arn": "not-an-arn"}, "serving.model_arn"),
    ({"kind": "local", "base_model": "x", "adapter_url": "https://host/adapter"}, "serving.adapter_url"),
    ({"kind": "openai"}, "serving.model"),
    ({"kind": "carrier-pigeon"}, "serving.kind"),
])
def test_bad_serving_names_the_field(serving, field):
    with pytest.raises(Invalid) as err:
        domain.check_serving(serving)
    assert err.value.field == field


def test_the_gate():
    good = {"preference_accuracy": 0.9, "eval_loss": 0.3, "leak_check": {"findings": 0}}
    assert gate(good, Policy()) == []
    assert gate(None, Policy()) == ["the version has no evaluation"]
    assert gate(None, Policy(require_evaluation=False)) == []
    strict = Policy(min_preference_accuracy=0.95, max_eval_loss=0.2, max_leak_findings=0)
    reasons = gate({**good, "leak_check": {"findings": 2}}, strict)
    assert len(reasons) == 3 and "preference accuracy 0.9" in reasons[0] and "2 leak findings" in reasons[2]
    # an OpenAI evaluation has no preference accuracy and no leak check: a policy asking for them refuses
    assert len(gate({"validation_loss": 0.1, "token_accuracy": 0.8}, strict)) == 2
