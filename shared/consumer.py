"""Idempotent consumption on FastStream: exactly-once effect over at-least-once delivery.

For each batch from Kafka: envelopes that can never be processed (bad JSON, bad schema, unknown
type or version) go to `<topic>.dlq` with the reason in their headers; the rest are claimed in the
processed-events table and handled in ONE transaction with their effects. A batch's offsets are
committed only after that commit, and only up to its own last records.

Batches are pipelined, two deep: while batch N's transaction runs, batch N+1 is fetched and decoded
(CPU that would otherwise wait for the database); N+1's transaction starts only after N's commit, so
effects are applied in offset order, and N's offsets are committed beside it, in batch order. A batch
that fails for good (a transient error outlasting its retries) is rewound, and the batch decoded
behind it is dropped and rewound too: both come again.
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError
from asyncpg import PostgresConnectionError
from asyncpg.exceptions import DeadlockDetectedError, SerializationError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import ValidationError
from sqlalchemy import Column, DateTime, MetaData, Table, Text, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from shared.bulk import execute_json
from shared.db import Database, UnitOfWork
from shared.events import Envelope, Event, UnknownEvent, decode_payload, dlq_topic, typed_envelope
from shared.failpoints import failpoint
from shared.observability import EVENTS_CONSUMED, EVENTS_FAILED, get_logger
from shared.settings import Settings

log = get_logger(__name__)
DECODE_SLICE = 10  # records decoded between turns of the batch in flight (~0.2 ms of CPU)


def processed_events_table(metadata: MetaData) -> Table:
    return Table(
        "processed_events",
        metadata,
        Column("event_id", UUID(as_uuid=True), primary_key=True),
        Column("topic", Text, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


class PoisonMessage(Exception):
    """Raised by a handler for an event that is well-formed but can never be applied."""


E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Delivery(Generic[E]):
    """One decoded message: what the handler sees (`Delivery[FeedbackReceived]` in a handler's signature)."""

    envelope: Envelope
    event: E


BatchHandler = Callable[[UnitOfWork, Sequence[Delivery]], Awaitable[None]]

_TRANSIENT_DRIVER_ERRORS = (PostgresConnectionError, SerializationError, DeadlockDetectedError)


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: the database or network went away or a concurrent transaction won."""
    if isinstance(exc, (OperationalError, InterfaceError, OSError, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(getattr(exc.orig, "__cause__", None), _TRANSIENT_DRIVER_ERRORS)
    return isinstance(exc, _TRANSIENT_DRIVER_ERRORS)


def decode_record(record: ConsumerRecord, expected: type[Event] | None = None) -> Delivery:
    """Raises ValueError / ValidationError / UnknownEvent for a message that can never be processed.
    A message of the `expected` type is decoded in one pass; any other is decoded generically, so that
    what is wrong with it (another type, a bad payload, not JSON) is named precisely."""
    if record.value is None:
        raise ValueError("empty message value")
    if expected is not None:
        try:
            envelope = typed_envelope(expected).model_validate_json(record.value)
            return Delivery(envelope, envelope.payload)
        except ValidationError:
            pass
    envelope = Envelope.model_validate_json(record.value)
    return Delivery(envelope, decode_payload(envelope))


class WrongEventType(ValueError):
    """A well-formed event of another type than the topic carries: it can never be processed here."""


@dataclass(frozen=True)
class Route:
    """Where a topic's messages go: a batch handler, and the one event type it takes (others are
    dead-lettered; None takes any known event)."""

    handler: BatchHandler
    accepts: type[Event] | None = None


# A batch decoded: per topic, its route and the records that decode with their deliveries.
Decoded = list[tuple[str, Route, list[tuple[ConsumerRecord, Delivery]]]]


class IdempotentConsumer:
    """Subscribes a service's handlers, one per topic, as ONE member of the consumer group named
    after the service (rlhf.<service>): one consumer per process, so joining the group is one
    member's join, not a rebalance among several (slow on Tansu)."""

    def __init__(
        self,
        db: Database,
        broker: KafkaBroker,
        processed: Table,
        *,
        service: str,
        routes: Mapping[str, Route],
        max_records: int = 500,
        max_retries: int = 5,
        retry_backoff: float = 0.2,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        fetch_max_wait_ms: int = 500,
    ):
        self.db = db
        self.broker = broker
        self.processed = processed
        self.service = service
        self.routes = dict(routes)
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.group_id = f"rlhf.{service}"
        self._inflight: _Inflight | None = None
        self._committing: asyncio.Task | None = None
        self._closing = False
        # The batch's ids as one JSON parameter (shared/bulk.py): a batch costs one small statement.
        self._claim_sql = (
            f'INSERT INTO "{processed.schema}".{processed.name} (event_id, topic) '
            "SELECT value::uuid, $2 FROM jsonb_array_elements_text($1::jsonb) "
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        )
        broker.subscriber(
            *self.routes,
            group_id=self.group_id,
            batch=True,
            max_records=max_records,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,  # offsets are committed by _settle, per batch, explicitly
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            fetch_max_wait_ms=fetch_max_wait_ms,
            decoder=_keep_raw,
        )(self._consume)

    async def _consume(self, body: Any, msg: KafkaMessage) -> None:
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        try:
            decoded = await self.decode(records)  # while the previous batch's transaction runs
        except BaseException:  # e.g. the dead-letter topic unreachable: this batch comes again
            if await self._after_previous(msg.consumer, records):
                _rewind(msg.consumer, records)
            raise
        if not await self._after_previous(msg.consumer, records) or self._closing:
            return  # when closing: not committed, so redelivered to whoever consumes next
        self._inflight = _Inflight(records, asyncio.create_task(self._settle(decoded, records, msg.consumer)))

    async def _after_previous(self, consumer: Any, records: Sequence[ConsumerRecord]) -> bool:
        """Waits for the batch in flight. If it was rewound and this batch was read before that (it
        starts past the rewound offsets), this one is rewound too (where the first did not already
        go further back), and the answer is False. A batch read after the rewind starts at them."""
        previous, self._inflight = self._inflight, None
        if previous is None or await previous:
            return True
        rewound = _earliest(previous.records)
        if all(offset <= rewound[tp] for tp, offset in _earliest(records).items() if tp in rewound):
            return True
        _rewind(consumer, records, keep=rewound)
        return False

    async def drain(self) -> None:
        """At shutdown, before the broker stops: the batch in flight is committed (effects and
        offsets), and no further batch is started."""
        self._closing = True
        if self._inflight is not None:
            await self._inflight
        if self._committing is not None:
            await self._committing

    async def _settle(self, decoded: Decoded, records: Sequence[ConsumerRecord], consumer: Any) -> bool:
        """Applies a decoded batch, then has its offsets committed; False if it was rewound instead."""
        try:
            for topic, route, good in decoded:
                await self._apply_topic(topic, route, good)
        except Exception as exc:
            log.warning("batch not applied: rewound, to come again", error=f"{type(exc).__name__}: {exc}")
            _rewind(consumer, records)
            return False
        failpoint("consumer.after_db_commit")  # the effect is committed, the offset not yet
        # The offsets are committed beside the next batch's transaction, in batch order.
        self._committing = asyncio.create_task(self._commit(consumer, records, self._committing))
        return True

    @staticmethod
    async def _commit(consumer: Any, records: Sequence[ConsumerRecord], before: "asyncio.Task | None") -> None:
        if before is not None:
            await before
        try:
            await consumer.commit({tp: offset + 1 for tp, offset in _per_partition(records, max).items()})
        except Exception as exc:  # e.g. the partitions moved to another member: it repeats them, without effect
            log.warning("offsets not committed", error=f"{type(exc).__name__}: {exc}")

    async def decode(self, records: Sequence[ConsumerRecord]) -> Decoded:
        """Per topic, the records that decode, with their deliveries; the rest are dead-lettered."""
        by_topic: dict[str, list[ConsumerRecord]] = {}
        for record in records:
            by_topic.setdefault(record.topic, []).append(record)
        decoded = []
        for topic, topic_records in by_topic.items():
            route = self.routes[topic]
            good: list[tuple[ConsumerRecord, Delivery]] = []
            for i, record in enumerate(topic_records):
                if i % DECODE_SLICE == DECODE_SLICE - 1:
                    # Let the batch in flight go on: its next statement waits for this loop otherwise.
                    await asyncio.sleep(0)
                try:
                    delivery = decode_record(record, route.accepts)
                    if route.accepts and not isinstance(delivery.event, route.accepts):
                        raise WrongEventType(
                            f"{delivery.envelope.type} v{delivery.envelope.version} on a topic of "
                            f"{route.accepts.type_name} v{route.accepts.version}"
                        )
                    good.append((record, delivery))
                except (ValueError, ValidationError, UnknownEvent) as exc:
                    await self.dead_letter(record, exc)
            if good:
                decoded.append((topic, route, good))
        return decoded

    async def _apply_topic(self, topic: str, route: Route, good: list[tuple[ConsumerRecord, Delivery]]) -> None:
        try:
            await self._apply_with_retries(topic, route, [d for _, d in good])
        except Exception as exc:
            if is_transient(exc):
                raise  # nack: the batch is redelivered, nothing is lost
            if len(good) == 1:
                await self.dead_letter(good[0][0], exc)
                return
            # Something in the batch can never be applied: isolate it, one message at a time.
            for record, delivery in good:
                try:
                    await self._apply_with_retries(topic, route, [delivery])
                except Exception as one_exc:
                    if is_transient(one_exc):
                        raise
                    await self.dead_letter(record, one_exc)

    async def _apply_with_retries(self, topic: str, route: Route, deliveries: list[Delivery]) -> None:
        for attempt in range(self.max_retries + 1):
            try:
                await self._apply(topic, route, deliveries)
                return
            except Exception as exc:
                if not is_transient(exc) or attempt == self.max_retries:
                    raise
                EVENTS_FAILED.labels(self.service, topic, "transient").inc()
                log.warning("transient error, retrying", attempt=attempt + 1, error=str(exc))
                await asyncio.sleep(self.retry_backoff * 2**attempt)

    async def _apply(self, topic: str, route: Route, deliveries: list[Delivery]) -> None:
        async with self.db.unit_of_work() as uow:
            claimed = await self._claim(uow, topic, [d.envelope.event_id for d in deliveries])
            fresh: list[Delivery] = []
            for delivery in deliveries:
                if delivery.envelope.event_id in claimed:
                    claimed.discard(delivery.envelope.event_id)  # a repeat inside one batch counts once
                    fresh.append(delivery)
            if fresh:
                with structlog.contextvars.bound_contextvars(correlation_id=fresh[0].envelope.correlation_id):
                    await route.handler(uow, fresh)
        EVENTS_CONSUMED.labels(self.service, topic, "processed").inc(len(fresh))
        EVENTS_CONSUMED.labels(self.service, topic, "duplicate").inc(len(deliveries) - len(fresh))

    async def _claim(self, uow: UnitOfWork, topic: str, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Record the event ids in this transaction; returns the ones not processed before."""
        rows = await execute_json(uow.session, self._claim_sql, list(dict.fromkeys(event_ids)), topic)
        return {row[0] for row in rows}  # asyncpg's UUID is a uuid.UUID

    async def dead_letter(self, record: ConsumerRecord, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        headers = {k: v.decode(errors="replace") for k, v in (record.headers or ())}
        headers.update(
            {
                "dlq_reason": reason,
                "dlq_error_type": type(exc).__name__,
                "dlq_original_topic": record.topic,
                "dlq_original_partition": str(record.partition),
                "dlq_original_offset": str(record.offset),
                "dlq_consumer_group": self.group_id,
            }
        )
        await self.broker.publish(record.value or b"", topic=dlq_topic(record.topic), key=record.key, headers=headers)
        EVENTS_CONSUMED.labels(self.service, record.topic, "dead_lettered").inc()
        EVENTS_FAILED.labels(self.service, record.topic, type(exc).__name__).inc()
        log.warning("message dead-lettered", topic=record.topic, offset=record.offset, reason=reason)


@dataclass
class _Inflight:
    """A batch whose transaction (and then offset commit) is under way."""

    records: Sequence[ConsumerRecord]
    task: "asyncio.Task[bool]"

    def __await__(self):
        return self.task.__await__()


def _per_partition(records: Sequence[ConsumerRecord], pick: Callable[[int, int], int]) -> dict[TopicPartition, int]:
    """Per partition, the records' earliest (pick=min) or latest (pick=max) offset."""
    found: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        found[tp] = pick(found.get(tp, r.offset), r.offset)
    return found


def _earliest(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, int]:
    return _per_partition(records, min)


def _rewind(consumer: Any, records: Sequence[ConsumerRecord], keep: Mapping[TopicPartition, int] = {}) -> None:  # noqa: B006
    """Each partition of the batch is read again from its earliest record (except those in `keep`,
    already rewound further back)."""
    for tp, offset in _earliest(records).items():
        if tp not in keep:
            try:
                consumer.seek(tp, offset)
            except IllegalStateError:  # no longer ours: its new owner reads on from the committed offset
                log.info("partition moved before its rewind", partition=str(tp))


def consumer_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The IdempotentConsumer keyword arguments every service takes from its settings."""
    return dict(
        max_records=settings.rlhf_consumer_max_records,
        max_retries=settings.rlhf_consumer_max_retries,
        retry_backoff=settings.rlhf_consumer_retry_backoff,
        session_timeout_ms=settings.rlhf_consumer_session_timeout_ms,
        heartbeat_interval_ms=settings.rlhf_consumer_heartbeat_interval_ms,
        fetch_max_wait_ms=settings.rlhf_consumer_fetch_max_wait_ms,
    ) | overrides


async def _keep_raw(msg: Any) -> Any:
    # The records are decoded by `decode_record`, so a malformed one can go to the DLQ with a reason.
    return None
