"""The fine-tuning API in-process on the real database: launches checked before anything is
sent (4xx naming the problem), estimates, budgets, scoping to the caller's organization."""

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import update

from services.training import repository
from services.training.models import FineTuningJob
from services.training.settings import TrainingSettings, get_training_settings
from shared.objectstore import default_store
from tests.training.conftest import export_dataset, record_export, sft_rows, trl_dpo_rows
from tests.training.tiny_model import model_dir

# Most launches here name OpenAI, whose settings point at the contract-checked fake: without the
# contract, the module skips (saying why) rather than fail on a missing OPENAI_API_KEY.
pytestmark = [pytest.mark.asyncio, pytest.mark.usefixtures("openai_fake")]


async def known_dataset(training_db, org, export_format, rows=None):
    event = export_dataset(org, export_format, rows=rows)
    await record_export(training_db, org, event)
    return event


def launch(event, **overrides):
    body = {"dataset_id": str(event.dataset_id), "provider": "openai", "base_model": "gpt-4o-mini-2024-07-18",
            "method": "sft", "hyperparameters": {"n_epochs": 2}}
    body.update(overrides)
    return body


async def test_launch_stores_a_pending_job_with_its_estimate_and_audit(api, training_db, make_key, org):
    event = await known_dataset(training_db, org, "openai_sft")
    curator, admin = await make_key(org, "curator"), await make_key(org, "admin")
    response = await api.post("/api/fine-tuning/jobs", json=launch(event), headers=curator)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "pending" and job["epochs"] == 2 and job["cost_estimate"] > 0
    assert job["estimated_tokens"] > 12 * 20  # 12 examples of a few dozen characters each
    audit = (await api.get("/api/fine-tuning/audit", headers=admin)).json()
    assert audit[0]["action"] == "launch" and audit[0]["job_id"] == job["id"] and audit[0]["actor"].startswith("key:")
    events = (await api.get(f"/api/fine-tuning/jobs/{job['id']}/events", headers=curator)).json()
    assert events[0]["data"]["status"] == "pending"


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        ({"provider": "vertex"}, "provider", "provider: Input should be 'openai', 'bedrock' or 'huggingface'"),
        ({"base_model": "gpt-5-ultra"}, "base_model", "cannot fine-tune 'gpt-5-ultra'"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs", "n_epochs must be in [1, 50]"),
        ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs", "got 51"),
        ({"hyperparameters": {"batch_size": 257}}, "hyperparameters.batch_size", "batch_size must be in [1, 256]"),
        ({"hyperparameters": {"learning_rate_multiplier": 0}}, "hyperparameters.learning_rate_multiplier", "(0"),
        ({"hyperparameters": {"beta": 0.5}}, "hyperparameters.beta", "does not take beta"),
        ({"method": "dpo"}, "dataset", "exported as 'openai_sft'; openai dpo accepts openai_dpo"),
        ({"provider": "bedrock", "base_model": "anthropic.claude-3-haiku-20240307-v1:0:200k", "hyperparameters": {}},
         "dataset", "bedrock sft accepts bedrock_claude"),
    ],
)
async def test_bad_launches_are_refused_naming_the_problem(api, training_db, make_key, org, overrides, field, words):
    event = await known_dataset(training_db, org, "openai_sft")
    key = await make_key(org, "curator")
    response = await api.post("/api/fine-tuning/jobs", json=launch(event, **overrides), headers=key)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"][0]["field"] == field and words in body["message"]
    assert (await api.get("/api/fine-tuning/jobs", headers=key)).json()["items"] == []  # nothing half-written


@pytest.mark.parametrize(
    "hyperparameters, words",
    [({"beta": 0}, "beta must be in (0, 2]"), ({"beta": 2.5}, "got 2.5"), ({"n_epochs": "three"}, "integer")],
)
async def test_dpo_ranges(api, training_db, make_key, org, hyperparameters, words):
    event = await known_dataset(training_db, org, "openai_dpo")
    response = await api.post("/api/fine-tuning/jobs", headers=await make_key(org),
                              json=launch(event, method="dpo", hyperparameters=hyperparameters))
    assert response.status_code == 422 and words in response.json()["message"]


