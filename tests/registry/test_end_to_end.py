"""The registry's "done when", through the gateway on the real services and broker: feedback ->
dataset -> export -> local job -> a version registered with its evaluation -> deploy -> a second
version -> deploy -> rollback restores the first; the history recorded, ModelDeployed and
ModelRolledBack on the bus, and the lineage of each version reaching its feedback ids."""

import pytest

from shared.downloads import public_ref
from shared.events import ModelDeployed, ModelRolledBack
from tests.support import envelope_of, eventually, of_org

pytestmark = pytest.mark.asyncio

ANSWER = "Rotate the key in the vault, then redeploy the service."


@pytest.fixture(scope="module")
def tiny_model():
    from tests.training.tiny_model import make_tiny_llama, model_dir

    texts = [f"How do I rotate key {i}? {ANSWER} Ignore it." for i in range(16)]
    return make_tiny_llama(model_dir("e2e-llama"), texts)


async def train_a_version(gateway, headers, dataset_id, tiny_model, expected_versions):
    export = await gateway.post(f"/api/training-datasets/{dataset_id}/export", json={"format": "trl_dpo"},
                                headers=headers)
    assert export.status_code == 201, export.text
    launch = {"dataset_id": dataset_id, "export_version": export.json()["version"], "provider": "huggingface",
              "base_model": str(tiny_model), "method": "dpo", "model_name": "key-helper",
              "hyperparameters": {"n_epochs": 1, "batch_size": 4, "learning_rate": 0.005, "max_length": 64}}

    async def launched():  # the training service learns of the export from DatasetExported
        answer = await gateway.post("/api/fine-tuning/jobs", json=launch, headers=headers)
        return answer.json() if answer.status_code == 201 else None

    job = await eventually(launched)

    async def registered():
        items = (await gateway.get("/api/models", headers=headers, params={"name": "key-helper"})).json()["items"]
        return next((v for v in items if v["fine_tuning_job_id"] == job["id"]), None) \
            if len(items) == expected_versions else None

    return export.json(), await eventually(registered, timeout=600)


async def test_feedback_to_deployed_versions_with_rollback_history_and_lineage(
    stack, gateway, kafka, make_key, org, tiny_model
):
    curator, admin = await make_key(org, "curator"), await make_key(org, "admin")
    items = [{"query": f"How do I rotate key {i}?", "response": "Ignore it.", "feedback_type": "correction",
              "feedback_value": {"correction": f"{ANSWER} (key {i})"}} for i in range(16)]
    feedback_ids = (await gateway.post("/api/feedback/batch", json={"items": items}, headers=curator)).json()["ids"]
    dataset = (await gateway.post("/api/training-datasets", json={
        "name": "Key rotation", "dataset_type": "dpo", "validation_ratio": 0.25}, headers=curator)).json()

    made = 0

    async def paired():  # curation sees the feedback through FeedbackReceived
        nonlocal made
        answer = await gateway.post("/api/preference-pairs/bulk", json={
            "dataset_id": dataset["id"], "strategies": ["correction"]}, headers=curator)
        made += answer.json()["created"]["correction"]
        return made == 16

    await eventually(paired)
    await gateway.patch(f"/api/training-datasets/{dataset['id']}", json={"status": "ready"}, headers=curator)

    export1, v1 = await train_a_version(gateway, curator, dataset["id"], tiny_model, 1)
    assert (v1["version"], v1["status"]) == ("1.0.0", "testing")
    evaluation = v1["performance_metrics"]["evaluation"]
    assert evaluation["eval_loss"] > 0 and 0 <= evaluation["preference_accuracy"] <= 1
    assert "reward_margin" in evaluation and evaluation["leak_check"]["samples"] > 0
    assert (await gateway.post(f"/api/models/{v1['id']}/deploy", headers=admin,
                               json={"reason": "first fine-tune"})).status_code == 200

    export2, v2 = await train_a_version(gateway, curator, dataset["id"], tiny_model, 2)
    assert v2["version"] == "1.1.0"
    assert (await gateway.post(f"/api/models/{v2['id']}/deploy", headers=admin)).status_code == 200
    back = await gateway.post(f"/api/models/{v2['id']}/rollback", headers=admin, json={"reason": "regression"})
    assert back.status_code == 200 and back.json()["id"] == v1["id"]
    statuses = {v["version"]: v["status"]
                for v in (await gateway.get("/api/models", headers=admin)).json()["items"]}
    assert statuses == {"1.0.0": "deployed", "1.1.0": "deprecated"}

    history = (await gateway.get(f"/api/models/{v1['id']}/history", headers=admin,
                                 params={"scope": "name"})).json()
    assert [(h["version"], h["from"], h["to"]) for h in history] == [
        ("1.0.0", None, "testing"), ("1.0.0", "testing", "deployed"), ("1.1.0", None, "testing"),
        ("1.0.0", "deployed", "deprecated"), ("1.1.0", "testing", "deployed"),
        ("1.1.0", "deployed", "deprecated"), ("1.0.0", "deprecated", "deployed")]
    assert history[-1]["reason"] == "regression" and history[-1]["who"].startswith("key:")

    records = await kafka.collect([ModelDeployed.topic(), ModelRolledBack.topic()], lambda rs: len(rs) >= 3,
                                  match=of_org(org))
    kinds = [(r.topic, envelope_of(r)["payload"]["model_version"]) for r in records]
    assert sorted(kinds) == sorted([(ModelDeployed.topic(), "1.0.0"), (ModelDeployed.topic(), "1.1.0"),
                                    (ModelRolledBack.topic(), "1.0.0")])
    rolled = next(envelope_of(r)["payload"] for r in records if r.topic == ModelRolledBack.topic())
    # the event carries the adapter's storage URL; answers name it in the store (no server path)
    assert rolled["serving"]["kind"] == "local" and public_ref(rolled["serving"]["adapter_url"]) == v1["model_id"]
    assert v1["model_id"].startswith("store:adapters/") and v1["serving"]["adapter_url"] == v1["model_id"]

    for version, export in ((v1, export1), (v2, export2)):
        lineage = (await gateway.get(f"/api/models/{version['id']}/lineage", headers=admin,
                                     params={"limit": 1000})).json()
        assert lineage["job"]["id"] == version["fine_tuning_job_id"] and lineage["job"]["method"] == "dpo"
        assert lineage["dataset"]["dataset_id"] == dataset["id"]
        assert lineage["dataset"]["export_version"] == export["version"]
        assert lineage["dataset"]["sha256"] == export["sha256"] and lineage["dataset"]["format"] == "trl_dpo"
        assert (lineage["dataset"]["url"], lineage["dataset"]["sources_url"]) == (export["url"], export["sources_url"])
        assert len(lineage["pairs"]) == lineage["dataset"]["counts"]["total"] == 16
        assert sorted(lineage["feedback_ids"]) == sorted(feedback_ids)
