"""The training service as a real process on the real broker, against the providers' local
stand-ins: DatasetExported with an auto-train policy -> a job at the provider -> JobCompleted on
rlhf.job.completed.v1, the loss curve over HTTP through the gateway; cancel; budgets."""

import csv
import io
import json

import boto3
import psutil
import pytest

from shared.events import JobCompleted, JobFailed
from shared.objectstore import default_store
from tests.support import envelope_of, eventually, of_org
from tests.training.conftest import export_dataset

pytestmark = pytest.mark.asyncio

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0:200k"
ACCOUNT, REGION = "123456789012", "us-east-1"


async def the_job(gateway, key, status=None):
    async def check():
        items = (await gateway.get("/api/fine-tuning/jobs", headers=key)).json()["items"]
        return items[0] if items and (status is None or items[0]["status"] in status) else None

    return await eventually(check, timeout=120)


async def completed_event(kafka, org):
    records = await kafka.collect([JobCompleted.topic()], lambda rs: len(rs) >= 1, match=of_org(org), timeout=180)
    return envelope_of(records[0])


async def job_detail(gateway, key, job_id):
    return (await gateway.get(f"/api/fine-tuning/jobs/{job_id}", headers=key)).json()


async def test_openai_auto_train_to_job_completed(stack, gateway, kafka, make_key, org, openai_fake):
    policy = {"provider": "openai", "base_model": "gpt-4o-mini-2024-07-18", "method": "dpo",
              "hyperparameters": {"n_epochs": 2, "beta": 0.5, "learning_rate_multiplier": 0.3}}
    await kafka.send_event(export_dataset(org, "openai_dpo", auto_train=policy), org)
    envelope = await completed_event(kafka, org)
    key = await make_key(org, "viewer")
    job = await job_detail(gateway, key, envelope["payload"]["job_id"])
    assert job["status"] == "completed" and job["auto_launched"] and job["created_by"] == "auto-train"
    assert job["resulting_model_id"].startswith("ft:gpt-4o-mini")
    assert envelope["payload"]["resulting_model_id"] == job["resulting_model_id"]
    steps = [p["step"] for p in job["loss_curve"]]
    assert steps == list(range(1, 9))  # 2 epochs x 4 steps, each seen once
    assert job["loss_curve"][-1]["loss"] < job["loss_curve"][0]["loss"]
    assert job["actual_cost"] > 0 and envelope["payload"]["actual_cost"] == job["actual_cost"]
    sent = openai_fake.job_for(job["id"])
    assert sent.method == {"type": "dpo", "dpo": {"hyperparameters": policy["hyperparameters"]}}
    events = (await gateway.get(f"/api/fine-tuning/jobs/{job['id']}/events", headers=key)).json()
    assert any("checkpoint" in e["message"] for e in events)
    assert openai_fake.violations == []


async def test_openai_failure_on_demand_fails_the_job_with_the_providers_message(
    stack, gateway, kafka, make_key, org, openai_fake
):
    policy = {"provider": "openai", "base_model": "gpt-4o-mini-2024-07-18", "method": "sft", "suffix": "will-fail"}
    await kafka.send_event(export_dataset(org, "openai_sft", auto_train=policy), org)
    records = await kafka.collect([JobFailed.topic()], lambda rs: len(rs) >= 1, match=of_org(org), timeout=120)
    payload = envelope_of(records[0])["payload"]
    assert "invalid training file" in payload["error"] and payload["cancelled"] is False
    job = await job_detail(gateway, await make_key(org, "viewer"), payload["job_id"])
    assert job["status"] == "failed" and "invalid training file" in job["error_message"]


async def test_openai_rate_limits_and_5xx_are_retried(stack, gateway, kafka, make_key, org, openai_fake):
    openai_fake.fail_next_creates(1, 429)
    openai_fake.fail_next_creates(1, 500)
    policy = {"provider": "openai", "base_model": "gpt-4o-mini-2024-07-18", "hyperparameters": {"n_epochs": 1}}
    await kafka.send_event(export_dataset(org, "openai_sft", auto_train=policy), org)
    envelope = await completed_event(kafka, org)
    assert envelope["payload"]["resulting_model_id"].startswith("ft:")


