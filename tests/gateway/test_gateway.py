"""The whole stack through the gateway, as `rlhf up` runs it: real processes, broker and database."""

import pytest

from shared.events import FeedbackReceived
from tests.support import envelope_of, of_org

pytestmark = pytest.mark.asyncio


async def test_feedback_through_the_gateway_is_listed_and_announced(stack, gateway, make_key, kafka, org):
    h = await make_key(org, "curator")
    r = await gateway.post(
        "/api/feedback",
        json={"query": "How do I roll back?", "response": "You can't.", "feedback_type": "thumbs_down"},
        headers={**h, "X-Correlation-ID": f"gw-{org}"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["x-correlation-id"] == f"gw-{org}"
    fid = r.json()["ids"][0]
    listed = (await gateway.get("/api/feedback", headers=h)).json()["items"]
    assert [i["id"] for i in listed] == [fid]
    records = await kafka.collect([FeedbackReceived.topic()], lambda rs: len(rs) >= 1, match=of_org(org))
    env = envelope_of(records[0])
    assert env["payload"]["feedback_id"] == fid and env["correlation_id"] == f"gw-{org}"


async def test_gateway_passes_errors_through_and_rejects_unknown_routes(stack, gateway):
    assert (await gateway.get("/api/feedback")).status_code == 401
    r = await gateway.get("/api/nothing-here")
    assert r.status_code == 404 and "no service serves" in r.json()["message"]
    assert (await gateway.get("/healthz")).json()["service"] == "gateway"
    assert "rlhf_http_request_duration_seconds" in (await gateway.get("/metrics")).text
