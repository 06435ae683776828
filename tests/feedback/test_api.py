"""The feedback service's HTTP API on the real PostgreSQL: every endpoint, bad input, auth rules."""

import uuid
from datetime import datetime

import pytest
from sqlalchemy import func, select, text

from services.feedback.models import Feedback, outbox

pytestmark = pytest.mark.asyncio


def item(**overrides):
    body = {
        "query": "How do I check deployment status?",
        "response": "Click on the deployments tab.",
        "feedback_type": "thumbs_down",
        "session_id": "s-1",
    }
    body.update(overrides)
    return body


async def count_rows(feedback_db, org) -> int:
    async with feedback_db.read() as s:
        return (await s.execute(select(func.count()).where(Feedback.organization == org))).scalar_one()


async def count_outbox(feedback_db, org) -> int:
    async with feedback_db.read() as s:
        stmt = select(func.count()).select_from(outbox).where(outbox.c.envelope.contains(f'"organization":"{org}"'))
        return (await s.execute(stmt)).scalar_one()


async def test_post_then_get_and_list(api, make_key, org, feedback_db):
    h = await make_key(org, "viewer")
    r = await api.post(
        "/api/feedback",
        json=item(
            feedback_type="rating", feedback_value={"rating": 4}, tags=["Deploy", "deploy", "ui"],
            response_id="resp-9", model_id="ft:gpt-4o-mini:acme", experiment_id="exp-1", variant="treatment",
            latency_ms=830,
        ),
        headers=h,
    )
    assert r.status_code == 201, r.text
    (fid,) = r.json()["ids"]
    got = (await api.get(f"/api/feedback/{fid}", headers=h)).json()
    assert got["status"] == "pending"
    assert got["tags"] == ["deploy", "ui"]
    assert (got["experiment_id"], got["variant"], got["latency_ms"]) == ("exp-1", "treatment", 830)
    listed = (await api.get("/api/feedback", headers=h)).json()
    assert [i["id"] for i in listed["items"]] == [fid]
    assert await count_outbox(feedback_db, org) == 1  # FeedbackReceived, in the same transaction


async def test_batch_is_all_or_nothing_with_per_item_errors(api, make_key, org, feedback_db):
    h = await make_key(org)
    good = [item(query=f"q{i}") for i in range(5)]
    bad = good[:2] + [item(feedback_type="smiley")] + good[2:] + [item(query="")]
    r = await api.post("/api/feedback/batch", json={"items": bad}, headers=h)
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"items.2.feedback_type", "items.6.query"} <= fields
    assert await count_rows(feedback_db, org) == 0
    assert await count_outbox(feedback_db, org) == 0

    r = await api.post("/api/feedback/batch", json={"items": good}, headers=h)
    assert r.status_code == 201 and r.json()["count"] == 5
    assert await count_rows(feedback_db, org) == 5
    assert await count_outbox(feedback_db, org) == 5


async def test_batch_limits(api, make_key, org):
    h = await make_key(org)
    r = await api.post("/api/feedback/batch", json={"items": [item()] * 1001}, headers=h)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "items"
    r = await api.post("/api/feedback/batch", json={"items": []}, headers=h)
    assert r.status_code == 422


@pytest.mark.parametrize(
    "body, field",
    [
        ({**item(), "feedback_type": "smiley"}, "feedback_type"),
        ({k: v for k, v in item().items() if k != "response"}, "response"),
        ({**item(), "latency_ms": "fast"}, "latency_ms"),
        ({**item(), "tags": "not-a-list"}, "tags"),
        ({**item(), "organization": "someone-else"}, "organization"),  # no mass assignment
        ({**item(), "status": "approved"}, "status"),
        # A model-wide rule about one nested field names that field (issue 13), not "body".
        ({**item(), "feedback_type": "rating", "feedback_value": {"rating": 9}}, "feedback_value.rating"),
        ({**item(), "feedback_type": "correction", "feedback_value": {}}, "feedback_value.correction"),
    ],
)
async def test_bad_input_names_the_field_and_stores_nothing(api, make_key, org, feedback_db, body, field):
    h = await make_key(org)
    r = await api.post("/api/feedback", json=body, headers=h)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert any(e["field"] == field or e["field"].startswith(field) for e in errors), errors
    if field == "body":
        assert "feedback_value" in r.text
    assert await count_rows(feedback_db, org) == 0


async def test_malformed_json_and_oversized_body(api, make_key, org, feedback_db):
    h = await make_key(org)
    r = await api.post("/api/feedback", content=b'{"query": ', headers={**h, "content-type": "application/json"})
    assert r.status_code == 422
    assert "json" in r.text.lower()
    huge = item(response="x" * 1_200_000)
    r = await api.post("/api/feedback", json=huge, headers=h)
    assert r.status_code == 413
    assert "exceeds" in r.json()["message"]
    assert await count_rows(feedback_db, org) == 0


