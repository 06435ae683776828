"""The registry's HTTP API in-process on the real PostgreSQL, with completed jobs delivered to its
handler as the shared consumer delivers them: registration, semver, deploy / rollback / archive,
the one-deployed rule under 20 concurrent deploys, the evaluation gate, history, bad input."""

import asyncio
import json
import uuid

import pytest
from sqlalchemy import text

from services.registry import handlers
from shared.downloads import public_ref
from shared.events import DeploymentRequested, ExportRef
from shared.objectstore import default_store
from tests.registry.conftest import GOOD_EVALUATION, completed_job, deliver

pytestmark = pytest.mark.asyncio


async def versions(api, key, **params):
    return (await api.get("/api/models", headers=key, params=params)).json()["items"]


async def outbox(db, org, event_type=None):
    query = "SELECT event_type, envelope FROM registry.outbox WHERE organization = :org"
    query += " AND event_type = :t" if event_type else ""
    async with db.read() as session:
        rows = (await session.execute(text(query + " ORDER BY id"), {"org": org, "t": event_type})).all()
    return [(r.event_type, json.loads(r.envelope)["payload"]) for r in rows]


async def register(api, key, name="support-bot", version=None, base_model="gpt-4o-mini", **extra):
    body = {"name": name, "model_id": f"ft:{base_model}:{uuid.uuid4().hex[:6]}", "base_model": base_model,
            "serving": {"kind": "openai", "model": "ft:x"}, **extra}
    if version:
        body["version"] = version
    response = await api.post("/api/models", headers=key, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_completed_job_is_registered_once_in_testing(api, registry_db, make_key, org):
    job = completed_job()
    await deliver(registry_db, org, job)
    await deliver(registry_db, org, job)  # the same job again, under a new event id
    key = await make_key(org, "viewer")
    items = await versions(api, key)
    assert len(items) == 1
    version = items[0]
    assert (version["name"], version["version"], version["status"]) == ("support-bot", "1.0.0", "testing")
    assert version["fine_tuning_job_id"] == str(job.job_id)
    assert version["performance_metrics"]["evaluation"] == GOOD_EVALUATION
    adapter = f"store:adapters/{job.job_id}/"  # the event's file:// URL, as answers name it
    assert version["serving"] == {"kind": "local", "base_model": "tiny-llama", "adapter_url": adapter}
    assert version["model_id"] == adapter
    assert [t for t, _ in await outbox(registry_db, org)] == ["ModelRegistered"]


async def test_semver_rules(api, registry_db, make_key, org):
    await deliver(registry_db, org, completed_job(base_model="llama"))
    await deliver(registry_db, org, completed_job(base_model="llama"))
    await deliver(registry_db, org, completed_job(base_model="mistral"), completed_job(base_model="mistral"))
    await deliver(registry_db, org, completed_job(model_name="other"))
    key = await make_key(org, "curator")
    named = {v["version"]: v for v in await versions(api, key, name="support-bot")}
    assert sorted(named) == ["1.0.0", "1.1.0", "2.0.0", "2.1.0"]
    assert [v["version"] for v in await versions(api, key, name="other")] == ["1.0.0"]

    bumped = await api.patch(f"/api/models/{named['2.1.0']['id']}", headers=key, json={"bump": "patch"})
    assert bumped.status_code == 200 and bumped.json()["version"] == "2.1.1"
    explicit = await api.patch(f"/api/models/{named['2.1.0']['id']}", headers=key, json={"version": "2.1.5"})
    assert explicit.json()["version"] == "2.1.5"
    not_a_patch = await api.patch(f"/api/models/{named['2.1.0']['id']}", headers=key, json={"version": "2.2.0"})
    assert not_a_patch.status_code == 422 and not_a_patch.json()["errors"][0]["field"] == "version"
    garbage = await api.patch(f"/api/models/{named['1.0.0']['id']}", headers=key, json={"version": "1.0"})
    assert garbage.status_code == 422
    taken = await api.patch(f"/api/models/{named['1.0.0']['id']}", headers=key, json={"version": "1.0.0"})
    assert taken.status_code == 422  # not a raise of the patch number

    manual = await register(api, key, name="support-bot", base_model="mistral")  # same base as the latest: minor
    assert manual["version"] == "2.2.0"
    duplicate = await api.post("/api/models", headers=key, json={
        "name": "support-bot", "version": "1.0.0", "model_id": "m", "base_model": "b",
        "serving": {"kind": "openai", "model": "m"}})
    assert duplicate.status_code == 409


async def test_deploy_and_rollback_keep_one_deployed_version_with_the_history(api, registry_db, make_key, org):
    await deliver(registry_db, org, completed_job())
    await deliver(registry_db, org, completed_job())
    admin = await make_key(org, "admin")
    v1, v2 = sorted(await versions(api, admin), key=lambda v: v["version"])

    first = await api.post(f"/api/models/{v1['id']}/deploy", headers=admin,
                           json={"reason": "first release", "deployment_config": {"replicas": 2}})
    assert first.status_code == 200 and first.json()["status"] == "deployed"
    assert first.json()["deployment_config"] == {"replicas": 2} and first.json()["deployed_at"]
    second = await api.post(f"/api/models/{v2['id']}/deploy", headers=admin, json={"experiment_id": "exp-7"})
    assert second.status_code == 200
    statuses = {v["version"]: v["status"] for v in await versions(api, admin)}
    assert statuses == {"1.0.0": "deprecated", "1.1.0": "deployed"}

    back = await api.post(f"/api/models/{v2['id']}/rollback", headers=admin, json={"reason": "worse answers"})
    assert back.status_code == 200 and back.json()["id"] == v1["id"]
    statuses = {v["version"]: v["status"] for v in await versions(api, admin)}
    assert statuses == {"1.0.0": "deployed", "1.1.0": "deprecated"}
    again = await api.post(f"/api/models/{v1['id']}/rollback", headers=admin)
    assert again.status_code == 409 and "nothing to roll back to" in again.json()["message"]

    history = (await api.get(f"/api/models/{v1['id']}/history", headers=admin)).json()
    assert [(h["action"], h["from"], h["to"]) for h in history] == [
        ("register", None, "testing"), ("deploy", "testing", "deployed"), ("deprecate", "deployed", "deprecated"),
        ("rollback", "deprecated", "deployed")]
    assert history[1]["reason"] == "first release" and history[1]["who"].startswith("key:") and history[1]["when"]
    assert history[2]["experiment_id"] == "exp-7" and history[3]["reason"] == "worse answers"
    events = await outbox(registry_db, org)
    assert [t for t, _ in events] == ["ModelRegistered", "ModelRegistered", "ModelDeployed", "ModelDeployed",
                                      "ModelRolledBack"]
    deployed = events[3][1]
    internal = deployed["serving"]["adapter_url"]  # the event carries the storage URL, the answer its store name
    assert {**deployed["serving"], "adapter_url": public_ref(internal)} == v2["serving"]
    assert internal.startswith("file:")
    assert deployed["previous_version"] == "1.0.0"
    assert deployed["source_experiment_id"] == "exp-7"
    assert events[4][1]["model_version_id"] == v1["id"] and events[4][1]["rolled_back_from_version"] == "1.1.0"


async def test_twenty_concurrent_deploys_leave_exactly_one_deployed_version(api, registry_db, make_key, org):
    await deliver(registry_db, org, *[completed_job() for _ in range(20)])
    admin = await make_key(org, "admin")
    ids = [v["id"] for v in await versions(api, admin)]
    assert len(ids) == 20
    answers = await asyncio.gather(*(api.post(f"/api/models/{i}/deploy", headers=admin) for i in ids))
    assert [a.status_code for a in answers] == [200] * 20
    statuses = [v["status"] for v in await versions(api, admin)]
    assert statuses.count("deployed") == 1 and statuses.count("deprecated") == 19
    # The deploys queued one behind the other: each replaced the one before it, none was lost.
    deployed = [p for _, p in await outbox(registry_db, org, "ModelDeployed")]
    assert len(deployed) == 20
    assert [d["previous_version_id"] for d in deployed[1:]] == [d["model_version_id"] for d in deployed[:-1]]

    # The same version deployed 20 times at once: one deploy, 19 conflicts.
    target = next(v for v in await versions(api, admin) if v["status"] == "deprecated")
    answers = await asyncio.gather(*(api.post(f"/api/models/{target['id']}/deploy", headers=admin)
                                     for _ in range(20)))
    assert sorted(a.status_code for a in answers) == [200] + [409] * 19
    assert [v["status"] for v in await versions(api, admin)].count("deployed") == 1


async def test_the_database_refuses_a_second_deployed_version(registry_db, org):
    """The rule holds even for a write that skips the code's lock (the partial unique index)."""
    await deliver(registry_db, org, completed_job(), completed_job())
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        async with registry_db.unit_of_work() as uow:
            await uow.session.execute(text("UPDATE registry.model_registry SET status = 'deployed' "
                                           "WHERE organization = :org"), {"org": org})


async def test_the_evaluation_gate_refuses_and_an_admin_override_is_recorded(api, registry_db, make_key, org):
    await deliver(registry_db, org, completed_job(evaluation={**GOOD_EVALUATION, "preference_accuracy": 0.6}))
    await deliver(registry_db, org, completed_job(model_name="unevaluated", evaluation=None))
    admin, viewer = await make_key(org, "admin"), await make_key(org, "viewer")
    weak = (await versions(api, admin, name="support-bot"))[0]
    unevaluated = (await versions(api, admin, name="unevaluated"))[0]

    policy = await api.put("/api/models/policy", headers=admin,
                           json={"min_preference_accuracy": 0.8, "max_leak_findings": 0})
    assert policy.status_code == 200 and policy.json()["min_preference_accuracy"] == 0.8
    assert (await api.get("/api/models/policy", headers=viewer)).json()["max_leak_findings"] == 0
    assert (await api.put("/api/models/policy", headers=viewer, json={})).status_code == 403

    refused = await api.post(f"/api/models/{weak['id']}/deploy", headers=admin)
    assert refused.status_code == 409 and refused.json()["error"] == "evaluation_gate"
    assert "preference accuracy 0.6 is below the policy's minimum 0.8" in refused.json()["message"]
    no_evaluation = await api.post(f"/api/models/{unevaluated['id']}/deploy", headers=admin)
    assert no_evaluation.status_code == 409 and "no evaluation" in no_evaluation.json()["message"]
    no_reason = await api.post(f"/api/models/{weak['id']}/deploy", headers=admin, json={"force": True})
    assert no_reason.status_code == 422 and no_reason.json()["errors"][0]["field"] == "reason"
    assert (await versions(api, admin, status="deployed")) == []

    forced = await api.post(f"/api/models/{weak['id']}/deploy", headers=admin,
                            json={"force": True, "reason": "hotfix for incident 42"})
    assert forced.status_code == 200 and forced.json()["status"] == "deployed"
    history = (await api.get(f"/api/models/{weak['id']}/history", headers=admin)).json()
    override = history[-1]
    assert override["forced"] is True and override["reason"] == "hotfix for incident 42"
    assert "preference accuracy" in override["details"]["overridden_gate"][0]


async def test_bad_input_is_refused_and_changes_nothing(api, registry_db, make_key, org):
    await deliver(registry_db, org, completed_job(), completed_job())
    admin, curator, viewer = [await make_key(org, r) for r in ("admin", "curator", "viewer")]
    v1, v2 = sorted(await versions(api, admin), key=lambda v: v["version"])
    stranger = await make_key(f"other-{org}", "admin")

    assert (await api.post(f"/api/models/{v1['id']}/deploy", headers=viewer)).status_code == 403
    assert (await api.post(f"/api/models/{v1['id']}/deploy", headers=curator)).status_code == 403
    assert (await api.post(f"/api/models/{v1['id']}/rollback", headers=curator)).status_code == 403
    assert (await api.post(f"/api/models/{v1['id']}/deploy", headers=stranger)).status_code == 404
    assert (await api.get(f"/api/models/{v1['id']}", headers=stranger)).status_code == 404
    assert (await api.get(f"/api/models/{v1['id']}/history", headers=stranger)).status_code == 404
    assert (await api.get(f"/api/models/{uuid.uuid4()}", headers=viewer)).status_code == 404
    assert (await api.get("/api/models/not-a-uuid", headers=viewer)).status_code == 422
    assert (await api.get("/api/models", headers=viewer, params={"status": "live"})).status_code == 422
    assert (await api.get("/api/models", headers=viewer, params={"cursor": "garbage!"})).status_code == 400
    assert (await api.get("/api/models")).status_code == 401

    no_history = await api.post(f"/api/models/{v1['id']}/rollback", headers=admin)
    assert no_history.status_code == 409  # nothing deployed yet

    assert (await api.post(f"/api/models/{v2['id']}/deploy", headers=admin)).status_code == 200
    moved = await api.patch(f"/api/models/{v2['id']}", headers=curator,
                            json={"serving": {"kind": "openai", "model": "ft:elsewhere"}})
    assert moved.status_code == 409  # routers were told how to call it; a change would not reach them
    archive_live = await api.post(f"/api/models/{v2['id']}/archive", headers=curator)
    assert archive_live.status_code == 409 and "deployed" in archive_live.json()["message"]
    assert (await api.post(f"/api/models/{v1['id']}/archive", headers=curator,
                           json={"reason": "superseded"})).status_code == 200
    archived_deploy = await api.post(f"/api/models/{v1['id']}/deploy", headers=admin)
    assert archived_deploy.status_code == 409 and "archived" in archived_deploy.json()["message"]
    assert (await api.post(f"/api/models/{v1['id']}/archive", headers=curator)).status_code == 409

    bad_servings = [
        ({"kind": "openai_compatible", "base_url": "ftp://host/v1", "model": "m"}, "serving.base_url"),
        ({"kind": "openai_compatible", "base_url": "https://host/v1", "model": "m", "api_key": "sk-live-123"},
         "serving.api_key"),
        ({"kind": "bedrock", "model_arn": "nope"}, "serving.model_arn"),
    ]
    for serving, field in bad_servings:
        answer = await api.post("/api/models", headers=curator, json={
            "name": "prod", "model_id": "m", "base_model": "b", "serving": serving})
        assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == field, answer.text
    for body in ({"name": "prod", "version": "1.0", "model_id": "m", "base_model": "b",
                  "serving": {"kind": "openai", "model": "m"}},
                 {"name": "prod", "model_id": "m", "base_model": "b", "serving": {"kind": "openai", "model": "m"},
                  "surprise": 1},
                 {"name": "prod", "model_id": "m", "base_model": "b", "serving": {"kind": "openai", "model": "m"},
                  "performance_metrics": {"evaluation": {"preference_accuracy": 1.0}}}):
        assert (await api.post("/api/models", headers=curator, json=body)).status_code == 422
    assert (await api.post("/api/models", headers=viewer, json={
        "name": "prod", "model_id": "m", "base_model": "b", "serving": {"kind": "openai", "model": "m"}})
    ).status_code == 403
    assert await versions(api, admin, name="prod") == []

    statuses = {v["version"]: v["status"] for v in await versions(api, admin)}
    assert statuses == {"1.0.0": "archived", "1.1.0": "deployed"}


async def test_a_policy_beyond_the_integer_column_is_refused_naming_the_field(api, make_key, org):
    """Found by the schemathesis run (issue 13): max_leak_findings of 2^31 and more was a 500."""
    admin = await make_key(org, "admin")
    for too_many in (2**31, 2904271666635):
        answer = await api.put("/api/models/policy", headers=admin, json={"max_leak_findings": too_many})
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == "max_leak_findings"
    most = await api.put("/api/models/policy", headers=admin, json={"max_leak_findings": 2**31 - 1})
    assert most.status_code == 200 and most.json()["max_leak_findings"] == 2**31 - 1


async def test_manual_registration_serving_kinds_and_paging(api, make_key, org):
    curator = await make_key(org, "curator")
    compatible = {"kind": "openai_compatible", "base_url": "http://vllm.internal:8000/v1", "model": "llama-3-8b",
                  "api_key_env": "VLLM_API_KEY"}
    made = await register(api, curator, name="production", version="3.2.0", serving=compatible)
    assert made["version"] == "3.2.0" and made["serving"] == compatible and made["status"] == "testing"
    for _ in range(4):
        await register(api, curator, name="paged")
    first = (await api.get("/api/models", headers=curator, params={"name": "paged", "limit": 3})).json()
    assert len(first["items"]) == 3 and first["next_cursor"]
    rest = (await api.get("/api/models", headers=curator,
                          params={"name": "paged", "limit": 3, "cursor": first["next_cursor"]})).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    seen = [v["version"] for v in first["items"] + rest["items"]]
    assert seen == ["1.3.0", "1.2.0", "1.1.0", "1.0.0"]


async def test_answers_name_local_adapters_in_the_store_never_by_server_path(api, registry_db, make_key, org):
    """A local version's adapter is `store:<key>` in every answer (the events keep its storage URL); that
    name is taken back as input, and a file:// path outside the object store is refused."""
    job = completed_job()
    await deliver(registry_db, org, job)
    curator = await make_key(org, "curator")
    [version] = await versions(api, curator)
    adapter = f"store:adapters/{job.job_id}/"
    answers = [version, (await api.get(f"/api/models/{version['id']}", headers=curator)).json(),
               (await api.get(f"/api/models/{version['id']}/history", headers=curator)).json(),
               (await api.get(f"/api/models/{version['id']}/lineage", headers=curator)).json()]
    for answer in answers:
        assert "file:" not in json.dumps(answer) and str(default_store().root) not in json.dumps(answer), answer
    again = await register(api, curator, name="by-hand", model_id=adapter,
                           serving={"kind": "local", "base_model": "tiny-llama", "adapter_url": adapter})
    assert again["serving"]["adapter_url"] == again["model_id"] == adapter
    [(_, registered)] = [e for e in await outbox(registry_db, org, "ModelRegistered")
                         if e[1]["model_version_id"] == again["id"]]
    assert registered["serving"]["adapter_url"] == job.resulting_model_id  # the services get the storage URL
    for outside in ("file:///etc/", "store:../../etc/"):
        refused = await api.post("/api/models", headers=curator, json={
            "name": "outside", "model_id": "x", "base_model": "tiny-llama",
            "serving": {"kind": "local", "base_model": "tiny-llama", "adapter_url": outside}})
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "serving.adapter_url", outside


async def test_deployment_requested_by_event_is_checked_and_a_refusal_says_why(api, registry_db, make_key, org):
    await deliver(registry_db, org, completed_job(), completed_job(model_name="bare", evaluation=None))
    admin = await make_key(org, "admin")
    good = (await versions(api, admin, name="support-bot"))[0]
    bare = (await versions(api, admin, name="bare"))[0]
    requests = [DeploymentRequested(model_version_id=uuid.UUID(good["id"]), requested_by="experiment:exp-1",
                                    reason="treatment won", source_experiment_id="exp-1"),
                DeploymentRequested(model_version_id=uuid.UUID(bare["id"]), requested_by="automation"),
                DeploymentRequested(model_version_id=uuid.uuid4(), requested_by="automation")]
    await deliver(registry_db, org, *requests, handler=handlers.deploy_requested)
    assert (await api.get(f"/api/models/{good['id']}", headers=admin)).json()["status"] == "deployed"
    assert (await api.get(f"/api/models/{bare['id']}", headers=admin)).json()["status"] == "testing"
    refused = [p for _, p in await outbox(registry_db, org, "DeploymentRefused")]
    assert [(r["model_version_id"], r["code"]) for r in refused] == [
        (bare["id"], "evaluation_gate"), (str(requests[2].model_version_id), "not_found")]
    assert "no evaluation" in refused[0]["reason"]
    history = (await api.get(f"/api/models/{good['id']}/history", headers=admin)).json()
    assert (history[-1]["who"], history[-1]["experiment_id"]) == ("experiment:exp-1", "exp-1")


async def test_lineage_reaches_the_feedback_ids_of_the_export(api, registry_db, make_key, org):
    store = default_store()
    prefix = f"datasets/{org}/{uuid.uuid4()}/v3"
    entries = [{"split": "train" if i < 5 else "validation", "id": str(uuid.uuid4()),
                "feedback_ids": [str(uuid.uuid4()), str(uuid.uuid4())]} for i in range(7)]
    with store.writer(f"{prefix}/sources.jsonl") as out:
        out.write("".join(json.dumps(e) + "\n" for e in entries).encode())
    export = ExportRef(dataset_id=uuid.uuid4(), name="Support Q4", export_version=3, format="trl_dpo",
                       sha256="ab" * 32, counts={"train": 5, "validation": 2, "total": 7},
                       url=store.url(f"{prefix}/train.jsonl"), manifest_url=store.url(f"{prefix}/manifest.json"))
    job = completed_job(model_name=None, export=export)
    await deliver(registry_db, org, job)
    viewer = await make_key(org, "viewer")
    version = (await versions(api, viewer))[0]
    assert version["name"] == "Support Q4"  # no model name on the job: the dataset's

    page = (await api.get(f"/api/models/{version['id']}/lineage", headers=viewer, params={"limit": 4})).json()
    assert page["job"]["id"] == str(job.job_id) and page["job"]["provider"] == "huggingface"
    assert page["job"]["method"] == "dpo" and page["job"]["hyperparameters"] == {"beta": 0.1}
    assert page["job"]["actual_cost"] == 1.25
    assert (page["dataset"]["export_version"], page["dataset"]["format"]) == (3, "trl_dpo")
    assert page["dataset"]["sha256"] == "ab" * 32 and page["dataset"]["counts"]["total"] == 7
    rest = (await api.get(f"/api/models/{version['id']}/lineage", headers=viewer,
                          params={"limit": 4, "cursor": page["next_cursor"]})).json()
    assert rest["next_cursor"] is None
    pairs = page["pairs"] + rest["pairs"]
    assert [p["id"] for p in pairs] == [e["id"] for e in entries]
    assert page["feedback_ids"] + rest["feedback_ids"] == [f for e in entries for f in e["feedback_ids"]]
    for cursor in ("x", "5", "999999"):  # not a number; inside a line; past the end
        assert (await api.get(f"/api/models/{version['id']}/lineage", headers=viewer,
                              params={"cursor": cursor})).status_code == 400
