"""The experiments API in-process on the real database: create (and every bad input), list and page,
live results from outcomes, pause / resume / complete / extend, full deploy asking the registry,
assignment for callers that route themselves, guardrails that pause."""

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import text

from services.experiments import handlers, repository
from shared.events import FeedbackReceived, ModelArchived, OutcomeRecorded
from tests.experiments.conftest import deliver, registered, serve_with_latencies, two_versions
from tests.experiments.conftest import outbox_events as outbox

pytestmark = pytest.mark.asyncio

BACKEND = "http://127.0.0.1:9/v1"  # never called in these tests


def body(v1, v2, **extra):
    return {"name": "tone test", "control_model_id": str(v1.model_version_id),
            "treatment_model_id": str(v2.model_version_id), "traffic_split": 0.5,
            "success_metrics": [{"name": "thumbs_up_rate"}], **extra}


async def serve_and_rate(db, organization: str, experiment_id: str, variant: str, thumbs: list[bool]) -> None:
    """Answers served in the experiment (as the router records them) and thumbs on each, by response id."""
    served = await serve_with_latencies(db, organization, experiment_id, variant, [100] * len(thumbs))
    feedback = [FeedbackReceived(query="q", response="a", feedback_type="thumbs_up" if up else "thumbs_down",
                                 response_id=s.event.response_id, feedback_id=uuid.uuid4(),
                                 created_at=datetime.now(UTC), source="http")
                for s, up in zip(served, thumbs, strict=True)]
    await deliver(db, organization, handlers.record_feedback_outcomes, *feedback)


async def test_an_experiment_is_created_listed_and_announced(api, experiments_db, make_key, org):
    v1, v2 = await two_versions(experiments_db, org, BACKEND)
    key = await make_key(org, "curator")
    created = await api.post("/api/experiments", headers=key, json=body(v1, v2, min_sample_size=50))
    assert created.status_code == 201, created.text
    exp = created.json()
    assert (exp["status"], exp["model_name"], exp["winner"]) == ("running", "support-bot", None)
    [started] = await outbox(experiments_db, org, "ExperimentStarted")
    assert started["experiment_id"] == exp["id"] and started["model_name"] == "support-bot"

    draft = (await api.post("/api/experiments", headers=key, json=body(v1, v2, name="later", start=False))).json()
    assert draft["status"] == "draft"
    page = (await api.get("/api/experiments", headers=key, params={"limit": 1})).json()
    assert [e["id"] for e in page["items"]] == [draft["id"]]
    rest = (await api.get("/api/experiments", headers=key, params={"cursor": page["next_cursor"]})).json()
    assert [e["id"] for e in rest["items"]] == [exp["id"]] and rest["next_cursor"] is None
    running = (await api.get("/api/experiments", headers=key, params={"status": "running"})).json()["items"]
    assert [e["id"] for e in running] == [exp["id"]]
    other = await make_key(f"other-{org}", "curator")
    assert (await api.get(f"/api/experiments/{exp['id']}", headers=other)).status_code == 404


async def test_bad_experiments_are_refused_with_the_reason(api, experiments_db, make_key, org):
    v1, v2 = await two_versions(experiments_db, org, BACKEND)
    other_name = registered("other-bot", "1.0.0", {"kind": "openai", "model": "gpt-x"})
    archived = registered("support-bot", "0.9.0", {"kind": "openai", "model": "gpt-y"})
    await deliver(experiments_db, org, handlers.record_registered, other_name, archived)
    await deliver(experiments_db, org, handlers.record_archived, ModelArchived(
        model_version_id=archived.model_version_id, name=archived.name, model_version=archived.model_version,
        archived_by="tests", archived_at=datetime.now(UTC)))
    key = await make_key(org, "curator")

    async def refused(payload, status, field=None):
        answer = await api.post("/api/experiments", headers=key, json=payload)
        assert answer.status_code == status, answer.text
        if field:
            assert field in [e["field"] for e in answer.json()["errors"]]
        return answer.json()

    await refused(body(v1, v1), 422, "treatment_model_id")
    assert "different names" in (await refused(body(v1, other_name), 422))["message"]
    assert "archived" in (await refused(body(archived, v1), 409))["message"]
    await refused(body(v1, v2) | {"control_model_id": str(uuid.uuid4())}, 404)
    await refused(body(v1, v2, traffic_split=1.5), 422, "traffic_split")
    await refused(body(v1, v2, success_metrics=[{"name": "happiness"}]), 422, "success_metrics")
    await refused(body(v1, v2, surprise=True), 422, "surprise")
    assert (await api.post("/api/experiments", headers=key, json=body(v1, v2))).status_code == 201
    assert "already running" in (await refused(body(v1, v2), 409))["message"]
    viewer = await make_key(org, "viewer")
    assert (await api.post("/api/experiments", headers=viewer, json=body(v1, v2))).status_code == 403