async def test_auth_rules(api, make_key, org):
    r = await api.get("/api/feedback")
    assert r.status_code == 401
    r = await api.get("/api/feedback", headers={"Authorization": "Bearer rlhf_nope_nope"})
    assert r.status_code == 401
    viewer = await make_key(org, "viewer")
    fid = (await api.post("/api/feedback", json=item(), headers=viewer)).json()["ids"][0]
    r = await api.patch(f"/api/feedback/{fid}", json={"status": "approved"}, headers=viewer)
    assert r.status_code == 403
    assert "curator" in r.json()["message"]
    r = await api.post("/api/feedback/review", json={"ids": [fid], "action": "approve"}, headers=viewer)
    assert r.status_code == 403


async def test_other_organization_gets_404(api, make_key, org):
    mine = await make_key(org, "admin")
    theirs = await make_key(f"{org}-other", "admin")
    fid = (await api.post("/api/feedback", json=item(), headers=mine)).json()["ids"][0]
    assert (await api.get(f"/api/feedback/{fid}", headers=theirs)).status_code == 404
    assert (await api.patch(f"/api/feedback/{fid}", json={"notes": "x"}, headers=theirs)).status_code == 404
    r = await api.post("/api/feedback/review", json={"ids": [fid], "action": "reject"}, headers=theirs)
    assert r.json()["not_found"] == [fid]
    assert (await api.get("/api/feedback", headers=theirs)).json()["items"] == []
    assert (await api.get(f"/api/feedback/{fid}", headers=mine)).json()["status"] == "pending"


async def test_review_correct_tag_and_notes(api, make_key, org, feedback_db):
    h = await make_key(org, "curator")
    fid = (await api.post("/api/feedback", json=item(), headers=h)).json()["ids"][0]
    r = await api.patch(
        f"/api/feedback/{fid}",
        json={"status": "approved", "correction": "Open Deployments > Status.", "tags": ["Ops"], "notes": "good"},
        headers=h,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["correction"], body["tags"], body["notes"]) == (
        "approved", "Open Deployments > Status.", ["ops"], "good"
    )
    assert body["reviewed_by"].startswith("key:") and body["reviewed_at"]
    # the same values again change nothing and emit nothing
    before = await count_outbox(feedback_db, org)
    r = await api.patch(f"/api/feedback/{fid}", json={"status": "approved"}, headers=h)
    assert r.status_code == 200
    assert await count_outbox(feedback_db, org) == before
    r = await api.patch(f"/api/feedback/{fid}", json={"correction": None}, headers=h)
    assert r.json()["correction"] is None
    assert await count_outbox(feedback_db, org) == before + 1