@pytest.mark.parametrize(
    "hyperparameters, words",
    [({"epochCount": 11}, "epochCount must be in [1, 10]"), ({"batchSize": 2}, "batchSize must be in [4, 256]"),
     ({"learningRateMultiplier": 3}, "learningRateMultiplier must be in [0.1, 2]"),
     ({"earlyStoppingThreshold": 0.5}, "earlyStoppingThreshold"), ({"n_epochs": 2}, "does not take n_epochs")],
)
async def test_bedrock_ranges(api, training_db, make_key, org, hyperparameters, words):
    event = await known_dataset(training_db, org, "bedrock_claude")
    response = await api.post("/api/fine-tuning/jobs", headers=await make_key(org), json=launch(
        event, provider="bedrock", base_model="anthropic.claude-3-haiku-20240307-v1:0:200k",
        hyperparameters=hyperparameters))
    assert response.status_code == 422 and words in response.json()["message"]


@pytest.mark.parametrize("export_format", ["anthropic", "jsonl", "parquet"])
async def test_formats_no_provider_takes_are_refused(api, training_db, make_key, org, export_format):
    event = await known_dataset(training_db, org, export_format)
    response = await api.post("/api/fine-tuning/jobs", json=launch(event), headers=await make_key(org))
    assert response.status_code == 422
    assert f"exported as '{export_format}'" in response.json()["message"]


def saved_model(directory: Path) -> Path:
    """A directory as save_pretrained leaves it, as far as a launch looks (its config.json)."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    return directory


def local(event, base_model, **overrides):
    return launch(event, provider="huggingface", base_model=base_model, method="dpo", hyperparameters={}, **overrides)


@pytest.mark.parametrize("route", ["/api/fine-tuning/jobs", "/api/fine-tuning/estimate"])
async def test_a_local_base_model_is_never_an_arbitrary_server_path(api, training_db, make_key, org, route, tmp_path):
    """A directory under the models directory, or a Hugging Face id already in the cache: anything else answers
    422 naming base_model, before anything is stored — a path elsewhere on the server even when it holds a model."""
    event = await known_dataset(training_db, org, "trl_dpo")
    key = await make_key(org)
    elsewhere = saved_model(tmp_path / "elsewhere")
    for base_model, words in ((str(elsewhere), "outside the models directory"), ("/etc", "outside the models"),
                              ("../elsewhere", "neither"), ("x/../../etc", "neither"), ("/", "outside"),
                              ("meta-llama/Llama-3-8B", "nothing is downloaded")):
        response = await api.post(route, headers=key, json=local(event, base_model))
        assert response.status_code == 422, (base_model, response.text)
        assert response.json()["errors"][0]["field"] == "base_model" and words in response.json()["message"]
        assert str(tmp_path) not in response.json()["message"].replace(str(elsewhere), "")
    assert (await api.get("/api/fine-tuning/jobs", headers=key)).json()["items"] == []


async def test_a_local_base_model_is_stored_by_its_name_under_the_models_directory(api, training_db, make_key, org):
    event = await known_dataset(training_db, org, "trl_dpo")
    key = await make_key(org)
    model = saved_model(model_dir("named"))
    by_name = await api.post("/api/fine-tuning/jobs", headers=key, json=local(event, model.name))
    by_path = await api.post("/api/fine-tuning/jobs", headers=key, json=local(event, str(model)))
    assert by_name.status_code == by_path.status_code == 201, by_path.text
    assert by_name.json()["base_model"] == by_path.json()["base_model"] == model.name  # no server path stored
    not_saved = model_dir("empty")
    not_saved.mkdir()
    refused = await api.post("/api/fine-tuning/jobs", headers=key, json=local(event, not_saved.name))
    assert refused.status_code == 422 and "no config.json" in refused.json()["message"]


async def test_a_hugging_face_id_in_the_local_cache_is_a_base_model(api, training_db, make_key, org, tmp_path,
                                                                   monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--acme--tiny-chat" / "snapshots" / "0123abcd"
    saved_model(snapshot)
    (tmp_path / "hub" / "models--acme--tiny-chat" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-chat" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    event = await known_dataset(training_db, org, "trl_dpo")
    key = await make_key(org)
    response = await api.post("/api/fine-tuning/estimate", headers=key, json=local(event, "acme/tiny-chat"))
    assert response.status_code == 200, response.text
    uncached = await api.post("/api/fine-tuning/estimate", headers=key, json=local(event, "acme/other"))
    assert uncached.status_code == 422 and uncached.json()["errors"][0]["field"] == "base_model"


async def test_local_runs_are_priced_by_machine_hours_so_budgets_apply(api, training_db, make_key, org):
    """A local run's estimate is its tokens at the configured pace, times the machine's hourly price; a budget
    refuses a local launch that would exceed it, as it refuses a provider's."""
    event = await known_dataset(training_db, org, "trl_dpo", rows=trl_dpo_rows(400))
    model = saved_model(model_dir("priced"))
    curator, admin = await make_key(org, "curator"), await make_key(org, "admin")
    priced = TrainingSettings(rlhf_local_cpu_hour_price=3.0, rlhf_local_gpu_hour_price=30.0,
                              rlhf_local_tokens_per_hour=100_000)
    app = api._transport.app
    app.dependency_overrides[get_training_settings] = lambda: priced
    try:
        estimate = (await api.post("/api/fine-tuning/estimate", headers=curator, json=local(event, model.name))).json()
        hours = estimate["trained_tokens"] / 100_000
        assert estimate["price_per_million_tokens"] == pytest.approx(30.0)  # $3 an hour at 100k tokens an hour
        assert estimate["cost_estimate"] == pytest.approx(hours * 3.0, abs=1e-4) and estimate["cost_estimate"] > 0
        app.dependency_overrides[get_training_settings] = lambda: priced.model_copy(update={"rlhf_local_device": "gpu"})
        on_gpu = (await api.post("/api/fine-tuning/estimate", headers=curator, json=local(event, model.name))).json()
        assert on_gpu["cost_estimate"] == pytest.approx(hours * 30.0, abs=1e-3)
        app.dependency_overrides[get_training_settings] = lambda: priced
        budget = estimate["cost_estimate"] * 1.5
        put = await api.put("/api/fine-tuning/budget", json={"monthly_limit": f"{budget:.2f}"}, headers=admin)
        assert put.status_code == 200, put.text
        first = await api.post("/api/fine-tuning/jobs", headers=curator, json=local(event, model.name))
        assert first.status_code == 201 and first.json()["cost_estimate"] == pytest.approx(estimate["cost_estimate"])
        refused = await api.post("/api/fine-tuning/jobs", headers=curator, json=local(event, model.name))
        assert refused.status_code == 402 and "exceeds" in refused.json()["message"]
    finally:
        app.dependency_overrides.clear()


