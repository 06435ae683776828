"""What a service is (`ServiceSpec`, the one place its name, port, tables, routes, subscriptions
and events are written) and how every service process runs: migrations, then its roles side by
side in one event loop — the HTTP API (uvicorn), the consumers (FastStream) and the outbox relay.
`--role` runs a subset, so that a role can be scaled, or killed in a crash test, on its own.

The product's list of services is `services.SERVICES`; `rlhf up`, `rlhf migrate` and the gateway
derive everything else from the specs found there."""

import argparse
import asyncio
import contextlib
import gc
import importlib
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaBroker
from sqlalchemy import MetaData, Table

from shared import auth
from shared.auth import KeyVerifier
from shared.consumer import BatchHandler, IdempotentConsumer, Route, consumer_options
from shared.db import Database
from shared.events import Event, dlq_topic
from shared.http import create_app, probes_app
from shared.infra import ensure_topics
from shared.migrations import upgrade
from shared.observability import configure_logging, get_logger
from shared.outbox import OutboxRelay, make_producer
from shared.settings import Settings, get_settings

ROLES = ("api", "consumer", "relay", "background")
AUTH_MIGRATIONS = Path(auth.__file__).parent / "auth_migrations" / "versions"
GC_THRESHOLDS = (50_000, 20, 100)  # see run()
log = get_logger(__name__)


@dataclass(frozen=True)
class Subscription:
    """A handler with consumer settings of its own (the default is `handler` alone)."""

    handler: BatchHandler
    max_records: int | None = None  # smaller batches for handlers that do heavy work per event


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # also the consumer group (rlhf.<name>), the outbox producer and the log/metric label
    port: int  # where its API listens unless RLHF_HTTP_PORT says otherwise
    metadata: MetaData  # its tables, in its own schema, including processed_events and outbox
    migrations: Path
    routers: list[APIRouter] = field(default_factory=list)  # the gateway routes each prefix here
    # Each consumed event type and the handler that applies a batch of it; the consumer makes sure
    # every delivery's event is of that type (anything else goes to the dead-letter topic).
    subscriptions: Mapping[type[Event], BatchHandler | Subscription] = field(default_factory=dict)
    produces: list[type[Event]] = field(default_factory=list)
    large_body_paths: dict[str, int] = field(default_factory=dict)
    # Long-running loops of the service's own (e.g. a job monitor), run in the "background" role.
    background: list[Callable[[Database, Settings], Awaitable[None]]] = field(default_factory=list)
    # `rlhf up` runs this service's relay in a process of its own: for a service that takes events in
    # at volume (feedback's batch ingest), so that its API and its relay each have a core.
    relay_process: bool = False
    # Members of the service's consumer group that `rlhf up` runs, each a process (the first is the
    # service's main process): a consumer is CPU-bound in one process (decoding and validating each
    # event is most of it), and the group shares the topics' partitions among its members.
    consumer_processes: int = 1

    @property
    def schema(self) -> str:
        assert self.metadata.schema, f"{self.name}: its MetaData must name the service's schema"
        return self.metadata.schema

    @property
    def processed_events(self) -> Table:
        return self.metadata.tables[f"{self.schema}.processed_events"]

    @property
    def consumes(self) -> list[str]:
        return [event_type.topic() for event_type in self.subscriptions]

    @property
    def topics(self) -> list[str]:
        return [*self.consumes, *(e.topic() for e in self.produces), *(dlq_topic(t) for t in self.consumes)]

    @property
    def route_prefixes(self) -> list[str]:
        return [router.prefix for router in self.routers]

    @property
    def url_variable(self) -> str:
        """How the gateway learns where the service is: RLHF_<NAME>_URL."""
        return f"RLHF_{self.name.upper().replace('-', '_')}_URL"

    def url(self) -> str:
        return os.environ.get(self.url_variable) or f"http://127.0.0.1:{self.port}"

    def register_consumers(self, db: Database, broker: KafkaBroker, settings: Settings) -> IdempotentConsumer | None:
        """One consumer for all the service's subscriptions (batches as small as the smallest asks)."""
        if not self.subscriptions:
            return None
        subs = {t: s if isinstance(s, Subscription) else Subscription(s) for t, s in self.subscriptions.items()}
        limits = [s.max_records for s in subs.values() if s.max_records]
        return IdempotentConsumer(
            db, broker, self.processed_events, service=self.name,
            routes={event_type.topic(): Route(sub.handler, event_type) for event_type, sub in subs.items()},
            **consumer_options(settings, **({"max_records": min(limits)} if limits else {})),
        )


SERVICES_VARIABLE = "RLHF_SERVICES"


def service_modules() -> list[str]:
    """The modules whose SPEC makes up the product: `services.SERVICES`, or RLHF_SERVICES
    (comma-separated modules) to run another set, e.g. with a service of one's own added."""
    from services import SERVICES

    configured = os.environ.get(SERVICES_VARIABLE, "")
    return [m.strip() for m in configured.split(",") if m.strip()] or list(SERVICES)


def load_specs(modules: list[str] | None = None) -> dict[str, ServiceSpec]:
    """module -> its SPEC, in start order."""
    return {module: importlib.import_module(module).SPEC for module in modules or service_modules()}