async def test_patch_rejects_unknown_and_empty(api, make_key, org):
    h = await make_key(org)
    fid = (await api.post("/api/feedback", json=item(), headers=h)).json()["ids"][0]
    r = await api.patch(f"/api/feedback/{fid}", json={"query": "rewritten"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query"
    r = await api.patch(f"/api/feedback/{fid}", json={}, headers=h)
    assert r.status_code == 422
    r = await api.patch(f"/api/feedback/{fid}", json={"status": "maybe"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "status"
    r = await api.patch(f"/api/feedback/{uuid.uuid4()}", json={"notes": "x"}, headers=h)
    assert r.status_code == 404
    r = await api.get("/api/feedback/not-a-uuid", headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "path.feedback_id"


async def test_bulk_review(api, make_key, org):
    h = await make_key(org, "curator")
    batch = {"items": [item(query=f"q{i}") for i in range(4)]}
    ids = (await api.post("/api/feedback/batch", json=batch, headers=h)).json()["ids"]
    ghost = str(uuid.uuid4())
    r = await api.post("/api/feedback/review", json={"ids": ids[:3] + [ghost], "action": "approve"}, headers=h)
    assert r.status_code == 200
    assert sorted(r.json()["updated"]) == sorted(ids[:3])
    assert r.json()["not_found"] == [ghost]
    r = await api.post("/api/feedback/review", json={"ids": ids[:2], "action": "approve"}, headers=h)
    assert sorted(r.json()["unchanged"]) == sorted(ids[:2])
    approved = (await api.get("/api/feedback", params={"status": "approved"}, headers=h)).json()["items"]
    assert sorted(i["id"] for i in approved) == sorted(ids[:3])


async def test_filters_and_keyset_pagination(api, make_key, org):
    h = await make_key(org)
    items = [item(query=f"q{i}", session_id="a" if i % 2 else "b", tags=["x"] if i < 3 else []) for i in range(7)]
    items.append(item(feedback_type="correction", feedback_value={"correction": "better"}))
    await api.post("/api/feedback/batch", json={"items": items[:4]}, headers=h)
    await api.post("/api/feedback/batch", json={"items": items[4:]}, headers=h)
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/api/feedback", params=params, headers=h)).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 8 and len({i["id"] for i in seen}) == 8
    keys = [(i["created_at"], i["id"]) for i in seen]
    assert keys == sorted(keys, reverse=True)  # newest first
    q = lambda **p: api.get("/api/feedback", params=p, headers=h)  # noqa: E731
    assert len((await q(session_id="a")).json()["items"]) == 3
    assert len((await q(tag="X")).json()["items"]) == 3
    assert len((await q(feedback_type="correction")).json()["items"]) == 1
    assert (await q(status="rejected")).json()["items"] == []
    assert (await q(created_from="2999-01-01T00:00:00Z")).json()["items"] == []
    assert (await q(feedback_type="smiley")).status_code == 422
    assert (await q(cursor="garbage!")).status_code == 400


async def test_stats(api, make_key, org):
    h = await make_key(org, "curator")
    items = [item(feedback_type="thumbs_up")] * 3 + [item(feedback_type="rating", feedback_value={"rating": 2})]
    ids = (await api.post("/api/feedback/batch", json={"items": items}, headers=h)).json()["ids"]
    await api.post("/api/feedback/review", json={"ids": ids[:1], "action": "reject"}, headers=h)
    stats = (await api.get("/api/feedback/stats", headers=h)).json()
    assert stats["total"] == 4
    assert stats["by_type"] == {"thumbs_up": 3, "rating": 1}
    assert stats["by_status"] == {"pending": 3, "rejected": 1}
    assert sum(d["count"] for d in stats["by_day"]) == 4


async def test_metrics_and_correlation_id(api, make_key, org):
    h = await make_key(org)
    r = await api.post("/api/feedback", json=item(), headers={**h, "X-Correlation-ID": "corr-123"})
    assert r.headers["x-correlation-id"] == "corr-123"
    metrics = (await api.get("/metrics")).text
    labels = 'method="POST",route="/api/feedback",service="feedback",status="201"'
    assert f"rlhf_http_request_duration_seconds_count{{{labels}}}" in metrics
    assert 'rlhf_feedback_ingested_total{service="feedback",source="http"}' in metrics


async def test_outbox_envelope_carries_correlation_id(api, make_key, org, feedback_db):
    h = await make_key(org)
    await api.post("/api/feedback", json=item(), headers={**h, "X-Correlation-ID": f"c-{org}"})
    async with feedback_db.read() as s:
        env = (await s.execute(text(
            "SELECT envelope::jsonb FROM feedback.outbox WHERE envelope::jsonb->>'organization' = :o"), {"o": org}
        )).scalar_one()
    assert env["correlation_id"] == f"c-{org}"
    assert env["type"] == "FeedbackReceived" and env["version"] == 1 and env["producer"] == "feedback"


@pytest.mark.parametrize("size", [1, 40])  # one INSERT; one COPY (whose rows take their time from the database)
async def test_each_item_is_announced_as_it_was_stored(api, make_key, org, feedback_db, size):
    h = await make_key(org)
    items = [item(query=f"q{i}", tags=[f"T{i % 3}", " t0 "], feedback_type="rating", feedback_value={"rating": 3})
             for i in range(size)]
    r = await api.post("/api/feedback/batch", json={"items": items}, headers={**h, "X-Correlation-ID": f"c-{org}"})
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    async with feedback_db.read() as s:
        envelopes = (await s.execute(text(
            "SELECT envelope::jsonb FROM feedback.outbox WHERE envelope::jsonb->>'organization' = :o ORDER BY id"),
            {"o": org})).scalars().all()
    assert [e["payload"]["feedback_id"] for e in envelopes] == ids
    assert len({e["event_id"] for e in envelopes}) == size and not {e["event_id"] for e in envelopes} & set(ids)
    for fid, envelope in zip(ids, envelopes, strict=True):
        row = (await api.get(f"/api/feedback/{fid}", headers=h)).json()
        payload = envelope["payload"]
        assert envelope["correlation_id"] == f"c-{org}" and envelope["type"] == "FeedbackReceived"
        assert row["created_at"] == row["updated_at"]
        assert datetime.fromisoformat(payload["created_at"]) == datetime.fromisoformat(row["created_at"])
        assert {k: payload[k] for k in ("query", "tags", "feedback_value", "source")} == {
            k: row[k] for k in ("query", "tags", "feedback_value", "source")}
        assert row["tags"] == list(dict.fromkeys([f"t{int(row['query'][1:]) % 3}", "t0"]))  # normalized
