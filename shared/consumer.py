"""Idempotent consumption on FastStream: exactly-once effect over at-least-once delivery.

For each batch from Kafka: envelopes that can never be processed (bad JSON, bad schema, unknown
type or version) go to `<topic>.dlq` with the reason in their headers; the rest are claimed in the
processed-events table and handled in ONE transaction with their effects. Offsets are committed by
FastStream only after that commit (AckPolicy.NACK_ON_ERROR); a failure seeks back and redelivers.
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from aiokafka import ConsumerRecord
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
            ack_policy=AckPolicy.NACK_ON_ERROR,
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            fetch_max_wait_ms=fetch_max_wait_ms,
            decoder=_keep_raw,
        )(self._consume)

    async def _consume(self, body: Any, msg: KafkaMessage) -> None:
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        await self.process(records)
        failpoint("consumer.after_db_commit")  # the effect is committed, the offset not yet

    async def process(self, records: Sequence[ConsumerRecord]) -> None:
        by_topic: dict[str, list[ConsumerRecord]] = {}
        for record in records:
            by_topic.setdefault(record.topic, []).append(record)
        for topic, topic_records in by_topic.items():
            await self._process_topic(topic, self.routes[topic], topic_records)

    async def _process_topic(self, topic: str, route: Route, records: Sequence[ConsumerRecord]) -> None:
        good: list[tuple[ConsumerRecord, Delivery]] = []
        for record in records:
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
        if not good:
            return
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
