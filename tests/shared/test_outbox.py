"""The outbox's tables on the real database and broker: what is unsent is exactly the ids in
`outbox_pending`, whichever way the rows were written; the relay empties it as it publishes;
retention purges published rows oldest first and never a pending one; and the migration to pending
ids keeps unsent what was unsent, both ways."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import MetaData, func, select, text

from shared.db import Database
from shared.events import FeedbackReceived
from shared.infra import ensure_topics
from shared.migrations import create_backbone_tables, outbox_pending_ids, outbox_published_at
from shared.outbox import OutboxMessage, OutboxRelay, make_producer, outbox_tables
from tests.support import envelope_of, eventually

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def scratch(migrated):
    """A throwaway schema made by `create_all` from `outbox_tables`, and a topic of its own."""
    schema = f"outbox_{uuid.uuid4().hex[:8]}"
    metadata = MetaData(schema=schema)
    outbox, pending = outbox_tables(metadata)
    db = Database(migrated.database_url, schema=schema, producer="tests", pool_size=2)
    async with db.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(metadata.create_all)
    topic = f"rlhf.test.{schema}.v1"
    await ensure_topics(migrated.kafka_bootstrap, [topic])
    producer: AIOKafkaProducer = make_producer(migrated.kafka_bootstrap)
    await producer.start()
    relay = OutboxRelay(db.engine, producer, schema=schema, service="tests", batch_size=50)
    try:
        yield {"db": db, "outbox": outbox, "pending": pending, "topic": topic, "relay": relay, "schema": schema}
    finally:
        await producer.stop()
        async with db.engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await db.dispose()


def messages(topic: str, n: int, key: str) -> list[OutboxMessage]:
    out = []
    for i in range(n):
        event_id = uuid.uuid4()
        envelope = f'{{"event_id": "{event_id}", "seq": {i}, "key": "{key}"}}'
        out.append(OutboxMessage(event_id, topic, key, "Test", "outbox-tests", str(event_id), envelope))
    return out


async def write(db: Database, batch: list[OutboxMessage]) -> None:
    async with db.unit_of_work() as uow:
        await db.outbox.write(uow.session, batch)


async def ids(db: Database, stmt) -> list[int]:
    async with db.read() as session:
        return list((await session.execute(stmt)).scalars())


async def test_every_row_written_is_pending_until_the_relay_publishes_it(scratch, kafka):
    db, outbox, pending, topic = scratch["db"], scratch["outbox"], scratch["pending"], scratch["topic"]
    await write(db, messages(topic, 3, "a"))  # fewer than COPY_THRESHOLD: a prepared INSERT per row
    await write(db, messages(topic, 120, "b"))  # COPY
    with pytest.raises(RuntimeError):
        async with db.unit_of_work() as uow:
            await db.outbox.write(uow.session, messages(topic, 40, "c"))
            raise RuntimeError("rolled back")

    written = await ids(db, select(outbox.c.id).order_by(outbox.c.id))
    assert len(written) == 123
    assert await ids(db, select(pending.c.id).order_by(pending.c.id)) == written
    assert await scratch["relay"].backlog() == 123

    assert await scratch["relay"].relay_once() == 123  # three batches of 50, pipelined
    assert await ids(db, select(pending.c.id)) == []
    assert await ids(db, select(func.count()).select_from(outbox)) == [123]  # kept for retention
    records = await kafka.read_all([topic])
    assert len(records) == 123
    for key in ("a", "b"):
        seqs = [envelope_of(r)["seq"] for r in records if r.key == key.encode()]
        assert seqs == list(range(len(seqs)))  # one key's events in the order they were written


async def test_the_relay_vacuums_the_pending_ids_it_has_deleted(scratch, kafka):
    """Claims read outbox_pending's key from the left: the relay VACUUMs it every VACUUM_EVERY ids it
    deleted, so that they do not walk over index entries of ids published long ago."""
    db, topic, relay, schema = scratch["db"], scratch["topic"], scratch["relay"], scratch["schema"]

    async def vacuums() -> int:
        async with db.read() as session:
            return (await session.execute(text(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = :s AND relname = 'outbox_pending'"),
                {"s": schema})).scalar_one()

    relay.VACUUM_EVERY = 100
    await write(db, messages(topic, 80, "v"))
    assert await relay.relay_once() == 80
    await asyncio.sleep(0.5)
    assert await vacuums() == 0  # fewer than VACUUM_EVERY deleted so far
    await write(db, messages(topic, 80, "v"))
    assert await relay.relay_once() == 80
    assert await eventually(vacuums, timeout=30) == 1


async def test_retention_purges_published_rows_oldest_first_and_never_a_pending_one(scratch):
    db, outbox, pending, topic, relay = (scratch[k] for k in ("db", "outbox", "pending", "topic", "relay"))
    await write(db, messages(topic, 6, "p"))
    assert await relay.relay_once() == 6
    await write(db, messages(topic, 1, "q"))  # not published
    rows = await ids(db, select(outbox.c.id).order_by(outbox.c.id))
    young, unsent = rows[5], rows[6]
    async with db.engine.begin() as conn:  # everything but `young` is two days old
        await conn.execute(text(f'UPDATE "{scratch["schema"]}".outbox SET created_at = now() - interval \'2 days\' '
                                "WHERE id <> :young"), {"young": young})

    assert await relay.purge(chunk=2) == 5  # in chunks of two, from the oldest
    assert await ids(db, select(outbox.c.id).order_by(outbox.c.id)) == [young, unsent]
    assert await ids(db, select(pending.c.id)) == [unsent]
    assert await relay.purge(chunk=2) == 0
    assert await relay.replay_retained() == 1  # what is kept and was published: `young` alone


def run_migration(sync_conn, step, schema: str) -> None:
    step(Operations(MigrationContext.configure(sync_conn)), schema)


async def test_the_migration_to_pending_ids_keeps_unsent_what_was_unsent_both_ways(migrated):
    schema = f"outbox_mig_{uuid.uuid4().hex[:8]}"
    db = Database(migrated.database_url, schema=schema, producer="tests", pool_size=1)
    q = f'"{schema}"'
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text(f"CREATE SCHEMA {q}"))
            await conn.run_sync(run_migration, create_backbone_tables, schema)  # version 1
            await conn.execute(text(
                f"INSERT INTO {q}.outbox (event_id, topic, key, event_type, organization, correlation_id, envelope, "
                "published_at) SELECT gen_random_uuid(), 't', 'k', 'T', 'o', 'c', '{}', "
                "CASE WHEN i % 3 = 0 THEN NULL ELSE now() END FROM generate_series(1, 9) i"))
            unpublished = list((await conn.execute(text(
                f"SELECT id FROM {q}.outbox WHERE published_at IS NULL ORDER BY id"))).scalars())
            assert len(unpublished) == 3

            await conn.run_sync(run_migration, outbox_pending_ids, schema)
            assert (await conn.execute(text(
                f"SELECT count(*) FROM pg_constraint WHERE conrelid = '{schema}.outbox'::regclass AND contype = 'u'"
            ))).scalar() == 0
            assert list((await conn.execute(text(f"SELECT id FROM {q}.outbox_pending ORDER BY id"))).scalars()) \
                == unpublished
            await conn.execute(text(
                f"INSERT INTO {q}.outbox (event_id, topic, key, event_type, organization, correlation_id, envelope) "
                "VALUES (gen_random_uuid(), 't', 'k', 'T', 'o', 'c', '{}')"))  # the trigger enqueues it
            pending = list((await conn.execute(text(f"SELECT id FROM {q}.outbox_pending ORDER BY id"))).scalars())
            assert pending[:3] == unpublished and len(pending) == 4

            await conn.run_sync(run_migration, outbox_published_at, schema)  # and back to version 1
            assert list((await conn.execute(text(
                f"SELECT id FROM {q}.outbox WHERE published_at IS NULL ORDER BY id"))).scalars()) == pending
            assert (await conn.execute(text(f"SELECT to_regclass('{schema}.outbox_pending')"))).scalar() is None
            assert (await conn.execute(text(  # the unique index on event_id is back
                f"SELECT count(*) FROM pg_constraint WHERE conrelid = '{schema}.outbox'::regclass AND contype = 'u'"
            ))).scalar() == 1
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA IF EXISTS {q} CASCADE"))
        await db.dispose()


async def test_an_idle_relay_publishes_a_commit_at_once_woken_by_the_notify_after_it(scratch, kafka):
    """The relay's safety poll is set to an hour: only the NOTIFY sent after the commit can wake it."""
    db, relay = scratch["db"], scratch["relay"]
    relay.IDLE_POLL = 3600.0
    running = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: asyncio.sleep(0, relay._listener.listening))
        await asyncio.sleep(0.2)  # the relay found nothing and waits
        feedback_id = uuid.uuid4()
        async with db.unit_of_work() as uow:
            uow.emit(FeedbackReceived(query="q", response="r", feedback_type="thumbs_up", feedback_id=feedback_id,
                                      created_at=datetime.now(UTC), source="bus"), organization="outbox-tests")
        await eventually(lambda: _drained(relay), timeout=10)
        records = await kafka.read_all([FeedbackReceived.topic()], match=lambda r: r.key == str(feedback_id).encode())
        assert len(records) == 1
    finally:
        relay.stop()
        await asyncio.wait_for(running, 10)


async def _drained(relay: OutboxRelay) -> bool:
    return await relay.backlog() == 0
