"""The transactional outbox: events are rows written in the state change's own transaction; a relay
publishes them to Kafka in batches and marks them sent.

Two tables: `outbox` keeps each event (its wire envelope), written once and never changed;
`outbox_pending` holds the ids of those not yet published, filled by a statement trigger on `outbox`
in the writing transaction, emptied by the relay as it publishes. Marking a row sent is then a
delete of a 40-byte tuple, not an update of the 1 KB event: an update wrote the event again (WAL,
a second heap tuple, two index entries), the largest cost of publishing in PostgreSQL.

If the relay dies after publishing and before marking, the rows are published again on restart:
delivery is at least once, and consumers dedupe by event_id (see shared/consumer.py).

A broker that keeps topics in memory (the embedded Tansu) forgets, when it restarts, events that
were published but not yet consumed. With `replay_on_fresh_broker` (set by `rlhf up` when it starts
the embedded broker) a relay first asks the broker whether it has seen this service's replay
marker; a broker that has not is fresh, and the relay publishes again every outbox row still
within retention before anything new, then leaves the marker. Consumers drop what they had.
"""

import asyncio
import functools
import random
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import DDL, BigInteger, Column, DateTime, MetaData, Table, Text, event, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from shared.bulk import copy_or_insert
from shared.events import Event
from shared.failpoints import failpoint
from shared.infra import ensure_topics, read_topic
from shared.notifications import ChannelListener, ChannelNotifier, dsn_of
from shared.observability import EVENTS_PUBLISHED, OUTBOX_BACKLOG, get_logger

log = get_logger(__name__)


