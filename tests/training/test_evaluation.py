"""Every job ends with an evaluation on the export's validation split, carried by JobCompleted with
the export version and the model's name: a local run's eval loss, preference accuracy and reward
margin (a tiny model trained here) and its leak check, which flags a planted verbatim answer;
OpenAI's validation loss and token accuracy; Bedrock's validation loss."""

import pytest

from shared.events import JobCompleted, JobStarted
from tests.support import envelope_of, of_org
from tests.training.conftest import export_dataset, trl_dpo_rows
from tests.training.test_bus import HAIKU, bedrock_job, finish_like_bedrock, job_detail, the_job

pytestmark = pytest.mark.asyncio

PLANTED = "Write to ops.lead@example.com, then open Deployments and the Status panel."


async def completed(kafka, org, timeout=300):
    records = await kafka.collect([JobCompleted.topic()], lambda rs: len(rs) >= 1, match=of_org(org),
                                  timeout=timeout)
    return envelope_of(records[0])["payload"]


@pytest.fixture(scope="module")
def memorizing_model():
    """A tiny Llama whose tokenizer knows the planted answer, so a short run learns it by heart."""
    from tests.training.tiny_model import make_tiny_llama, model_dir

    texts = [f"user: How do I check deployment {i}? assistant: {PLANTED}" for i in range(16)]
    return make_tiny_llama(model_dir("memorizing-llama"), texts)


async def test_a_local_dpo_job_reports_its_evaluation_with_real_numbers(stack, gateway, kafka, make_key, org,
                                                                       tiny_model):
    rows = trl_dpo_rows(16)
    policy = {"provider": "huggingface", "base_model": str(tiny_model), "method": "dpo",
              "hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate": 0.005, "max_length": 64}}
    exported = export_dataset(org, "trl_dpo", rows=rows[:12], validation=rows[12:], auto_train=policy)
    await kafka.send_event(exported, org)
    payload = await completed(kafka, org)
    evaluation = payload["evaluation"]
    assert evaluation["kind"] == "local" and evaluation["validation_examples"] == 4
    assert evaluation["eval_loss"] > 0 and 0 <= evaluation["preference_accuracy"] <= 1
    assert isinstance(evaluation["reward_margin"], float)
    assert evaluation["leak_check"]["samples"] == 16 and evaluation["leak_check"]["min_chars"] == 50
    assert payload["export_version"] == 1 and payload["model_name"] == "Support answers"  # the dataset's name
    assert payload["export"]["sha256"] == exported.sha256 and payload["export"]["manifest_url"] == exported.manifest_url
    assert payload["method"] == "dpo" and payload["hyperparameters"]["beta"] == 0.1
    job = await job_detail(gateway, await make_key(org, "viewer"), payload["job_id"])
    assert job["evaluation"] == evaluation and job["model_name"] == "Support answers"
    started = await kafka.collect([JobStarted.topic()], lambda rs: len(rs) >= 1, match=of_org(org))
    assert envelope_of(started[0])["payload"]["export_version"] == 1


async def test_the_leak_check_flags_a_planted_verbatim_answer(stack, kafka, org, memorizing_model):
    rows = [{"messages": [{"role": "user", "content": f"How do I check deployment {i}?"},
                          {"role": "assistant", "content": PLANTED}]} for i in range(16)]
    policy = {"provider": "huggingface", "base_model": str(memorizing_model), "method": "sft",
              "model_name": "support-bot",
              "hyperparameters": {"n_epochs": 20, "batch_size": 4, "learning_rate": 0.01, "max_length": 64,
                                  "lora_dropout": 0.0}}
    await kafka.send_event(export_dataset(org, "openai_sft", rows=rows[:12], validation=rows[12:],
                                          auto_train=policy), org)
    payload = await completed(kafka, org, timeout=600)
    assert payload["model_name"] == "support-bot"
    leak = payload["evaluation"]["leak_check"]
    assert leak["verbatim_findings"] >= 1 and leak["pii_findings"] >= 1 and leak["findings"] >= 1
    example = leak["examples"][0]
    assert example["verbatim_chars"] >= 50 and example["verbatim"] in PLANTED and "EMAIL" in example["pii"]
    assert payload["evaluation"]["eval_loss"] > 0 and "token_accuracy" in payload["evaluation"]


async def test_openai_reports_validation_loss_and_token_accuracy(stack, kafka, org, openai_fake):
    from tests.training.conftest import sft_rows

    rows = sft_rows(16)
    policy = {"provider": "openai", "base_model": "gpt-4o-mini-2024-07-18", "method": "sft",
              "hyperparameters": {"n_epochs": 1}}
    await kafka.send_event(export_dataset(org, "openai_sft", rows=rows[:12], validation=rows[12:],
                                          auto_train=policy), org)
    evaluation = (await completed(kafka, org))["evaluation"]
    assert evaluation["kind"] == "openai"
    assert evaluation["validation_loss"] > 0 and 0 < evaluation["token_accuracy"] <= 1
    assert openai_fake.violations == []


async def test_bedrock_reports_its_validation_loss(stack, gateway, kafka, make_key, org):
    from tests.training.conftest import bedrock_rows

    rows = bedrock_rows(16)
    policy = {"provider": "bedrock", "base_model": HAIKU, "method": "sft"}
    await kafka.send_event(export_dataset(org, "bedrock_claude", rows=rows[:12], validation=rows[12:],
                                          auto_train=policy), org)
    job = await the_job(gateway, await make_key(org, "viewer"), status={"training"})
    described = bedrock_job(job["job_id"])
    assert described.validation_data_config["validators"][0]["s3Uri"].endswith("/validation.jsonl")
    finish_like_bedrock(described, losses=[1.9, 1.2], validation_losses=[1.5, 1.3])
    assert (await completed(kafka, org))["evaluation"] == {"kind": "bedrock", "validation_loss": 1.3}