async def migrate(spec: ServiceSpec, db: Database) -> None:
    await upgrade(db.engine, metadata=auth.metadata, versions=AUTH_MIGRATIONS)
    await upgrade(db.engine, metadata=spec.metadata, versions=spec.migrations / "versions")


def build_app(spec: ServiceSpec, db: Database, settings: Settings) -> FastAPI:
    app = create_app(
        service=spec.name,
        max_body_bytes=settings.rlhf_max_body_bytes,
        large_body_paths=spec.large_body_paths,
    )
    app.state.db = db
    app.state.verifier = KeyVerifier(db.engine, ttl=settings.rlhf_auth_cache_seconds)
    for router in spec.routers:
        app.include_router(router)
    return app


async def _consume(broker: KafkaBroker) -> None:
    """The consumers' task: starts them (a failure ends the process, as any role's does), then waits
    to be cancelled at shutdown."""
    await broker.start()
    await asyncio.Event().wait()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # The process handles signals itself, so that every role stops, not only the HTTP server.
        yield


async def run(spec: ServiceSpec, roles: set[str], settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    configure_logging(spec.name, fmt=settings.rlhf_log_format, level=settings.rlhf_log_level)
    db = Database(settings.require_database_url(), schema=spec.schema, producer=spec.name)
    await migrate(spec, db)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    broker = producer = relay = server = consuming = consumer = None
    tasks: list[asyncio.Task] = []
    background: list[asyncio.Task] = []
    try:
        if {"consumer", "relay"} & roles:
            await ensure_topics(settings.require_kafka(), spec.topics)
        if "relay" in roles:
            producer = make_producer(settings.require_kafka())
            await producer.start()
            relay = OutboxRelay(
                db.engine,
                producer,
                schema=spec.schema,
                service=spec.name,
                batch_size=settings.rlhf_outbox_batch_size,
                poll_interval=settings.rlhf_outbox_poll_interval,
                retention_hours=settings.rlhf_outbox_retention_hours,
                replay_on_fresh_broker=settings.rlhf_outbox_replay_on_fresh_broker,
            )
            tasks.append(asyncio.create_task(relay.run(settings.require_kafka())))
        if "background" in roles:
            background = [asyncio.create_task(loop_fn(db, settings)) for loop_fn in spec.background]
        # The API, or (a process without it, given a port) its health and metrics alone.
        app = build_app(spec, db, settings) if "api" in roles else None
        if app is None and settings.rlhf_http_port:
            app = probes_app(spec.name)
        if app is not None:
            port = settings.rlhf_http_port or spec.port
            config = uvicorn.Config(app, host=settings.rlhf_http_host, port=port, log_level="warning", access_log=False)
            server = _Server(config)
            tasks.append(asyncio.create_task(server.serve()))
        if "consumer" in roles:
            # Last, and not awaited by the API: joining the consumer group takes seconds (on Tansu ~5 s),
            # and the routes need not wait for it. Events wait in Kafka meanwhile.
            broker = KafkaBroker(settings.require_kafka(), enable_idempotence=False, logger=None)
            consumer = spec.register_consumers(db, broker, settings)
            consuming = asyncio.create_task(_consume(broker))
            tasks.append(consuming)
        # What start-up made (modules, the app, clients) lives as long as the process: out of the
        # collector's way, so that a full collection does not walk it again and again (pauses of tens
        # of milliseconds on a request's path under load).
        gc.freeze()
        # A young-generation collection every GC_THRESHOLDS[0] container allocations, not 700: a
        # 1,000-item batch allocates tens of thousands (its dicts, lists, rows), all alive until the
        # batch is done, so the default walked them dozens of times per batch and promoted them on
        # (19% of the API process's CPU under batch ingest, by perf). Garbage without cycles is freed by
        # reference counting as before; only cycles wait a little longer.
        gc.set_threshold(*GC_THRESHOLDS)
        log.info("service started", roles=sorted(roles))
        done = asyncio.create_task(stop.wait())
        finished, _ = await asyncio.wait([done, *tasks, *background], return_when=asyncio.FIRST_COMPLETED)
        for task in finished:
            if task is not done and task.exception():
                raise task.exception()
    finally:
        log.info("service stopping")
        if server:
            server.should_exit = True
        if relay:
            relay.stop()
        for task in background:
            task.cancel()
        if consuming:
            consuming.cancel()
        await asyncio.gather(*tasks, *background, return_exceptions=True)
        if consumer:
            with contextlib.suppress(Exception):  # a timeout too: what is left comes again after the restart
                await asyncio.wait_for(consumer.drain(), 15)
        if broker:
            await broker.stop()
        if producer:
            await producer.stop()
        await db.dispose()


def run_process(main: Coroutine[Any, Any, None]) -> None:
    """A process's event loop: uvloop's (libuv, in C: less CPU per request and per event than
    asyncio's own) where it is installed, as it is with the product's dependencies; else asyncio's."""
    try:
        import uvloop
    except ImportError:  # e.g. on Windows, where uvloop does not exist
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def main(spec: ServiceSpec) -> None:
    parser = argparse.ArgumentParser(description=f"Run the {spec.name} service")
    parser.add_argument("--role", action="append", choices=ROLES, help="run only these roles (repeatable)")
    args = parser.parse_args()
    run_process(run(spec, set(args.role or ROLES)))