def outbox_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and its pending ids, in `metadata`'s schema, as the backbone migrations leave them
    (`create_all` makes the trigger too)."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", UUID(as_uuid=True), nullable=False),
        Column("topic", Text, nullable=False),
        Column("key", Text, nullable=True),
        # The envelope's routing fields again, so that the relay builds Kafka headers without parsing.
        Column("event_type", Text, nullable=False),
        Column("organization", Text, nullable=False),
        Column("correlation_id", Text, nullable=False),
        Column("envelope", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    pending = Table("outbox_pending", metadata, Column("id", BigInteger, primary_key=True, autoincrement=False))
    for statement in pending_trigger_ddl(metadata.schema):
        event.listen(pending, "after_create", DDL(statement))
    return outbox, pending


def pending_trigger_ddl(schema: str) -> list[str]:
    """The trigger that enqueues every row inserted into `schema`.outbox, once per statement (COPY
    included) from its transition table: the writers need not know about `outbox_pending`."""
    return [
        f'''CREATE FUNCTION "{schema}".outbox_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO "{schema}".outbox_pending (id) SELECT id FROM inserted;
                RETURN NULL;
            END $$''',
        f'''CREATE TRIGGER outbox_enqueue AFTER INSERT ON "{schema}".outbox REFERENCING NEW TABLE AS inserted
            FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".outbox_enqueue()''',
    ]


OUTBOX_COLUMNS = ["event_id", "topic", "key", "event_type", "organization", "correlation_id", "envelope"]
PARTITION_KEY_FIELDS = ("feedback_id", "dataset_id", "job_id", "experiment_id")
# One record per service and broker life, left by a relay once it has replayed its outbox.
REPLAY_MARKER_TOPIC = "rlhf.outbox.replayed"


class OutboxMessage(NamedTuple):
    """One event, encoded once, as it will sit in the outbox and travel on Kafka. Its fields are the
    outbox's OUTBOX_COLUMNS, in order: the message is its own COPY record."""

    event_id: uuid.UUID
    topic: str
    key: str
    event_type: str
    organization: str
    correlation_id: str
    envelope: str


def encode(
    event: Event,
    *,
    organization: str,
    producer: str,
    correlation_id: str | None = None,
    event_id: uuid.UUID | None = None,
) -> OutboxMessage:
    """The event as it will sit in the outbox and travel: its wire envelope and its partition key."""
    event_id = event_id or uuid.uuid4()
    correlation_id = correlation_id or str(event_id)
    envelope = event.to_wire(event_id=event_id, organization=organization, producer=producer,
                             correlation_id=correlation_id)
    key = partition_key(lambda field: getattr(event, field, None), organization)
    return OutboxMessage(event_id, event.topic(), key, event.type_name, organization, correlation_id, envelope)


def encode_many(
    event_type: type[Event],
    payloads: Sequence[Mapping[str, Any]],
    *,
    organization: str,
    producer: str,
    event_ids: Sequence[uuid.UUID],
    correlation_ids: Sequence[str | None],
) -> list[OutboxMessage]:
    """`encode` for a batch of events of one type, each given as its fields, already validated and in
    orjson's types (Event.many_to_wire); an event without a correlation id is its own."""
    ids = [str(i) for i in event_ids]
    correlation_ids = [c or i for c, i in zip(correlation_ids, ids, strict=True)]
    envelopes = event_type.many_to_wire(payloads, event_ids=ids, organization=organization, producer=producer,
                                        correlation_ids=correlation_ids)
    topic, type_name = event_type.topic(), event_type.type_name
    return [OutboxMessage(event_id, topic, partition_key(payload.get, organization), type_name, organization,
                          correlation_id, envelope)
            for event_id, payload, correlation_id, envelope in zip(event_ids, payloads, correlation_ids, envelopes,
                                                                   strict=True)]


def partition_key(field_of: Callable[[str], Any], organization: str) -> str:
    """Events about one entity stay in order: key by the first of PARTITION_KEY_FIELDS the payload
    has and fills; events that name none of them (e.g. budget changes) are keyed by organization."""
    for field in PARTITION_KEY_FIELDS:
        value = field_of(field)
        if value:
            return str(value)
    return organization


_CONTENT_TYPE = ("content-type", b"application/json")


@functools.lru_cache(maxsize=4096)
def _routing_headers(event_type: str, organization: str) -> tuple[tuple[str, bytes], ...]:
    # Few distinct pairs, one per row: encoded once each (8% of the relay's CPU, per row).
    return ("event_type", event_type.encode()), ("organization", organization.encode())


def kafka_headers(row) -> list[tuple[str, bytes]]:
    """Kafka headers repeating the envelope's routing fields, so tools can filter without parsing."""
    return [
        _CONTENT_TYPE,
        ("event_id", row.event_id.encode()),  # the relay reads it as text
        *_routing_headers(row.event_type, row.organization),
        ("correlation_id", row.correlation_id.encode()),
    ]


def wakeup_channel(schema: str) -> str:
    """The PostgreSQL NOTIFY channel on which a commit that wrote outbox rows wakes the relays."""
    return f"rlhf_outbox_{schema}"


class OutboxWriter:
    """Adds events to the outbox inside the caller's transaction; once that has committed,
    `committed()` wakes the relays (a NOTIFY sent after the commit, see ChannelNotifier), so an idle
    relay publishes at once instead of at its next poll."""

    def __init__(self, *, schema: str, producer: str, dsn: str | None = None):
        self.schema = schema
        self.producer = producer
        self.notifier = ChannelNotifier(dsn, wakeup_channel(schema)) if dsn else None

    async def write(self, session: AsyncSession, messages: Sequence[OutboxMessage]) -> None:
        await copy_or_insert(session, self.schema, "outbox", OUTBOX_COLUMNS, messages)

    def committed(self) -> None:
        """Rows written by `write` have committed: wake the relays."""
        if self.notifier is not None:
            self.notifier.poke()

    async def close(self) -> None:
        if self.notifier is not None:
            await self.notifier.close()


def crc32_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """Same key, same partition, via zlib's C crc32: aiokafka's default murmur2 is pure Python and
    was a third of the relay's send loop. Only our relays produce these topics, so no other client
    needs to agree on the hash."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[zlib.crc32(key) % len(all_partitions)]


async def send_record_batches(
    producer: AIOKafkaProducer, records: Iterable[tuple[str, bytes | None, bytes, list]]
) -> list[asyncio.Future]:
    """Hands (topic, key, value, headers) records to the producer as record batches, one per
    partition (a new one when one fills), each partition's records in order; returns the batches'
    acknowledgements.

    aiokafka's batch API: per record only its encoding, where `send()` costs a future, a partitioner
    call and a metadata lookup per record (more than half of the relay's CPU). Keys go to the
    partitions `crc32_partitioner` gives them."""
    partitions: dict[str, list[int]] = {}
    open_batches: dict[tuple[str, int], Any] = {}
    acks = []
    for topic, key, value, headers in records:
        if topic not in partitions:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        where = (topic, crc32_partitioner(key, partitions[topic], partitions[topic]))
        record = dict(timestamp=None, key=key, value=value, headers=headers)
        batch = open_batches.get(where)
        if batch is None or batch.append(**record) is None:  # none yet, or full: send it, start another
            if batch is not None:
                acks.append(await producer.send_batch(batch, topic, partition=where[1]))
            batch = open_batches[where] = producer.create_batch()
            if batch.append(**record) is None:
                raise ValueError(f"a record of {len(value)} bytes for {topic}: an empty record batch refused it")
    for (topic, partition), batch in open_batches.items():
        acks.append(await producer.send_batch(batch, topic, partition=partition))
    return acks


def make_producer(bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    # Tansu has no idempotent producer (InitProducerId); the outbox and inbox give the guarantees.
    options: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        partitioner=crc32_partitioner,
        enable_idempotence=False,
        acks="all",
        linger_ms=5,
        max_batch_size=1_048_576,
        max_request_size=16_777_216,
    )
    options.update(overrides)
    return AIOKafkaProducer(**options)


@dataclass
class _Claim:
    """Outbox rows locked by the relay's open transaction on `conn`."""

    conn: AsyncConnection
    rows: list

    async def release(self) -> None:
        await self.conn.close()  # rolls back: the rows are unlocked, still unsent


async def _release(claiming: "asyncio.Task[_Claim | None] | None") -> None:
    """Undo a claim being made, whether it has finished or not."""
    if claiming is None:
        return
    claiming.cancel()
    await asyncio.wait([claiming])
    if not claiming.cancelled() and claiming.exception() is None and claiming.result() is not None:
        await claiming.result().release()


class OutboxRelay:
    """Publishes unsent outbox rows in id order, a batch per transaction, with FOR UPDATE SKIP LOCKED
    so that several relays can share one outbox without sending a row twice while both live.

    Adaptive: under load a full batch is followed at once by the next; when idle the relay waits for
    the writers' NOTIFY (publishing within milliseconds of a commit), polling every `poll_interval`
    only if it cannot listen, and every IDLE_POLL seconds as a safety net when it can."""

    IDLE_POLL = 1.0
    # Published ids between two VACUUMs of outbox_pending (see vacuum_pending).
    VACUUM_EVERY = 20_000

    def __init__(
        self,
        engine: AsyncEngine,
        producer: AIOKafkaProducer,
        *,
        schema: str,
        service: str,
        batch_size: int = 1000,
        poll_interval: float = 0.05,
        retention_hours: float = 24.0,
        replay_on_fresh_broker: bool = False,
    ):
        self.engine = engine
        self.producer = producer
        self.schema = schema
        self.service = service
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention_hours = retention_hours
        self.replay_on_fresh_broker = replay_on_fresh_broker
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._unvacuumed = 0  # ids deleted from outbox_pending since its last VACUUM
        self._vacuuming: asyncio.Task | None = None
        self._listener = ChannelListener(dsn_of(engine), wakeup_channel(schema), lambda _: self._wakeup.set(),
                                         retry_seconds=30.0)
        columns = ("o.id, o.event_id::text AS event_id, o.topic, o.key, o.event_type, o.organization, "
                   "o.correlation_id, o.envelope")
        outbox, pending = f'"{schema}".outbox', f'"{schema}".outbox_pending'
        # The ids first, then their rows by primary key: as a join, the planner may merge the two
        # primary keys and read the outbox from its first (long published) row on every batch.
        self._select = text(
            f"SELECT {columns} FROM {outbox} o WHERE o.id = ANY(ARRAY("
            f"SELECT id FROM {pending} ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED)) ORDER BY o.id"
        )
        self._mark = text(f"DELETE FROM {pending} WHERE id = ANY(:ids)")
        self._backlog = text(f"SELECT count(*) FROM {pending}")
        self._published_after = text(
            f"SELECT {columns} FROM {outbox} o WHERE o.id > :after "
            f"AND NOT EXISTS (SELECT 1 FROM {pending} p WHERE p.id = o.id) ORDER BY o.id LIMIT :n"
        )
        # The oldest rows first, a bounded number at a time (no scan of the whole outbox): published
        # rows past retention go; a row still pending stays, however old.
        self._purge = text(
            f"DELETE FROM {outbox} o USING (SELECT id FROM {outbox} ORDER BY id LIMIT :n) head "
            "WHERE o.id = head.id AND o.created_at < now() - make_interval(secs => :secs) "
            f"AND NOT EXISTS (SELECT 1 FROM {pending} p WHERE p.id = o.id)"
        )

    async def relay_once(self) -> int:
        """Publish batches back to back while they come full; returns how many rows were sent.

        Pipelined, two batches deep: batch N+1 is read (and locked) while N's events are on their
        way to the broker, and N is marked sent while N+1's are. N+1's events go to the producer
        only once every one of N's is acknowledged, so per-key order holds even when a send fails:
        N+1 is then released unsent, and both come again in order. Each batch is its own
        transaction; a mark that fails after a good send only means the batch is sent again."""
        current = await self._claim()
        if current is None:
            return 0
        sent, marking = 0, None
        try:
            acks = await self._enqueue(current.rows)
            while True:
                full = len(current.rows) == self.batch_size and not self._stopping.is_set()
                claiming = asyncio.create_task(self._claim()) if full else None
                try:
                    await asyncio.gather(*acks)
                    failpoint("outbox.after_publish")
                    if marking is not None:
                        sent += await asyncio.shield(marking)  # a cancelled relay still finishes the mark
                except BaseException:
                    await _release(claiming)
                    raise
                marking = asyncio.create_task(self._mark_sent(current))
                current = None
                current = await claiming if claiming is not None else None
                if current is None:
                    sent += await asyncio.shield(marking)  # a cancelled relay still finishes the mark
                    return sent
                acks = await self._enqueue(current.rows)
        finally:
            if current is not None:
                await current.release()
            if marking is not None:  # an error of its own, behind the one raised, only means a batch sent again
                await asyncio.wait([marking])
                if not marking.cancelled():
                    marking.exception()  # retrieved, so asyncio does not log it as forgotten

    async def _claim(self) -> "_Claim | None":
        """The next unsent rows, locked in a transaction of their own (None when there are none)."""
        conn = await self.engine.connect()
        try:
            await conn.begin()
            rows = (await conn.execute(self._select, {"n": self.batch_size})).all()
        except BaseException:
            await conn.close()
            raise
        if not rows:
            await conn.close()
            return None
        return _Claim(conn, rows)

    async def _mark_sent(self, claim: "_Claim") -> int:
        try:
            await claim.conn.execute(self._mark, {"ids": [row.id for row in claim.rows]})
            await claim.conn.commit()
        finally:
            await claim.conn.close()
        for topic, count in Counter(row.topic for row in claim.rows).items():  # a metric update per topic, not per row
            EVENTS_PUBLISHED.labels(self.service, topic).inc(count)
        self._unvacuumed += len(claim.rows)
        if self._unvacuumed >= self.VACUUM_EVERY:
            self._start_vacuum()
        return len(claim.rows)

    def _start_vacuum(self) -> None:
        if self._vacuuming is None or self._vacuuming.done():
            self._vacuuming = asyncio.create_task(self.vacuum_pending())

    async def vacuum_pending(self) -> None:
        """VACUUM outbox_pending. Every claim reads its primary key from the left, and the index entries
        of deleted ids stay there until a VACUUM: between two of autovacuum's (a minute apart at best),
        each claim walked over every id published since (half of the claims' PostgreSQL CPU at 30,000
        events/s). A failure is logged, never raised; a role that does not own the table only gets
        PostgreSQL's warning."""
        self._unvacuumed = 0
        try:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                # TRUNCATE false: never the exclusive lock that giving back trailing pages would take.
                await conn.exec_driver_sql(f'VACUUM (TRUNCATE false) "{self.schema}".outbox_pending')
        except Exception as exc:
            log.warning("outbox_pending not vacuumed", schema=self.schema, error=f"{type(exc).__name__}: {exc}")

    async def _enqueue(self, rows) -> list[asyncio.Future]:
        """Hands the rows to the producer in record batches, in order; returns their acknowledgements."""
        return await send_record_batches(self.producer, (
            (row.topic, row.key.encode() if row.key else None, row.envelope.encode(), kafka_headers(row))
            for row in rows
        ))

    async def _send(self, rows) -> None:
        await asyncio.gather(*await self._enqueue(rows))

    async def replay_retained(self) -> int:
        """Publish again every row already published and still kept (in id order); returns how many."""
        after, replayed = 0, 0
        while rows := (await self._read(self._published_after, {"after": after, "n": self.batch_size})):
            await self._send(rows)
            after, replayed = rows[-1].id, replayed + len(rows)
        return replayed

    async def _read(self, stmt, params: dict) -> list:
        async with self.engine.connect() as conn:
            return list((await conn.execute(stmt, params)).all())

    async def replay_if_broker_is_fresh(self, bootstrap: str) -> None:
        await ensure_topics(bootstrap, [REPLAY_MARKER_TOPIC], partitions=1)
        if self.service.encode() in {r.key for r in await read_topic(bootstrap, REPLAY_MARKER_TOPIC)}:
            return
        replayed = await self.replay_retained()
        marker = orjson.dumps({"service": self.service, "replayed": replayed, "at": datetime.now(UTC)})
        await self.producer.send_and_wait(REPLAY_MARKER_TOPIC, marker, key=self.service.encode())
        log.info("fresh broker: outbox replayed", rows=replayed, retention_hours=self.retention_hours)

    async def backlog(self) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(self._backlog)).scalar_one()

    async def run(self, bootstrap: str | None = None) -> None:
        log.info("outbox relay started", schema=self.schema)
        if self.replay_on_fresh_broker and bootstrap:
            await self.replay_if_broker_is_fresh(bootstrap)
        housekeeping = asyncio.create_task(self._housekeeping())
        try:
            while not self._stopping.is_set():
                self._wakeup.clear()  # before the batch's SELECT: a commit after it wakes the next wait
                try:
                    await self.relay_once()  # returns once the outbox is drained
                except Exception:  # broker or database away: back off and try again, never die
                    log.exception("outbox relay batch failed; retrying")
                    await asyncio.sleep(1.0)
                await self._idle()
        finally:
            housekeeping.cancel()
            if self._vacuuming is not None:
                self._vacuuming.cancel()
            await self._listener.close()

    async def _idle(self) -> None:
        timeout = self.IDLE_POLL if self._listener.ensure() else self.poll_interval
        stop, wake = asyncio.ensure_future(self._stopping.wait()), asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait([stop, wake], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()

    async def _housekeeping(self) -> None:
        while True:
            try:
                OUTBOX_BACKLOG.labels(self.service).set(await self.backlog())
                await self.purge()
                if self._unvacuumed:
                    self._start_vacuum()
            except Exception:
                log.exception("outbox housekeeping failed")
            await asyncio.sleep(5.0)

    async def purge(self, chunk: int = 5000) -> int:
        """Delete the published rows past retention, oldest first; returns how many."""
        purged = 0
        while True:
            async with self.engine.begin() as conn:
                deleted = (await conn.execute(self._purge, {"n": chunk, "secs": self.retention_hours * 3600})).rowcount
            purged += deleted
            if deleted < chunk:
                return purged

    def stop(self) -> None:
        self._stopping.set()