async def test_missing_credentials_are_a_4xx_before_anything_is_sent(api, training_db, make_key, org):
    event = await known_dataset(training_db, org, "openai_sft")
    api._transport.app.dependency_overrides[get_training_settings] = lambda: TrainingSettings(openai_api_key=None)
    try:
        response = await api.post("/api/fine-tuning/jobs", json=launch(event), headers=await make_key(org))
    finally:
        api._transport.app.dependency_overrides.clear()
    assert response.status_code == 424 and "OPENAI_API_KEY" in response.json()["message"]


async def test_unknown_dataset_is_404(api, make_key, org):
    response = await api.post("/api/fine-tuning/jobs", headers=await make_key(org),
                              json={"dataset_id": str(uuid.uuid4()), "provider": "openai",
                                    "base_model": "gpt-4o-mini-2024-07-18"})
    assert response.status_code == 404 and response.json()["error"] == "dataset_not_found"


async def test_estimate_then_budget_refuses_a_launch_that_would_exceed_it(api, training_db, make_key, org):
    event = await known_dataset(training_db, org, "openai_sft", rows=sft_rows(2000))  # about $0.50 a run
    curator, admin = await make_key(org, "curator"), await make_key(org, "admin")
    estimate = (await api.post("/api/fine-tuning/estimate", json=launch(event), headers=curator)).json()
    assert estimate["epochs"] == 2 and estimate["price_per_million_tokens"] == 3.0
    assert estimate["cost_estimate"] == pytest.approx(estimate["trained_tokens"] * 3.0 / 1e6, abs=1e-4)
    assert (await api.put("/api/fine-tuning/budget", json={"monthly_limit": "1"}, headers=curator)).status_code == 403
    budget = estimate["cost_estimate"] * 1.5
    # A JSON number, as the OpenAPI says (issue 13); a string of a decimal is still taken.
    put = await api.put("/api/fine-tuning/budget", json={"monthly_limit": round(budget, 2)}, headers=admin)
    assert put.status_code == 200, put.text
    assert (await api.post("/api/fine-tuning/jobs", json=launch(event), headers=curator)).status_code == 201
    refused = await api.post("/api/fine-tuning/jobs", json=launch(event), headers=curator)
    assert refused.status_code == 402
    assert "exceeds" in refused.json()["message"] and "left of this month's" in refused.json()["message"]
    assert len((await api.get("/api/fine-tuning/jobs", headers=curator)).json()["items"]) == 1