async def test_feedback_on_served_answers_gives_a_significant_result_and_full_deploy_asks_the_registry(
        api, experiments_db, make_key, org):
    v1, v2 = await two_versions(experiments_db, org, BACKEND)
    key, admin = await make_key(org, "curator"), await make_key(org, "admin")
    exp = (await api.post("/api/experiments", headers=key, json=body(v1, v2, min_sample_size=100))).json()
    await serve_and_rate(experiments_db, org, exp["id"], "control", [i % 10 < 4 for i in range(300)])
    await serve_and_rate(experiments_db, org, exp["id"], "treatment", [i % 10 < 7 for i in range(300)])
    # feedback naming a response nobody served here is ignored
    await deliver(experiments_db, org, handlers.record_feedback_outcomes, FeedbackReceived(
        query="q", response="a", feedback_type="thumbs_down", response_id="unknown", feedback_id=uuid.uuid4(),
        created_at=datetime.now(UTC), source="http"))

    live = (await api.get(f"/api/experiments/{exp['id']}", headers=key)).json()["results"]
    [thumbs] = live["metrics"]
    assert (thumbs["control"]["n"], thumbs["treatment"]["n"]) == (300, 300)
    assert thumbs["control"]["mean"] == pytest.approx(0.4) and thumbs["treatment"]["mean"] == pytest.approx(0.7)
    assert thumbs["sequential"] and thumbs["significant"] and thumbs["ci"][0] > 0
    assert live["srm"]["units"] == {"control": 300, "treatment": 300} and not live["srm"]["mismatch"]
    assert live["latency_ms"]["control"]["p95"] == pytest.approx(100, rel=0.01)  # every answer took 100 ms
    assert live["recommendation"]["winner"] == "treatment"

    assert (await api.post(f"/api/experiments/{exp['id']}/full-deploy", headers=key)).status_code == 403
    done = await api.post(f"/api/experiments/{exp['id']}/full-deploy", headers=admin, json={"reason": "ship it"})
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["winner"]) == ("completed", "treatment")
    [concluded] = await outbox(experiments_db, org, "ExperimentConcluded")
    assert concluded["winner"] == "treatment" and concluded["winner_model_id"] == str(v2.model_version_id)
    assert concluded["results"]["metrics"][0]["treatment"]["n"] == 300
    [request] = await outbox(experiments_db, org, "DeploymentRequested")
    assert request["model_version_id"] == str(v2.model_version_id)
    assert request["source_experiment_id"] == exp["id"] and "ship it" in request["reason"]
    again = await api.post(f"/api/experiments/{exp['id']}/full-deploy", headers=admin)
    assert again.status_code == 409


async def test_an_inconclusive_result_is_deployed_only_when_an_admin_names_the_variant(
        api, experiments_db, make_key, org):
    v1, v2 = await two_versions(experiments_db, org, BACKEND)
    admin = await make_key(org, "admin")
    exp = (await api.post("/api/experiments", headers=admin, json=body(v1, v2))).json()
    refused = await api.post(f"/api/experiments/{exp['id']}/full-deploy", headers=admin)
    assert refused.status_code == 409 and "inconclusive" in refused.json()["message"]
    forced = await api.post(f"/api/experiments/{exp['id']}/full-deploy", headers=admin,
                            json={"variant": "treatment", "reason": "product call"})
    assert forced.status_code == 200
    [request] = await outbox(experiments_db, org, "DeploymentRequested")
    assert "override" in request["reason"]