async def test_bedrock_auto_train_to_job_completed(stack, gateway, kafka, make_key, org):
    policy = {"provider": "bedrock", "base_model": HAIKU, "method": "sft",
              "hyperparameters": {"epochCount": 2, "batchSize": 8, "learningRateMultiplier": 0.5}}
    await kafka.send_event(export_dataset(org, "bedrock_claude", auto_train=policy), org)
    key = await make_key(org, "viewer")
    job = await the_job(gateway, key, status={"training"})
    described = bedrock_job(job["job_id"])
    assert described.hyper_parameters == {"epochCount": "2", "batchSize": "8", "learningRateMultiplier": "0.5"}
    assert described.training_data_config["s3Uri"].endswith("/train.jsonl")
    finish_like_bedrock(described, losses=[1.9, 1.4, 1.1, 0.9])
    envelope = await completed_event(kafka, org)
    assert envelope["payload"]["resulting_model_id"] == described.output_model_arn
    detail = await job_detail(gateway, key, job["id"])
    assert [p["loss"] for p in detail["loss_curve"]] == [1.9, 1.4, 1.1, 0.9]
    assert detail["status"] == "completed" and detail["actual_cost"] > 0


async def test_local_trl_dpo_auto_train_to_job_completed(stack, gateway, kafka, make_key, org, tiny_model):
    policy = {"provider": "huggingface", "base_model": str(tiny_model), "method": "dpo",
              "hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate": 0.005, "max_length": 64}}
    await kafka.send_event(export_dataset(org, "trl_dpo", auto_train=policy), org)
    envelope = await completed_event(kafka, org)
    key = await make_key(org, "viewer")
    job = await job_detail(gateway, key, envelope["payload"]["job_id"])
    assert [p["step"] for p in job["loss_curve"]] == list(range(1, 9))  # 16 pairs / 4 per batch x 2 epochs
    assert job["loss_curve"][-1]["loss"] < job["loss_curve"][0]["loss"]
    assert "rewards/margins" in job["metrics_history"][-1]["metrics"]
    final = job["training_metrics"]["final"]  # priced by the machine time it measured: $1000 a CPU hour here
    assert final["train_seconds"] > 0 and final["on_gpu"] == 0.0
    assert job["actual_cost"] == pytest.approx(final["train_seconds"] / 3600 * 1000, abs=1e-3)
    assert job["base_model"] == tiny_model.name  # stored by its name under the models directory
    ref = job["resulting_model_id"]  # named in the store, not by where the store lies on the server
    assert ref.startswith("store:adapters/") and ref.endswith("/")
    assert envelope["payload"]["resulting_model_id"].startswith("file://")  # the services get the storage URL
    adapter = default_store().path(ref.removeprefix("store:"))
    assert (adapter / "adapter_config.json").exists()
    assert "file:" not in json.dumps(job)


async def test_local_sft_on_chat_lines(stack, gateway, kafka, make_key, org, tiny_model):
    policy = {"provider": "huggingface", "base_model": str(tiny_model), "method": "sft",
              "hyperparameters": {"n_epochs": 1, "batch_size": 4, "learning_rate": 0.005, "max_length": 64}}
    await kafka.send_event(export_dataset(org, "openai_sft", auto_train=policy), org)
    envelope = await completed_event(kafka, org)
    job = await job_detail(gateway, await make_key(org, "viewer"), envelope["payload"]["job_id"])
    assert len(job["loss_curve"]) == 3 and job["loss_curve"][-1]["loss"] < job["loss_curve"][0]["loss"]


@pytest.mark.parametrize("provider", ["openai", "bedrock", "huggingface"])
async def test_cancel_stops_the_job_at_the_provider(stack, gateway, kafka, make_key, org, provider, tiny_model,
                                                    request):
    export_format, base_model, method, hp = {
        "openai": ("openai_sft", "gpt-4o-mini-2024-07-18", "sft", {"n_epochs": 50}),
        "bedrock": ("bedrock_claude", HAIKU, "sft", {}),
        "huggingface": ("trl_dpo", str(tiny_model), "dpo", {"n_epochs": 50, "max_length": 64}),
    }[provider]
    openai_fake = request.getfixturevalue("openai_fake") if provider == "openai" else None
    event = export_dataset(org, export_format)
    await kafka.send_event(event, org)
    key = await make_key(org, "curator")
    body = {"dataset_id": str(event.dataset_id), "provider": provider, "base_model": base_model, "method": method,
            "hyperparameters": hp}
    launched = await eventually(lambda: _launch(gateway, key, body), timeout=60)
    job = await the_job(gateway, key, status={"training"})
    if provider == "huggingface":  # wait for real steps, then cancel in the middle of the run
        await eventually(lambda: _has_steps(gateway, key, job["id"], 2), timeout=60)
    cancelled = await gateway.post(f"/api/fine-tuning/jobs/{launched['id']}/cancel", headers=key)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    records = await kafka.collect([JobFailed.topic()], lambda rs: len(rs) >= 1, match=of_org(org))
    assert envelope_of(records[0])["payload"]["cancelled"] is True
    if provider == "openai":
        assert openai_fake.jobs[job["job_id"]].status == "cancelled"
    elif provider == "bedrock":
        assert bedrock_job(job["job_id"]).status == "Stopped"
    else:
        await eventually(lambda: _worker_gone(stack, job["id"]), timeout=30)
        detail = await job_detail(gateway, key, job["id"])
        assert 2 <= len(detail["loss_curve"]) < 50 * 4
    assert (await job_detail(gateway, key, job["id"]))["status"] == "cancelled"


