"""The registry as a real process on the real broker, through the gateway: JobCompleted on the bus
-> a version; deploy, a second version, deploy, rollback -> ModelDeployed / ModelRolledBack on the
bus carrying how to call the version; DeploymentRequested refused -> DeploymentRefused."""

import uuid

import pytest

from shared.events import (
    DeploymentRefused,
    DeploymentRequested,
    ModelDeployed,
    ModelRegistered,
    ModelRolledBack,
)
from tests.registry.conftest import completed_job
from tests.support import envelope_of, eventually, of_org

pytestmark = pytest.mark.asyncio


async def test_versions_from_the_bus_deploy_and_roll_back_through_the_gateway(stack, gateway, kafka, make_key, org):
    first, second = completed_job(), completed_job(evaluation=None)
    await kafka.send_event(first, org)
    await kafka.send_event(first, org)  # a redelivery under a new event id: still one version
    admin = await make_key(org, "admin")

    async def registered(count):
        items = (await gateway.get("/api/models", headers=admin)).json()["items"]
        return items if len(items) >= count else None

    [v1] = await eventually(lambda: registered(1))
    assert (v1["version"], v1["status"], v1["fine_tuning_job_id"]) == ("1.0.0", "testing", str(first.job_id))
    deployed = await gateway.post(f"/api/models/{v1['id']}/deploy", headers=admin, json={"reason": "launch"})
    assert deployed.status_code == 200, deployed.text

    await kafka.send_event(second, org)
    items = await eventually(lambda: registered(2))
    v2 = next(v for v in items if v["fine_tuning_job_id"] == str(second.job_id))
    assert v2["version"] == "1.1.0"
    gated = await gateway.post(f"/api/models/{v2['id']}/deploy", headers=admin)
    assert gated.status_code == 409 and "no evaluation" in gated.json()["message"]
    forced = await gateway.post(f"/api/models/{v2['id']}/deploy", headers=admin,
                                json={"force": True, "reason": "evaluated offline"})
    assert forced.status_code == 200
    back = await gateway.post(f"/api/models/{v2['id']}/rollback", headers=admin, json={"reason": "regression"})
    assert back.status_code == 200 and back.json()["id"] == v1["id"] and back.json()["status"] == "deployed"

    records = await kafka.collect(
        [ModelRegistered.topic(), ModelDeployed.topic(), ModelRolledBack.topic()],
        lambda rs: len(rs) >= 5, match=of_org(org))
    by_topic: dict[str, list] = {}
    for record in records:
        by_topic.setdefault(record.topic, []).append(envelope_of(record)["payload"])
    assert len(by_topic[ModelRegistered.topic()]) == 2
    deploys = by_topic[ModelDeployed.topic()]
    assert [d["model_version"] for d in deploys] == ["1.0.0", "1.1.0"]
    assert deploys[0]["serving"] == {"kind": "local", "base_model": "tiny-llama",
                                     "adapter_url": first.resulting_model_id}
    assert deploys[1]["forced"] is True and deploys[1]["previous_version"] == "1.0.0"
    [rolled] = by_topic[ModelRolledBack.topic()]
    assert (rolled["model_version"], rolled["rolled_back_from_version"]) == ("1.0.0", "1.1.0")
    assert rolled["serving"] == deploys[0]["serving"]

    history = (await gateway.get(f"/api/models/{v1['id']}/history", headers=admin,
                                 params={"scope": "name"})).json()
    assert [(h["version"], h["action"], h["to"]) for h in history] == [
        ("1.0.0", "register", "testing"), ("1.0.0", "deploy", "deployed"), ("1.1.0", "register", "testing"),
        ("1.0.0", "deprecate", "deprecated"), ("1.1.0", "deploy", "deployed"),
        ("1.1.0", "rollback", "deprecated"), ("1.0.0", "rollback", "deployed")]


async def test_a_refused_deployment_request_is_answered_on_the_bus(stack, kafka, make_key, org):
    request = DeploymentRequested(model_version_id=uuid.uuid4(), requested_by="experiment:exp-9",
                                  source_experiment_id="exp-9")
    sent = await kafka.send_event(request, org)
    records = await kafka.collect([DeploymentRefused.topic()], lambda rs: len(rs) >= 1, match=of_org(org))
    refusal = envelope_of(records[0])["payload"]
    assert refusal["request_event_id"] == str(sent.event_id) and refusal["code"] == "not_found"
    assert refusal["source_experiment_id"] == "exp-9"