async def test_assignment_is_sticky_and_a_paused_experiment_sends_everyone_to_control(
        api, experiments_db, make_key, org):
    v1, v2 = await two_versions(experiments_db, org, BACKEND)
    key = await make_key(org, "curator")
    exp = (await api.post("/api/experiments", headers=key, json=body(v1, v2))).json()
    url = f"/api/experiments/{exp['id']}"
    first = [(await api.post(f"{url}/assign", headers=key, json={"unit": f"u{i}"})).json() for i in range(40)]
    again = [(await api.post(f"{url}/assign", headers=key, json={"unit": f"u{i}"})).json() for i in range(40)]
    assert first == again and {a["variant"] for a in first} == {"control", "treatment"}
    for a in first:
        assert a["model_version_id"] == str(v2.model_version_id if a["variant"] == "treatment" else v1.model_version_id)

    paused = await api.post(f"{url}/pause", headers=key, json={"reason": "incident"})
    assert (paused.json()["status"], paused.json()["status_reason"]) == ("paused", "incident")
    [event] = await outbox(experiments_db, org, "ExperimentPaused")
    assert event["reason"] == "incident"
    during = [(await api.post(f"{url}/assign", headers=key, json={"unit": f"u{i}"})).json() for i in range(40)]
    assert {a["variant"] for a in during} == {"control"}
    assert (await api.post(f"{url}/pause", headers=key)).status_code == 409
    assert (await api.post(f"{url}/resume", headers=key)).json()["status"] == "running"

    later = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    extended = await api.post(f"{url}/extend", headers=key, json={"end_date": later, "min_sample_size": 500})
    assert extended.status_code == 200 and extended.json()["min_sample_size"] == 500
    completed = (await api.post(f"{url}/complete", headers=key)).json()
    assert completed["status"] == "completed" and completed["winner"] == "inconclusive"
    assert completed["results"]["srm"]["units"]["control"] + completed["results"]["srm"]["units"]["treatment"] == 40
    assert (await api.post(f"{url}/extend", headers=key, json={"end_date": later})).status_code == 409


async def test_a_breached_guardrail_pauses_the_experiment(api, experiments_db, make_key, org):
    v1, v2 = await two_versions(experiments_db, org, BACKEND)
    key = await make_key(org, "curator")
    exp = (await api.post("/api/experiments", headers=key, json=body(
        v1, v2, guardrails=[{"metric": "thumbs_down_rate", "max_degradation": 0.05}]))).json()
    await serve_and_rate(experiments_db, org, exp["id"], "control", [i % 10 < 8 for i in range(400)])
    await serve_and_rate(experiments_db, org, exp["id"], "treatment", [i % 10 < 3 for i in range(400)])
    after = (await api.get(f"/api/experiments/{exp['id']}", headers=key)).json()
    assert after["status"] == "paused" and "thumbs_down_rate" in after["status_reason"]
    [event] = await outbox(experiments_db, org, "ExperimentPaused")
    assert event["guardrail"] == "thumbs_down_rate" and event["paused_by"] == "guardrail"


async def test_outcomes_other_services_report_count_as_a_metric_of_the_variant(api, experiments_db, make_key, org):
    v1, v2 = await two_versions(experiments_db, org, BACKEND)
    key = await make_key(org, "curator")
    exp = (await api.post("/api/experiments", headers=key, json=body(v1, v2, success_metrics=[
        {"name": "ticket_deflected", "kind": "rate"}, {"name": "minutes_to_resolution", "kind": "mean",
                                                       "higher_is_better": False}]))).json()
    url = f"/api/experiments/{exp['id']}"
    variants = {u: (await api.post(f"{url}/assign", headers=key, json={"unit": u})).json()["variant"]
                for u in ("ann", "bob", "cy")}
    await api._transport.app.state.experiments_batcher.drain()  # noqa: SLF001 - the exposures are written
    await serve_and_rate(experiments_db, org, exp["id"], "treatment", [True])
    [served] = await outbox(experiments_db, org, "ResponseServed")
    reports = [OutcomeRecorded(metric="ticket_deflected", value=1, unit=u) for u in variants]
    reports += [OutcomeRecorded(metric="minutes_to_resolution", value=12.5, response_id=served["response_id"]),
                OutcomeRecorded(metric="ticket_deflected", value=1, unit="never-exposed"),
                OutcomeRecorded(metric="ticket_deflected", value=1, response_id="unknown")]
    await deliver(experiments_db, org, handlers.record_reported_outcomes, *reports)
    results = (await api.get(url, headers=key)).json()["results"]
    deflected, minutes = results["metrics"]
    assert deflected["control"]["n"] + deflected["treatment"]["n"] == 3
    assert deflected["treatment"]["n"] == sum(v == "treatment" for v in variants.values())
    assert (minutes["treatment"]["n"], minutes["treatment"]["mean"], minutes["higher_is_better"]) == (1, 12.5, False)
    refused = await api.post("/api/experiments", headers=key, json=body(v1, v2, success_metrics=[{"name": "nps"}]))
    assert refused.status_code == 422 and "kind" in refused.json()["message"]


