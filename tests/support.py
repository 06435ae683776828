"""Helpers the tests share: a real Kafka consumer to watch topics, a raw producer, waiting."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from shared.db import Database
from shared.events import Envelope, Event
from shared.infra import TansuBroker, read_topic
from shared.outbox import encode
from shared.service import ServiceSpec, build_app
from shared.settings import Settings


class KafkaProbe:
    """What a downstream service would see: reads topics from the beginning with its own group."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=False)
            await self._producer.start()
        return self._producer

    async def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        await (await self.producer()).send_and_wait(topic, value, key=key)

    async def send_event(
        self, event: Event, organization: str, *, event_id: uuid.UUID | None = None, key: str | None = None
    ) -> Envelope:
        """The event as the outbox would send it (same encoder, same partition key unless `key` is
        given: events sent with one key land on one partition, in order)."""
        message = encode(event, organization=organization, producer="tests", event_id=event_id)
        await self.send_raw(event.topic(), message.envelope.encode(), key=(key or message.key).encode())
        return Envelope.model_validate_json(message.envelope)

    async def read_all(
        self, topics: list[str], *, match: Callable[[ConsumerRecord], bool] = lambda r: True
    ) -> list[ConsumerRecord]:
        """Every record matching `match` that `topics` hold now (to each partition's high-water mark).
        What can no longer grow (its producer is gone, its outbox drained) is read whole this way,
        without waiting to see whether more comes."""
        return [r for topic in topics for r in await read_topic(self.bootstrap, topic) if match(r)]

    async def send_marker_to_each_partition(self, event: Event, organization: str) -> list[Envelope]:
        """One copy of `event` (each its own id) on every partition of its topic: once a consumer has
        applied them all, it has consumed everything sent to the topic before them."""
        producer = await self.producer()
        envelopes = []
        for partition in sorted(await producer.partitions_for(event.topic())):
            message = encode(event, organization=organization, producer="tests")
            await producer.send_and_wait(event.topic(), message.envelope.encode(), partition=partition)
            envelopes.append(Envelope.model_validate_json(message.envelope))
        return envelopes

    async def close(self) -> None:
        if self._producer:
            await self._producer.stop()

    async def collect(
        self,
        topics: list[str],
        until: Callable[[list[ConsumerRecord]], bool],
        *,
        match: Callable[[ConsumerRecord], bool] = lambda r: True,
        timeout: float = 60.0,
    ) -> list[ConsumerRecord]:
        """Records matching `match` from the start of `topics`, once `until(records)` holds (or raises
        TimeoutError). To see whether more came (duplicates), read_all a topic that can no longer grow."""
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap,
            group_id=f"probe-{uuid.uuid4().hex}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        await consumer.start()
        found: list[ConsumerRecord] = []
        try:
            deadline = time.monotonic() + timeout
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for records in batch.values():
                    found.extend(r for r in records if match(r))
                if until(found):
                    return found
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {timeout}s on {topics}; saw {len(found)} matching records")
        finally:
            await consumer.stop()


def envelope_of(record: ConsumerRecord) -> dict[str, Any]:
    return orjson.loads(record.value)


def of_org(organization: str) -> Callable[[ConsumerRecord], bool]:
    return lambda r: dict(r.headers).get("organization") == organization.encode()


async def eventually(check: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.2) -> Any:
    """Polls an async check until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(interval)


@asynccontextmanager
async def service_database(spec: ServiceSpec, database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, schema=spec.schema, producer=spec.name, pool_size=5)
    try:
        yield db
    finally:
        await db.dispose()


@asynccontextmanager
async def in_process_api(
    spec: ServiceSpec, db: Database, settings: Settings, **state: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A service's HTTP app in this process, on the real database (`state` is set on app.state)."""
    app = build_app(spec, db, settings)
    for name, value in state.items():
        setattr(app.state, name, value)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{spec.name}", timeout=120) as client:
        yield client


@asynccontextmanager
async def isolated_infrastructure(server_url: str, prefix: str) -> AsyncIterator[tuple[str, TansuBroker]]:
    """A database of its own on the test server and a broker of its own, for tests that kill
    processes: no other relay or consumer can do the work a crashed one left behind."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(server_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    broker = TansuBroker().start()
    try:
        yield url, broker
    finally:
        broker.stop()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
