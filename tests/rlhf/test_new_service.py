"""A new service is its folder plus one line: the tally service in tests/rlhf/tally_service is
named nowhere but in the list of modules the stack is given, and the stack migrates it, starts
it, subscribes it to its events, and the gateway routes its prefix to it."""

import httpx
import pytest

from rlhf.stack import Stack
from shared.infra import ensure_topics, free_port
from tests.support import eventually

pytestmark = pytest.mark.asyncio

TALLY = "tests.rlhf.tally_service.main"


async def test_a_service_wired_only_by_its_spec_joins_the_stack(stack, gateway, make_key, org, tmp_path):
    # Beside the running stack (same database and broker), a second stack of just the new service.
    extra = Stack(
        tmp_path, database_url=stack.database_url, kafka_bootstrap=stack.kafka_bootstrap,
        gateway_port=free_port(), service_ports={"tally": free_port()}, extra_env=stack.extra_env, services=[TALLY],
    )
    extra.start_infrastructure()  # nothing to start: it only makes the data and log folders
    await extra.migrate()
    await ensure_topics(stack.kafka_bootstrap, [t for spec in extra.services.values() for t in spec.topics])
    extra.start_services()
    try:
        h = await make_key(org, "viewer")
        for query in ("one", "two", "three"):
            body = {"query": query, "response": "r", "feedback_type": "thumbs_up"}
            r = await gateway.post("/api/feedback", json=body, headers=h)
            assert r.status_code == 201
        async with httpx.AsyncClient(base_url=extra.gateway_url, timeout=30) as tally_gateway:
            async def counted():
                r = await tally_gateway.get("/api/tallies", headers=h)
                assert r.status_code == 200, r.text
                return r.json()["feedback_received"] == 3

            await eventually(counted)
            assert (await tally_gateway.get("/api/tallies")).status_code == 401  # the shared auth came with it
            assert (await tally_gateway.get("/api/feedback", headers=h)).status_code == 404  # not in this stack
    finally:
        extra.stop()