async def test_served_responses_older_than_the_retention_are_pruned(api, experiments_db, make_key, org):
    v1, v2 = await two_versions(experiments_db, org, BACKEND)
    key = await make_key(org, "curator")
    exp = (await api.post("/api/experiments", headers=key, json=body(v1, v2))).json()
    await serve_and_rate(experiments_db, org, exp["id"], "control", [True])
    [served] = await outbox(experiments_db, org, "ResponseServed")
    async with experiments_db.unit_of_work() as uow:
        await uow.session.execute(text("UPDATE experiments.served_responses SET served_at = now() - interval '31 days' "
                                       "WHERE response_id = :r"), {"r": served["response_id"]})
    async with experiments_db.unit_of_work() as uow:
        assert await repository.prune_served(uow.session, datetime.now(UTC) - timedelta(days=30)) >= 1
    late = FeedbackReceived(query="q", response="a", feedback_type="thumbs_up", response_id=served["response_id"],
                            feedback_id=uuid.uuid4(), created_at=datetime.now(UTC), source="http")
    await deliver(experiments_db, org, handlers.record_feedback_outcomes, late)
    results = (await api.get(f"/api/experiments/{exp['id']}", headers=key)).json()["results"]
    assert results["metrics"][0]["control"]["n"] == 1  # the late thumb is not counted


async def test_a_latency_p95_guardrail_is_accepted_at_ab_test_and_equal_latencies_do_not_pause(
        api, experiments_db, make_key, org):
    v1, v2 = await two_versions(experiments_db, org, BACKEND)
    key = await make_key(org, "curator")
    unknown = await api.post("/api/models/ab-test", headers=key, json=body(
        v1, v2, guardrails=[{"metric": "latency_p99_ms", "max_degradation": 0.2}]))
    assert unknown.status_code == 422, unknown.text
    assert "'latency_p99_ms'" in unknown.json()["message"] and "guardrails" in [
        e["field"] for e in unknown.json()["errors"]]
    guardrails = [{"metric": "latency_p95_ms", "max_degradation": 0.2}, {"metric": "latency_p95_ms", "max_value": 5000}]
    created = await api.post("/api/models/ab-test", headers=key, json=body(v1, v2, guardrails=guardrails))
    assert created.status_code == 201, created.text
    exp = created.json()
    assert [(g["metric"], g["max_value"]) for g in exp["guardrails"]] == [("latency_p95_ms", None),
                                                                         ("latency_p95_ms", 5000)]
    rng = np.random.default_rng(3)
    for variant in ("control", "treatment"):
        await serve_with_latencies(experiments_db, org, exp["id"], variant, 150 * rng.lognormal(0, 0.5, 400))
    after = (await api.get(f"/api/experiments/{exp['id']}", headers=key)).json()
    assert after["status"] == "running"
    relative, absolute = after["results"]["guardrails"]
    assert not relative["breached"] and not absolute["breached"]
    assert relative["control"]["n"] == relative["treatment"]["n"] == 400
    assert relative["threshold_ms"] > relative["control"]["p95"] > 0
    assert await outbox(experiments_db, org, "ExperimentPaused") == []
