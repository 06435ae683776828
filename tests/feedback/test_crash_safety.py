"""Crash safety, with real processes killed by SIGKILL at the worst moments.

Each test gets its own database and its own Tansu broker, so no other relay or consumer can do
the work the crashed process left behind.
"""

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
from faststream.kafka import KafkaBroker
from sqlalchemy import Column, MetaData, Table, Text, func, select, text
from sqlalchemy.dialects.postgresql import UUID

from rlhf.stack import migrate_all
from services.feedback.main import SPEC
from services.feedback.models import Feedback, outbox, outbox_pending
from shared.consumer import IdempotentConsumer, Route, processed_events_table
from shared.db import Database
from shared.events import FeedbackReceived, FeedbackSubmitted
from shared.infra import ensure_topics, free_port
from shared.migrations import create_backbone_tables
from shared.outbox import encode
from shared.service import build_app
from shared.settings import Settings
from tests.support import KafkaProbe, envelope_of, eventually, isolated_infrastructure

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def isolated(migrated):
    """A fresh database (migrated) and a fresh broker (topics made) for one test."""
    async with isolated_infrastructure(migrated.database_url, "crash") as (url, broker):
        await migrate_all(url)
        await ensure_topics(broker.bootstrap, SPEC.topics)
        db = Database(url, schema=SPEC.schema, producer=SPEC.name, pool_size=3)
        probe = KafkaProbe(broker.bootstrap)
        yield {"url": url, "bootstrap": broker.bootstrap, "db": db, "kafka": probe}
        await probe.close()
        await db.dispose()


def start_role(env: dict, role: str, **extra: str) -> subprocess.Popen:
    full = {
        **os.environ, "DATABASE_URL": env["url"], "KAFKA_BOOTSTRAP_SERVERS": env["bootstrap"],
        "RLHF_LOG_LEVEL": "WARNING", **extra,
    }
    return subprocess.Popen([sys.executable, "-m", "services.feedback.main", "--role", role], env=full)


async def wait_exit(process: subprocess.Popen, timeout: float = 60) -> int:
    return await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)


async def stop(process: subprocess.Popen) -> None:
    process.terminate()
    await wait_exit(process, 30)


async def scalar(db: Database, stmt):
    async with db.read() as s:
        return (await s.execute(stmt)).scalar_one()


