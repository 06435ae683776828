"""The idempotent consumer on the real broker and database: transient errors are retried, a batch
that outlasts its retries comes again (with the batch read behind it) in order, a poison message
inside a batch is isolated to the dead-letter topic, repeats have one effect."""

import asyncio
import uuid

import pytest
import pytest_asyncio
from faststream.kafka import KafkaBroker
from sqlalchemy import BigInteger, Column, Identity, MetaData, Table, Text, func, select, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.exc import OperationalError

from shared.consumer import IdempotentConsumer, PoisonMessage, Route, processed_events_table
from shared.db import Database
from shared.events import FeedbackSubmitted, dlq_topic
from shared.infra import ensure_topics
from tests.support import envelope_of, eventually

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def scratch(migrated):
    """A throwaway schema with an effects table (no unique constraint: a second effect would show)
    and a fresh topic."""
    schema = f"consumer_{uuid.uuid4().hex[:8]}"
    topic = f"rlhf.test.{schema}.v1"
    metadata = MetaData(schema=schema)
    effects = Table("effects", metadata, Column("event_id", UUID(as_uuid=True)), Column("query", Text),
                    Column("seq", BigInteger, Identity()))  # the order effects were applied in
    processed = processed_events_table(metadata)
    db = Database(migrated.database_url, schema=schema, producer="tests", pool_size=2)
    async with db.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(metadata.create_all)
    await ensure_topics(migrated.kafka_bootstrap, [topic, dlq_topic(topic)], partitions=1)
    yield db, effects, processed, topic
    async with db.engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await db.dispose()


async def run_consumer(migrated, scratch, handler, **options):
    db, effects, processed, topic = scratch
    broker = KafkaBroker(migrated.kafka_bootstrap, enable_idempotence=False, logger=None)
    IdempotentConsumer(db, broker, processed, service=f"test-{uuid.uuid4().hex[:6]}", routes={topic: Route(handler)},
                       **({"retry_backoff": 0.01, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000} | options))
    await broker.start()
    return broker


async def publish(kafka, topic, queries, *, event_id=None):
    producer = await kafka.producer()
    envelopes = []
    for q in queries:
        env = FeedbackSubmitted(query=q, response="r", feedback_type="thumbs_up").envelope(
            organization="acme", producer="tests", event_id=event_id
        )
        await producer.send_and_wait(topic, env.model_dump_json().encode())
        envelopes.append(env)
    return envelopes


async def effect_queries(db, effects) -> list[str]:
    async with db.read() as s:
        return sorted((await s.execute(select(effects.c.query))).scalars())


async def test_transient_errors_are_retried_and_applied_once(migrated, scratch, kafka):
    db, effects, _, topic = scratch
    failures = {"left": 2}

    async def flaky(uow, deliveries):
        await uow.session.execute(effects.insert(), [{"event_id": d.envelope.event_id, "query": d.event.query}
                                                     for d in deliveries])
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("INSERT", {}, ConnectionResetError("connection reset by peer"))

    broker = await run_consumer(migrated, scratch, flaky)
    try:
        await publish(kafka, topic, ["a", "b"])
        await eventually(lambda: _count(db, effects, 2))
        await publish(kafka, topic, ["marker"])  # one partition: once the marker is in, so is all before it
        await eventually(lambda: _count(db, effects, 3))
        assert await effect_queries(db, effects) == ["a", "b", "marker"]  # the failed attempts rolled back
        assert failures["left"] == 0
    finally:
        await broker.stop()


async def test_a_batch_failing_past_its_retries_comes_again_with_the_batch_read_behind_it(migrated, scratch, kafka):
    """Batches are pipelined (the next one is decoded while one is applied): a batch whose retries
    run out is rewound, alone (nothing behind it) or with the batch already read behind it, and
    everything is then applied once, in offset order."""
    db, effects, _, topic = scratch
    failing = {"a": 3, "c": 3}  # more failures than one delivery's two attempts (max_retries=1)
    jumped: list[list[str]] = []
    c_in_flight = asyncio.Event()

    async def flaky(uow, deliveries):
        queries = [d.event.query for d in deliveries]
        if "d" in queries and "c" not in queries and failing["c"]:
            jumped.append(queries)  # what was read behind "c" handled before "c" was
        for q in queries:
            if failing.get(q):
                failing[q] -= 1
                if q == "c":
                    c_in_flight.set()
                    await asyncio.sleep(0.7)  # slow enough for the next batch to be read and decoded
                raise OperationalError("INSERT", {}, ConnectionResetError("connection reset by peer"))
        await uow.session.execute(effects.insert(), [{"event_id": d.envelope.event_id, "query": d.event.query}
                                                     for d in deliveries])

    broker = await run_consumer(migrated, scratch, flaky, max_retries=1, fetch_max_wait_ms=50)
    try:
        await publish(kafka, topic, ["a", "b"])  # rewound with nothing behind it: still comes again
        await eventually(lambda: _count(db, effects, 2))
        await publish(kafka, topic, ["c"])
        await asyncio.wait_for(c_in_flight.wait(), 30)
        await publish(kafka, topic, ["d", "e"])  # read while "c" fails: dropped with it, then again
        await eventually(lambda: _count(db, effects, 5))
        async with db.read() as s:
            applied = list((await s.execute(select(effects.c.query).order_by(effects.c.seq))).scalars())
        assert applied == ["a", "b", "c", "d", "e"]
        assert failing == {"a": 0, "c": 0} and jumped == []
    finally:
        await broker.stop()


async def test_a_poison_event_in_a_batch_is_isolated_and_the_rest_applied(migrated, scratch, kafka):
    db, effects, _, topic = scratch

    async def refuses_bad(uow, deliveries):
        for d in deliveries:
            if d.event.query == "bad":
                raise PoisonMessage("this query can never be applied")
        await uow.session.execute(effects.insert(), [{"event_id": d.envelope.event_id, "query": d.event.query}
                                                     for d in deliveries])

    broker = await run_consumer(migrated, scratch, refuses_bad)
    try:
        sent = await publish(kafka, topic, ["one", "bad", "two"])
        await eventually(lambda: _count(db, effects, 2))
        dead = await kafka.collect([dlq_topic(topic)], lambda rs: len(rs) >= 1)
        assert [envelope_of(r)["event_id"] for r in dead] == [str(sent[1].event_id)]
        assert b"can never be applied" in dict(dead[0].headers)["dlq_reason"]
        assert await effect_queries(db, effects) == ["one", "two"]
    finally:
        await broker.stop()


async def test_the_same_event_id_has_one_effect(migrated, scratch, kafka):
    db, effects, processed, topic = scratch

    async def record(uow, deliveries):
        await uow.session.execute(effects.insert(), [{"event_id": d.envelope.event_id, "query": d.event.query}
                                                     for d in deliveries])

    broker = await run_consumer(migrated, scratch, record)
    try:
        event_id = uuid.uuid4()
        await publish(kafka, topic, ["x", "x", "x"], event_id=event_id)
        await publish(kafka, topic, ["marker"])
        await eventually(lambda: _count(db, effects, 2))  # one partition: the marker comes after every copy
        assert await effect_queries(db, effects) == ["marker", "x"]
        async with db.read() as s:
            assert (await s.execute(select(func.count()).select_from(processed))).scalar_one() == 2
    finally:
        await broker.stop()


async def _count(db, effects, n) -> bool:
    async with db.read() as s:
        return (await s.execute(select(func.count()).select_from(effects))).scalar_one() >= n
