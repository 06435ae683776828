"""Feedback that names only a response id: the served answer (from ResponseServed) fills in query,
response, model, experiment, variant and latency; unknown ids are refused with the field named;
old served answers are pruned."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.feedback import handlers
from shared.consumer import Delivery
from shared.events import ResponseServed

pytestmark = pytest.mark.asyncio


def served(*, error: str | None = None, at: datetime | None = None) -> ResponseServed:
    return ResponseServed(
        response_id=f"chatcmpl-rlhf-{uuid.uuid4().hex}", model_name="support-bot", model_version_id=uuid.uuid4(),
        model_version="1.1.0", experiment_id=uuid.uuid4(), variant="treatment", unit="user-1", latency_ms=120,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I deploy?"}],
        answer=None if error else "Click deploy.", error=error, served_at=at or datetime.now(UTC))


async def keep(db, organization: str, *events: ResponseServed) -> None:
    async with db.unit_of_work() as uow:
        await handlers.keep_served_responses(
            uow, [Delivery(e.envelope(organization=organization, producer="tests"), e) for e in events])


async def test_feedback_naming_only_a_response_id_is_filled_in_from_the_served_answer(api, feedback_db, make_key, org):
    answer = served()
    await keep(feedback_db, org, answer)
    key = await make_key(org, "viewer")
    created = await api.post("/api/feedback", headers=key,
                             json={"response_id": answer.response_id, "feedback_type": "thumbs_up"})
    assert created.status_code == 201, created.text
    item = (await api.get(f"/api/feedback/{created.json()['ids'][0]}", headers=key)).json()
    assert (item["query"], item["response"]) == ("How do I deploy?", "Click deploy.")
    assert (item["model_id"], item["experiment_id"], item["variant"], item["latency_ms"]) == (
        str(answer.model_version_id), str(answer.experiment_id), "treatment", 120)

    rated = await api.post("/api/feedback", headers=key, json={
        "response_id": answer.response_id, "feedback_type": "rating", "feedback_value": {"rating": 2},
        "query": "How do I deploy to production?"})
    item = (await api.get(f"/api/feedback/{rated.json()['ids'][0]}", headers=key)).json()
    assert item["query"] == "How do I deploy to production?" and item["response"] == "Click deploy."

    other = await make_key(f"other-{org}", "viewer")  # another organization's response ids are unknown
    assert (await api.post("/api/feedback", headers=other, json={
        "response_id": answer.response_id, "feedback_type": "thumbs_up"})).status_code == 422


async def test_unknown_response_ids_and_failed_calls_are_refused_naming_the_field(api, feedback_db, make_key, org):
    failed = served(error="backend unreachable")
    await keep(feedback_db, org, failed)
    key = await make_key(org, "viewer")
    refused = await api.post("/api/feedback", headers=key,
                             json={"response_id": failed.response_id, "feedback_type": "thumbs_down"})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "response_id"
    no_text = await api.post("/api/feedback", headers=key, json={"feedback_type": "thumbs_down"})
    assert no_text.status_code == 422 and no_text.json()["errors"][0]["field"] == "query"
    good = served()
    await keep(feedback_db, org, good)
    batch = await api.post("/api/feedback/batch", headers=key, json={"items": [
        {"response_id": good.response_id, "feedback_type": "thumbs_up"},
        {"response_id": "chatcmpl-unknown", "feedback_type": "thumbs_up"}]})
    assert batch.status_code == 422 and batch.json()["errors"][0]["field"] == "items.1.response_id"
    with_text = await api.post("/api/feedback", headers=key, json={
        "response_id": "chatcmpl-elsewhere", "query": "q", "response": "a", "feedback_type": "thumbs_up"})
    assert with_text.status_code == 201


async def test_served_answers_older_than_the_retention_are_pruned(api, feedback_db, make_key, org):
    old = served(at=datetime.now(UTC) - timedelta(days=handlers.SERVED_RETENTION_DAYS + 1))
    await keep(feedback_db, org, old)
    async with feedback_db.unit_of_work() as uow:
        assert await handlers.prune_served_responses(uow) >= 1
    key = await make_key(org, "viewer")
    assert (await api.post("/api/feedback", headers=key,
                           json={"response_id": old.response_id, "feedback_type": "thumbs_up"})).status_code == 422
