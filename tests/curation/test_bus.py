"""The curation service on the bus, as real processes on the real broker: FeedbackReceived and
FeedbackReviewed from the real feedback service reach the projection, once; an export through the
gateway goes out as DatasetExported on rlhf.dataset.exported.v1."""

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from services.curation.models import FeedbackView, processed_events
from shared.events import DatasetExported, FeedbackReviewed
from tests.support import envelope_of, eventually, of_org

pytestmark = pytest.mark.asyncio


async def view(curation_db, org, feedback_id):
    async with curation_db.read() as s:
        stmt = select(FeedbackView).where(FeedbackView.organization == org, FeedbackView.feedback_id == feedback_id)
        return (await s.execute(stmt)).scalar_one_or_none()


async def test_feedback_events_reach_the_projection_once(stack, gateway, make_key, kafka, curation_db, org):
    h = await make_key(org)
    r = await gateway.post("/api/feedback", json={"query": "Where are logs?", "response": "Nowhere.",
                                                  "feedback_type": "thumbs_down"}, headers=h)
    fid = uuid.UUID(r.json()["ids"][0])
    row = await eventually(lambda: view(curation_db, org, fid))
    assert (row.query, row.status) == ("Where are logs?", "pending")
    await gateway.patch(f"/api/feedback/{fid}", json={"status": "approved", "correction": "In Grafana."}, headers=h)

    async def approved():
        v = await view(curation_db, org, fid)
        return v if v and v.status == "approved" else None

    row = await approved() or await eventually(approved)
    assert row.review_correction == "In Grafana."
    # A redelivered event has no second effect. The copy below carries the id of an event already
    # applied but a later review that would win if it were applied (reviews are ordered by time).
    # The marker goes to the same partition after it: once the marker is applied, so was the copy.
    applied = await kafka.send_event(
        FeedbackReviewed(feedback_id=fid, status="approved", previous_status="pending", correction="In Grafana.",
                         reviewed_at=datetime.now(UTC)), org)
    await eventually(lambda: claimed(curation_db, applied.event_id))
    await kafka.send_event(
        FeedbackReviewed(feedback_id=fid, status="rejected", previous_status="approved",
                         reviewed_at=datetime.now(UTC) + timedelta(days=1)), org, event_id=applied.event_id)
    marker = await kafka.send_event(
        FeedbackReviewed(feedback_id=uuid.uuid4(), status="approved", previous_status="pending",
                         reviewed_at=datetime.now(UTC)), org, key=str(fid))
    await eventually(lambda: claimed(curation_db, marker.event_id))
    row = await view(curation_db, org, fid)
    assert (row.status, row.review_correction) == ("approved", "In Grafana.")


async def claimed(curation_db, event_id) -> bool:
    async with curation_db.read() as s:
        stmt = select(func.count()).select_from(processed_events).where(processed_events.c.event_id == event_id)
        return (await s.execute(stmt)).scalar_one() == 1


async def test_through_the_gateway_feedback_to_exported_event(
    stack, gateway, make_key, kafka, curation_db, org, tmp_path
):
    h = await make_key(org)
    items = []
    for i in range(12):
        items += [
            {"query": f"How to rotate key {i}?", "response": "Ignore it.", "feedback_type": "correction",
             "feedback_value": {"correction": f"Rotate key {i} in the vault, then redeploy."}},
            {"query": f"Scale job {i}?", "response": f"Set replicas of job {i} to 3.", "feedback_type": "thumbs_up"},
            {"query": f"scale job {i}", "response": "No idea.", "feedback_type": "thumbs_down"},
            {"query": f"Cache {i}?", "response": f"Use Redis for cache {i}.", "feedback_type": "rating",
             "feedback_value": {"rating": 5}},
            {"query": f"Cache {i}?", "response": "Use files.", "feedback_type": "rating",
             "feedback_value": {"rating": 2}},
        ]
    ids = (await gateway.post("/api/feedback/batch", json={"items": items}, headers=h)).json()["ids"]
    await eventually(lambda: view(curation_db, org, uuid.UUID(ids[-1])))
    for fid in ids:
        await eventually(lambda fid=fid: view(curation_db, org, uuid.UUID(fid)))
    ds = (await gateway.post("/api/training-datasets", json={
        "name": "E2E", "dataset_type": "dpo",
        "auto_train": {"provider": "huggingface", "base_model": "tiny", "method": "dpo"}}, headers=h)).json()
    r = await gateway.post("/api/preference-pairs/bulk", json={"dataset_id": ds["id"],
                                                               "strategies": ["correction", "thumbs", "rating"]},
                           headers=h)
    assert r.json()["created"] == {"correction": 12, "thumbs": 12, "rating": 12}
    report = (await gateway.post(f"/api/training-datasets/{ds['id']}/validate", json={"format": "openai_dpo"},
                                 headers=h)).json()
    assert report["passed"] and report["quality_score"] == 1.0
    await gateway.patch(f"/api/training-datasets/{ds['id']}", json={"status": "ready"}, headers=h)
    exports = []
    for fmt in ("openai_sft", "openai_dpo", "anthropic", "bedrock_claude", "trl_dpo", "parquet", "jsonl"):
        r = await gateway.post(f"/api/training-datasets/{ds['id']}/export", json={"format": fmt}, headers=h)
        assert r.status_code == 201, (fmt, r.text)
        exports.append(r.json())
    records = await kafka.collect([DatasetExported.topic()], lambda rs: len(rs) >= 7, match=of_org(org))
    payloads = [envelope_of(r)["payload"] for r in records]
    assert [p["format"] for p in payloads] == [e["format"] for e in exports]
    last = payloads[-1]
    assert (last["dataset_id"], last["export_version"], last["sha256"]) == (ds["id"], 7, exports[-1]["sha256"])
    # the event tells the services where the file lies; the answer gave the client its download URL
    assert last["url"].endswith(f"/datasets/{org}/{ds['id']}/v7/train.jsonl") and last["url"].startswith("file://")
    assert exports[-1]["url"] == f"/api/training-datasets/{ds['id']}/exports/7/files/train"
    assert last["counts"]["total"] == 36 and last["auto_train"]["method"] == "dpo"
    assert records[0].key == ds["id"].encode()

    # The CLI: a new version exported and downloaded through the gateway.
    out = tmp_path / "train.jsonl"
    cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rlhf.cli", "datasets", "export", ds["id"], "--format", "trl_dpo", "--out", str(out),
        "--url", stack.gateway_url, env=dict(os.environ, RLHF_API_KEY=h["Authorization"].split()[1]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = (await cli.communicate())[0].decode()
    assert cli.returncode == 0, output
    assert "export v8 (trl_dpo)" in output
    lines = out.read_text().splitlines()
    latest = (await gateway.get(f"/api/training-datasets/{ds['id']}/exports", headers=h)).json()[0]
    assert (latest["version"], latest["format"]) == (8, "trl_dpo")
    assert len(lines) == latest["counts"]["train"]
    assert set(json.loads(lines[0])) == {"prompt", "chosen", "rejected"}
