"""Input that cannot be stored answers 422 naming the field, never a 500, and stores nothing
(issue 13's reproductions, through the feedback service on the real database)."""

import base64
import uuid

import pytest
from sqlalchemy import func, select

from services.feedback.models import Feedback

pytestmark = pytest.mark.asyncio

GOOD = b'{"query": "q", "response": "r", "feedback_type": "thumbs_up"}'


async def test_the_service_answers_422_and_stores_nothing(api, make_key, org, feedback_db):
    h = await make_key(org, "viewer") | {"content-type": "application/json"}
    bad = [
        (r'{"query": "a\u0000", "response": "r", "feedback_type": "thumbs_up"}', "query"),
        (r'{"query": "q", "response": "r", "feedback_type": "rating", "feedback_value": {"x": "\ud800"}}', "body"),
        ('{"query": "q", "response": "r", "feedback_type": "rating", "feedback_value": {"n": 18446744073709551616}}',
         "feedback_value.n"),
        ('{"query": "q", "response": "r", "feedback_type": "thumbs_up", "latency_ms": NaN}', "body"),
        ('{"query": "q", "response": "r", "feedback_type": "thumbs_up", "feedback_value": '
         + '{"a":' * 300 + "1" + "}" * 300 + "}", None),
    ]
    for body, field in bad:
        r = await api.post("/api/feedback", content=body.encode(), headers=h)
        assert r.status_code == 422, (body[:60], r.text)
        assert r.json()["error"] == "validation_error"
        if field:
            assert r.json()["errors"][0]["field"] == field
    for path in ("/api/feedback?tag=%00", "/api/feedback?session_id=%00", "/api/feedback/stats?tag=%00"):
        r = await api.get(path, headers=h)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] in ("query.tag", "query.session_id"), r.text
    async with feedback_db.read() as s:
        assert (await s.execute(select(func.count()).where(Feedback.organization == org))).scalar_one() == 0
    assert (await api.post("/api/feedback", content=GOOD, headers=h)).status_code == 201


async def test_out_of_range_numbers_dates_and_cursors_are_named(api, make_key, org):
    h = await make_key(org, "viewer")
    r = await api.post("/api/feedback", json={"query": "q", "response": "r", "feedback_type": "thumbs_up",
                                              "latency_ms": 2_147_483_648}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "latency_ms"
    for name, moment in (("created_from", "9999-12-31T23:59:59-14:00"), ("created_to", "0001-01-01T00:00:00+14:00")):
        for path in ("/api/feedback", "/api/feedback/stats"):
            r = await api.get(path, params={name: moment}, headers=h)
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == f"query.{name}", r.text
    forged = base64.urlsafe_b64encode(f"9999-12-31T23:59:59-14:00|{uuid.uuid4()}".encode()).decode().rstrip("=")
    r = await api.get("/api/feedback", params={"cursor": forged}, headers=h)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "cursor"