@pytest.mark.parametrize("provider", ["openai", "bedrock", "huggingface"])
async def test_over_budget_launch_is_refused(stack, gateway, kafka, make_key, org, provider, tiny_model):
    export_format, base_model, method = {
        "openai": ("openai_sft", "gpt-4o-mini-2024-07-18", "sft"),
        "bedrock": ("bedrock_claude", HAIKU, "sft"),
        "huggingface": ("trl_dpo", str(tiny_model), "dpo"),
    }[provider]
    event = export_dataset(org, export_format)
    await kafka.send_event(event, org)
    admin = await make_key(org, "admin")
    assert (await gateway.put("/api/fine-tuning/budget", json={"monthly_limit": "0.00"}, headers=admin)).is_success
    body = {"dataset_id": str(event.dataset_id), "provider": provider, "base_model": base_model, "method": method}
    response = await eventually(lambda: _answer_other_than_404(gateway, admin, body), timeout=60)
    assert response.status_code == 402
    assert "exceeds the $0.00 left of this month's $0.00 fine-tuning budget" in response.json()["message"]
    assert (await gateway.get("/api/fine-tuning/jobs", headers=admin)).json()["items"] == []


async def _launch(gateway, key, body):
    response = await gateway.post("/api/fine-tuning/jobs", json=body, headers=key)
    if response.status_code == 404:
        return None  # DatasetExported not consumed yet
    assert response.status_code == 201, response.text
    return response.json()


async def _answer_other_than_404(gateway, key, body):
    response = await gateway.post("/api/fine-tuning/jobs", json=body, headers=key)
    return None if response.status_code == 404 else response


async def _has_steps(gateway, key, job_id, n):
    return len((await job_detail(gateway, key, job_id))["loss_curve"]) >= n


async def _worker_gone(stack, job_id) -> bool:
    pid_file = stack.data_dir / "training-jobs" / job_id / "worker.pid"
    pid, created = pid_file.read_text().split()
    try:
        process = psutil.Process(int(pid))
        return process.status() == psutil.STATUS_ZOMBIE or abs(process.create_time() - float(created)) > 1
    except psutil.NoSuchProcess:
        return True


def bedrock_job(name: str):
    """The job as moto keeps it (its own state, in this process)."""
    from moto.bedrock.models import bedrock_backends

    return bedrock_backends[ACCOUNT][REGION].model_customization_jobs[name]


def finish_like_bedrock(job, losses: list[float], validation_losses: list[float] = ()) -> None:
    """What Bedrock does when a job ends well, which moto does not: the step-wise metrics file in
    the output folder (documented layout and columns), the validation metrics when the job had a
    validation file, then status Completed."""
    bucket, _, prefix = job.output_data_config["s3Uri"].removeprefix("s3://").partition("/")
    job_id = job.job_arn.rsplit("/", 1)[-1]
    folder = f"{prefix.rstrip('/')}/model-customization-job-{job_id}"
    files = {f"{folder}/training_artifacts/step_wise_training_metrics.csv": ("training_loss", losses),
             f"{folder}/validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv":
                 ("validation_loss", validation_losses)}
    for key, (column, values) in files.items():
        if not values:
            continue
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["step_number", "epoch_number", column, "perplexity"])
        for step, loss in enumerate(values):
            writer.writerow([step, step * 2 // len(values), loss, round(2.718 ** loss, 3)])
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=out.getvalue().encode())
    job.status = "Completed"