async def test_other_organizations_jobs_are_404_and_viewers_cannot_launch(api, training_db, make_key, org):
    event = await known_dataset(training_db, org, "openai_sft")
    job = (await api.post("/api/fine-tuning/jobs", json=launch(event), headers=await make_key(org))).json()
    other = await make_key(f"other-{uuid.uuid4().hex[:6]}", "admin")
    assert (await api.get(f"/api/fine-tuning/jobs/{job['id']}", headers=other)).status_code == 404
    assert (await api.post(f"/api/fine-tuning/jobs/{job['id']}/cancel", headers=other)).status_code == 404
    viewer = await make_key(org, "viewer")
    assert (await api.post("/api/fine-tuning/jobs", json=launch(event), headers=viewer)).status_code == 403
    assert (await api.get(f"/api/fine-tuning/jobs/{job['id']}", headers=viewer)).status_code == 200


async def test_a_cancelled_job_cannot_be_cancelled_again(api, training_db, make_key, org):
    event = await known_dataset(training_db, org, "openai_sft")
    key = await make_key(org)
    job = (await api.post("/api/fine-tuning/jobs", json=launch(event), headers=key)).json()
    first = await api.post(f"/api/fine-tuning/jobs/{job['id']}/cancel", headers=key)
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    again = await api.post(f"/api/fine-tuning/jobs/{job['id']}/cancel", headers=key)
    assert again.status_code == 409 and "cancelled job cannot become cancelled" in again.json()["message"]


@pytest.mark.parametrize("route", ["/api/fine-tuning/jobs", "/api/fine-tuning/estimate"])
async def test_an_export_version_beyond_the_column_answers_422_naming_it(api, training_db, make_key, org, route):
    event = await known_dataset(training_db, org, "openai_sft")
    key = await make_key(org, "curator")
    for version in (2**31, 2**63 - 1):
        response = await api.post(route, json=launch(event, export_version=version), headers=key)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "export_version", response.text
    response = await api.post(route, json=launch(event, export_version=2**31 - 1), headers=key)
    assert response.status_code == 404, response.text  # no such version: not a server error


async def test_answers_name_files_by_api_urls_and_store_keys_never_by_server_path(api, training_db, make_key, org):
    """The export a job trains on is named by the API's download URLs; a local run's adapter by its key in the
    object store — in the job, its list and its events — never by where the store lies on the server."""
    event = export_dataset(org, "openai_sft", rows=sft_rows(), validation=sft_rows(4))
    await record_export(training_db, org, event)
    key = await make_key(org, "curator")
    job = (await api.post("/api/fine-tuning/jobs", json=launch(event), headers=key)).json()
    base = f"/api/training-datasets/{event.dataset_id}/exports/1/files"
    assert (job["export_ref"]["url"], job["export_ref"]["validation_url"], job["export_ref"]["manifest_url"]) == (
        f"{base}/train", f"{base}/validation", f"{base}/manifest")
    adapter = default_store().url(f"adapters/{org}/{job['id']}") + "/"  # as a local run's worker records it
    async with training_db.unit_of_work() as uow:
        await uow.session.execute(update(FineTuningJob).where(FineTuningJob.id == uuid.UUID(job["id"]))
                                  .values(resulting_model_id=adapter))
        repository.add_event(uow.session, uuid.UUID(job["id"]), "completed", "done", adapter_url=adapter)
    answers = [(await api.get(f"/api/fine-tuning/jobs/{job['id']}", headers=key)).json(),
               (await api.get("/api/fine-tuning/jobs", headers=key)).json(),
               (await api.get(f"/api/fine-tuning/jobs/{job['id']}/events", headers=key)).json()]
    assert answers[0]["resulting_model_id"] == f"store:adapters/{org}/{job['id']}/"
    assert answers[2][-1]["data"]["adapter_url"] == f"store:adapters/{org}/{job['id']}/"
    for answer in (job, *answers):
        assert "file:" not in json.dumps(answer) and str(default_store().root) not in json.dumps(answer), answer
