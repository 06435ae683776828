"""The transactional outbox: events are rows written in the state change's own transaction; a relay
publishes them to Kafka in batches and marks them sent.

If the relay dies after publishing and before marking, the rows are published again on restart:
delivery is at least once, and consumers dedupe by event_id (see shared/consumer.py).
"""

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel
from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, Table, Text, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from shared.events import Envelope, topic_for
from shared.failpoints import failpoint
from shared.observability import EVENTS_PUBLISHED, OUTBOX_BACKLOG, get_logger

log = get_logger(__name__)


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
        Column("topic", Text, nullable=False),
        Column("key", Text, nullable=True),
        Column("envelope", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
    )


def envelope_bytes(envelope: Envelope) -> bytes:
    # orjson writes UUIDs and datetimes itself, several times faster than model_dump(mode="json").
    return orjson.dumps(
        {
            "event_id": envelope.event_id,
            "type": envelope.type,
            "version": envelope.version,
            "occurred_at": envelope.occurred_at,
            "organization": envelope.organization,
            "correlation_id": envelope.correlation_id,
            "producer": envelope.producer,
            "payload": envelope.payload,
        },
        default=_json_default,
    )


def _json_default(value: Any) -> Any:
    # asyncpg returns its own UUID class, which orjson does not take as a uuid.UUID.
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def envelope_headers(envelope: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Kafka headers repeating the envelope's routing fields, so tools can filter without parsing."""
    return [
        ("content-type", b"application/json"),
        ("event_id", str(envelope["event_id"]).encode()),
        ("event_type", str(envelope["type"]).encode()),
        ("event_version", str(envelope["version"]).encode()),
        ("organization", str(envelope["organization"]).encode()),
        ("correlation_id", str(envelope["correlation_id"]).encode()),
    ]


def partition_key(envelope: Envelope) -> str:
    """Events about one entity stay in order: key by the entity's id when the payload names one."""
    for field in ("feedback_id", "dataset_id", "job_id", "model_id", "experiment_id"):
        value = envelope.payload.get(field)
        if value:
            return str(value)
    return envelope.organization


class OutboxWriter:
    """Adds events to the outbox inside the caller's transaction."""

    def __init__(self, *, schema: str, producer: str):
        self.schema = schema
        self.producer = producer

    async def write(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        # COPY is several times faster than INSERT for the batches that bulk ingest produces.
        await raw.driver_connection.copy_records_to_table(
            "outbox",
            schema_name=self.schema,
            columns=["event_id", "topic", "key", "envelope"],
            records=[
                (
                    e.event_id,
                    topic_for(e.type, e.version),
                    partition_key(e),
                    envelope_bytes(e).decode(),
                )
                for e in envelopes
            ],
        )


def make_producer(bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    # Tansu has no idempotent producer (InitProducerId); the outbox and inbox give the guarantees.
    options: dict[str, Any] = dict(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        acks="all",
        linger_ms=5,
        max_batch_size=1_048_576,
        max_request_size=16_777_216,
    )
    options.update(overrides)
    return AIOKafkaProducer(**options)


class OutboxRelay:
    """Publishes unsent outbox rows in id order, a batch per transaction, with FOR UPDATE SKIP LOCKED
    so that several relays can share one outbox without sending a row twice while both live."""

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
    ):
        self.engine = engine
        self.producer = producer
        self.schema = schema
        self.service = service
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention_hours = retention_hours
        self._stopping = asyncio.Event()
        self._select = text(
            f'SELECT id, topic, key, envelope FROM "{schema}".outbox '
            "WHERE published_at IS NULL ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
        )
        self._mark = text(f'UPDATE "{schema}".outbox SET published_at = now() WHERE id = ANY(:ids)')
        self._backlog = text(f'SELECT count(*) FROM "{schema}".outbox WHERE published_at IS NULL')
        self._purge = text(
            f'DELETE FROM "{schema}".outbox WHERE published_at < now() - make_interval(secs => :secs)'
        )

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows were sent."""
        async with self.engine.begin() as conn:
            rows = (await conn.execute(self._select, {"n": self.batch_size})).all()
            if not rows:
                return 0
            sends = [
                await self.producer.send(
                    row.topic,
                    value=row.envelope.encode(),
                    key=row.key.encode() if row.key else None,
                    headers=envelope_headers(orjson.loads(row.envelope)),
                )
                for row in rows
            ]
            await asyncio.gather(*sends)
            failpoint("outbox.after_publish")
            await conn.execute(self._mark, {"ids": [row.id for row in rows]})
        for row in rows:
            EVENTS_PUBLISHED.labels(self.service, row.topic).inc()
        return len(rows)

    async def backlog(self) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(self._backlog)).scalar_one()

    async def run(self) -> None:
        log.info("outbox relay started", schema=self.schema)
        housekeeping = asyncio.create_task(self._housekeeping())
        try:
            while not self._stopping.is_set():
                try:
                    sent = await self.relay_once()
                except Exception:  # broker or database away: back off and try again, never die
                    log.exception("outbox relay batch failed; retrying")
                    sent = 0
                    await asyncio.sleep(1.0)
                if sent < self.batch_size:
                    try:
                        await asyncio.wait_for(self._stopping.wait(), self.poll_interval)
                    except TimeoutError:
                        pass
        finally:
            housekeeping.cancel()

    async def _housekeeping(self) -> None:
        while True:
            try:
                OUTBOX_BACKLOG.labels(self.service).set(await self.backlog())
                async with self.engine.begin() as conn:
                    await conn.execute(self._purge, {"secs": self.retention_hours * 3600})
            except Exception:
                log.exception("outbox housekeeping failed")
            await asyncio.sleep(5.0)

    def stop(self) -> None:
        self._stopping.set()

