"""Nothing is lost when the embedded broker restarts: feedback posted while curation's consumer
is down is published to the in-memory broker, which then stops with the stack and forgets it; the
next start finds the broker fresh, the relays publish their retained outboxes again, and every
item reaches curation's projection exactly once."""

import os
import signal

import httpx
import pytest
from sqlalchemy import func, select

from rlhf.stack import Stack, service_specs
from services.curation.models import FeedbackView, processed_events
from services.feedback.models import outbox_pending
from shared import auth
from shared.db import make_engine
from shared.infra import free_port
from tests.support import eventually

pytestmark = pytest.mark.asyncio
ITEMS = 40


def fresh_stack(data_dir) -> Stack:
    env = {k: v for k, v in os.environ.items() if k.startswith("RLHF_CONSUMER") or k == "RLHF_OUTBOX_POLL_INTERVAL"}
    return Stack(data_dir, kafka_port=free_port(), gateway_port=free_port(),
                 service_ports={spec.name: free_port() for spec in service_specs()}, extra_env=env)


async def scalar(engine, stmt):
    async with engine.connect() as conn:
        return (await conn.execute(stmt)).scalar_one()


async def test_a_restarted_embedded_broker_loses_nothing(tmp_path):
    data_dir = tmp_path / "state"
    first = fresh_stack(data_dir)
    first.start_infrastructure()
    await first.migrate()
    first.start_services()
    engine = make_engine(first.database_url, pool_size=2)
    try:
        key = await auth.create_key(engine, organization="acme", role=auth.Role.curator)
        h = {"Authorization": f"Bearer {key}"}
        first.processes["curation"].send_signal(signal.SIGKILL)  # its consumer will not read what follows
        first.processes["curation"].wait()
        async with httpx.AsyncClient(base_url=first.gateway_url, timeout=30) as gateway:
            items = [{"query": f"q{i}", "response": "r", "feedback_type": "thumbs_up"} for i in range(ITEMS)]
            r = await gateway.post("/api/feedback/batch", json={"items": items}, headers=h)
            assert r.status_code == 201
        ids = r.json()["ids"]
        unsent = select(func.count()).select_from(outbox_pending)
        await eventually(lambda: _is(engine, unsent, 0))  # published to the broker, marked sent...
        first.stop()  # ...and gone with it: the broker kept them in memory only

        second = fresh_stack(data_dir)
        second.start_infrastructure()
        assert second.database_url == first.database_url and second.kafka_bootstrap != first.kafka_bootstrap
        await second.migrate()
        second.start_services()
        try:
            projected = select(func.count()).select_from(FeedbackView).where(FeedbackView.organization == "acme")
            await eventually(lambda: _is(engine, projected, ITEMS), timeout=120)
            in_view = select(FeedbackView.feedback_id).where(FeedbackView.organization == "acme")
            async with engine.connect() as conn:
                assert sorted(str(i) for i in (await conn.execute(in_view)).scalars()) == sorted(ids)
            # Each FeedbackReceived applied once: one processed-event row per event, none for a second copy.
            received = select(func.count()).select_from(processed_events).where(
                processed_events.c.topic == "rlhf.feedback.received.v1")
            assert await scalar(engine, received) == ITEMS
        finally:
            second.stop()
    finally:
        await engine.dispose()


async def _is(engine, stmt, n) -> bool:
    return await scalar(engine, stmt) == n
