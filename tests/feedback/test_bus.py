"""The feedback service on the bus, as real processes on the real broker: raw feedback in on
rlhf.feedback.submitted.v1, FeedbackReceived / FeedbackReviewed out, dead letters for poison."""

import uuid

import orjson
import pytest
from sqlalchemy import func, select

from services.feedback.models import Feedback, outbox
from shared.events import FeedbackReceived, FeedbackReviewed, FeedbackSubmitted, dlq_topic
from tests.support import envelope_of, eventually, of_org

pytestmark = pytest.mark.asyncio

SUBMITTED = FeedbackSubmitted.topic()
RECEIVED = FeedbackReceived.topic()


def submitted(**overrides) -> FeedbackSubmitted:
    fields = dict(query="Where are the logs?", response="In /var/log.", feedback_type="thumbs_up",
                  session_id="chat-1", model_id="base-v1")
    fields.update(overrides)
    return FeedbackSubmitted(**fields)


async def stored(feedback_db, org) -> list[Feedback]:
    async with feedback_db.read() as s:
        return list((await s.execute(select(Feedback).where(Feedback.organization == org))).scalars())


async def test_submitted_is_stored_and_announced(stack, kafka, feedback_db, org):
    sent = await kafka.send_event(submitted(tags=["Bus"]), org)
    rows = await eventually(lambda: stored(feedback_db, org))
    assert len(rows) == 1
    row = rows[0]
    assert (row.query, row.source, row.tags, row.model_id) == ("Where are the logs?", "bus", ["bus"], "base-v1")
    records = await kafka.collect([RECEIVED], lambda rs: len(rs) >= 1, match=of_org(org))
    env = envelope_of(records[0])
    assert env["type"] == "FeedbackReceived" and env["payload"]["feedback_id"] == str(row.id)
    assert env["correlation_id"] == sent.correlation_id  # the submitter's correlation carries through
    assert records[0].key == str(row.id).encode()


async def test_same_event_twice_is_stored_once(stack, kafka, feedback_db, org):
    event_id = uuid.uuid4()
    # Submissions are keyed by organization: the three land on one partition, in this order, so once
    # the marker is stored both copies of the duplicate have been consumed.
    await kafka.send_event(submitted(query="dup"), org, event_id=event_id)
    await kafka.send_event(submitted(query="dup"), org, event_id=event_id)
    await kafka.send_event(submitted(query="after"), org)
    await eventually(lambda: _has_query(feedback_db, org, "after"))
    rows = await stored(feedback_db, org)
    assert sorted(r.query for r in rows) == ["after", "dup"]
    async with feedback_db.read() as s:  # each stored item announced once, in its own transaction
        announced = (await s.execute(select(outbox.c.key).where(outbox.c.organization == org))).scalars().all()
    assert sorted(announced) == sorted(str(r.id) for r in rows)
    records = await kafka.collect([RECEIVED], lambda rs: len(rs) >= 2, match=of_org(org))
    assert sorted(r.key.decode() for r in records) == sorted(announced)


async def _has_query(feedback_db, org, query) -> bool:
    async with feedback_db.read() as s:
        stmt = select(func.count()).where(Feedback.organization == org, Feedback.query == query)
        return (await s.execute(stmt)).scalar_one() > 0


@pytest.mark.parametrize(
    "poison, reason",
    [
        (b"{not json", "json_invalid"),
        ("unknown-version", "unknown event type/version: FeedbackSubmitted v9"),
        ("bad-payload", "feedback_type"),
    ],
)
async def test_poison_goes_to_dead_letter_and_the_next_message_is_processed(
    stack, kafka, feedback_db, org, poison, reason
):
    marker = uuid.uuid4().hex
    if poison == "unknown-version":
        env = submitted().envelope(organization=org, producer="tests").model_dump(mode="json")
        poison = orjson.dumps({**env, "version": 9, "correlation_id": marker})
    elif poison == "bad-payload":
        env = submitted().envelope(organization=org, producer="tests").model_dump(mode="json")
        env["payload"]["feedback_type"] = "smiley"
        poison = orjson.dumps({**env, "correlation_id": marker})
    else:
        poison = poison + marker.encode()
    await kafka.send_raw(SUBMITTED, poison)
    await kafka.send_event(submitted(query="good after poison"), org)

    rows = await eventually(lambda: stored(feedback_db, org))
    assert [r.query for r in rows] == ["good after poison"]
    dead = await kafka.collect(
        [dlq_topic(SUBMITTED)], lambda rs: len(rs) >= 1, match=lambda r: marker.encode() in (r.value or b"")
    )
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert reason in headers["dlq_reason"]
    assert headers["dlq_original_topic"] == SUBMITTED
    assert headers["dlq_consumer_group"] == "rlhf.feedback"
    assert dead[0].value == poison  # the message itself, untouched, for replay


async def test_review_over_http_is_announced(stack, gateway, make_key, kafka, org):
    h = await make_key(org, "curator")
    fid = (await gateway.post("/api/feedback", json={"query": "q", "response": "r", "feedback_type": "thumbs_down"},
                              headers=h)).json()["ids"][0]
    r = await gateway.patch(f"/api/feedback/{fid}", json={"status": "approved", "correction": "better r"}, headers=h)
    assert r.status_code == 200
    records = await kafka.collect([FeedbackReviewed.topic()], lambda rs: len(rs) >= 1, match=of_org(org))
    payload = envelope_of(records[0])["payload"]
    assert (payload["feedback_id"], payload["status"], payload["previous_status"], payload["correction"]) == (
        fid, "approved", "pending", "better r"
    )