async def test_relay_killed_after_publish_before_marking_sent(isolated):
    db, kafka = isolated["db"], isolated["kafka"]
    org = "crash-relay"
    settings = Settings(database_url=isolated["url"], kafka_bootstrap_servers=isolated["bootstrap"])
    key_headers = await _key(db, org)
    app = build_app(SPEC, db, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://feedback") as api:
        for _ in range(4):
            items = [{"query": f"q{uuid.uuid4()}", "response": "r", "feedback_type": "thumbs_up"}] * 50
            r = await api.post("/api/feedback/batch", json={"items": items}, headers=key_headers)
            assert r.status_code == 201
    unsent = select(func.count()).select_from(outbox_pending)
    assert await scalar(db, unsent) == 200

    # The relay publishes its first batch of 50, then dies before marking the rows sent.
    crashed = start_role(isolated, "relay", RLHF_FAILPOINTS="outbox.after_publish", RLHF_OUTBOX_BATCH_SIZE="50")
    assert await wait_exit(crashed) == -9
    assert await scalar(db, unsent) == 200  # nothing was marked: the crash lost the marks, not the events
    first = await kafka.read_all([FeedbackReceived.topic()])  # the relay is dead: the topic is final
    assert len(first) == 50  # ...and those 50 did reach Kafka

    relay = start_role(isolated, "relay", RLHF_OUTBOX_BATCH_SIZE="50")
    try:
        await eventually(lambda: _is_zero(db, unsent))
    finally:
        await stop(relay)
    records = await kafka.read_all([FeedbackReceived.topic()])  # the outbox is drained: the topic is final
    ids = [envelope_of(r)["event_id"] for r in records]
    assert len(ids) == 250 and len(set(ids)) == 200  # every event at least once; the first 50 twice

    # Downstream, an idempotent consumer turns the 250 deliveries into exactly 200 effects.
    effects = await _run_downstream_consumer(isolated, expected=200)
    assert effects == (200, 200)


async def test_the_relay_publishes_batch_after_batch_in_outbox_order_for_each_key(isolated):
    """The relay reads batch N+1 while N's events travel and marks N while N+1's do: each event still
    goes out once, and the events of one key (one feedback item) in the order they were written."""
    db, kafka = isolated["db"], isolated["kafka"]
    items = [uuid.uuid4() for _ in range(7)]
    for round_ in range(9):  # 9 transactions of 35 events: 315 rows, batches of 50 cut across them
        async with db.unit_of_work() as uow:
            for n in range(35):
                uow.emit(FeedbackReceived(query=f"{round_}:{n}", response="r", feedback_type="thumbs_up",
                                          feedback_id=items[n % 7], created_at=datetime.now(UTC), source="bus"),
                         organization="relay-order")
    async with db.read() as s:
        written = [str(e) for e in (await s.execute(select(outbox.c.event_id).order_by(outbox.c.id))).scalars()]

    port = free_port()  # a process without the API serves its /healthz and /metrics on the port it is given
    relay = start_role(isolated, "relay", RLHF_OUTBOX_BATCH_SIZE="50", RLHF_HTTP_PORT=str(port))
    try:
        unsent = select(func.count()).select_from(outbox_pending)
        await eventually(lambda: _is_zero(db, unsent))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as probe:
            assert (await probe.get("/healthz")).json() == {"status": "ok", "service": "feedback"}
            metrics = (await probe.get("/metrics")).text
        published = f'rlhf_events_published_total{{service="feedback",topic="{FeedbackReceived.topic()}"}} 315.0'
        assert published in metrics
    finally:
        await stop(relay)
    records = await kafka.read_all([FeedbackReceived.topic()])
    sent = [envelope_of(r) for r in records]
    assert sorted(e["event_id"] for e in sent) == sorted(written)  # each once
    rank = {event_id: i for i, event_id in enumerate(written)}
    for item in items:
        of_item = [rank[e["event_id"]] for e in sent if e["payload"]["feedback_id"] == str(item)]
        assert len(of_item) == 45 and of_item == sorted(of_item)


async def test_consumer_killed_mid_stream_stores_every_event_exactly_once(isolated):
    db, kafka = isolated["db"], isolated["kafka"]
    org = "crash-consumer"
    producer = await kafka.producer()
    sends = []
    for i in range(10_000):  # unkeyed: spread over every partition
        message = encode(FeedbackSubmitted(query=f"q{i}", response="r", feedback_type="thumbs_down"),
                         organization=org, producer="tests")
        sends.append(await producer.send(FeedbackSubmitted.topic(), message.envelope.encode()))
    await asyncio.gather(*sends)

    # Dies on its 20th batch of 100, after the database commit and before the offset commit.
    crashed = start_role(
        isolated, "consumer", RLHF_FAILPOINTS="consumer.after_db_commit@20", RLHF_CONSUMER_MAX_RECORDS="100",
        RLHF_CONSUMER_SESSION_TIMEOUT_MS="6000", RLHF_CONSUMER_HEARTBEAT_INTERVAL_MS="1000",
    )
    assert await wait_exit(crashed, 120) == -9
    rows = select(func.count()).where(Feedback.organization == org)
    at_crash = await scalar(db, rows)
    assert 0 < at_crash < 10_000

    consumer = start_role(
        isolated, "consumer", RLHF_CONSUMER_SESSION_TIMEOUT_MS="6000", RLHF_CONSUMER_HEARTBEAT_INTERVAL_MS="1000"
    )
    try:
        await eventually(lambda: _at_least(db, rows, 10_000), timeout=180)
        # Once a marker on every partition is stored, every earlier message (and copy) was consumed.
        markers = await kafka.send_marker_to_each_partition(
            FeedbackSubmitted(query="marker", response="r", feedback_type="thumbs_up"), "crash-markers")
        stored_markers = select(func.count()).where(Feedback.organization == "crash-markers")
        await eventually(lambda: _at_least(db, stored_markers, len(markers)), timeout=120)
    finally:
        await stop(consumer)
    assert await scalar(db, rows) == 10_000
    distinct = select(func.count(func.distinct(Feedback.query))).where(Feedback.organization == org)
    assert await scalar(db, distinct) == 10_000
    announced = select(func.count()).select_from(outbox).where(outbox.c.organization == org)
    assert await scalar(db, announced) == 10_000  # one FeedbackReceived each


async def _is_zero(db, stmt) -> bool:
    return await scalar(db, stmt) == 0


async def _at_least(db, stmt, n) -> bool:
    return await scalar(db, stmt) >= n


async def _key(db: Database, org: str) -> dict[str, str]:
    from shared.auth import Role, create_key

    return {"Authorization": f"Bearer {await create_key(db.engine, organization=org, role=Role.curator)}"}


async def _run_downstream_consumer(env, *, expected: int) -> tuple[int, int]:
    """A minimal downstream service on the shared consumer machinery: one row per handled event,
    with no unique constraint, so a second effect would show as a second row."""
    schema = "downstream"
    metadata = MetaData(schema=schema)
    effects = Table("effects", metadata, Column("event_id", UUID(as_uuid=True)), Column("feedback_id", Text))
    processed = processed_events_table(metadata)
    db = Database(env["url"], schema=schema, producer="downstream", pool_size=2)
    async with db.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(lambda c: _create(c, schema, effects))

    async def record_effect(uow, deliveries):
        await uow.session.execute(
            effects.insert(),
            [{"event_id": d.envelope.event_id, "feedback_id": str(d.event.feedback_id)} for d in deliveries],
        )

    broker = KafkaBroker(env["bootstrap"], enable_idempotence=False, logger=None)
    IdempotentConsumer(db, broker, processed, service="downstream",
                       routes={FeedbackReceived.topic(): Route(record_effect)},
                       session_timeout_ms=6000, heartbeat_interval_ms=1000)
    await broker.start()
    try:
        # The duplicates are all in the topic already: once a marker behind them on every partition
        # has its effect, so has every copy that was going to.
        marker = FeedbackReceived(query="marker", response="r", feedback_type="thumbs_up", feedback_id=uuid.uuid4(),
                                  created_at=datetime.now(UTC), source="bus")
        markers = await env["kafka"].send_marker_to_each_partition(marker, "crash-markers")
        is_marker = effects.c.feedback_id == str(marker.feedback_id)
        await eventually(lambda: _at_least(db, select(func.count()).where(is_marker), len(markers)), timeout=120)
        total = await scalar(db, select(func.count()).select_from(effects).where(~is_marker))
        distinct = await scalar(db, select(func.count(func.distinct(effects.c.event_id))).where(~is_marker))
    finally:
        await broker.stop()
        await db.dispose()
    return total, distinct


def _create(connection, schema, effects):
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    effects.create(connection)
    create_backbone_tables(Operations(MigrationContext.configure(connection)), schema)
