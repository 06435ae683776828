"""How every service process runs: migrations, then its roles side by side in one event loop —
the HTTP API (uvicorn), the consumers (FastStream) and the outbox relay. `--role` runs a subset,
so that a role can be scaled, or killed in a crash test, on its own."""

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from shared import auth
from shared.auth import KeyVerifier
from shared.db import Database
from shared.events import dlq_topic
from shared.http import create_app
from shared.infra import ensure_topics
from shared.migrations import upgrade
from shared.observability import configure_logging, get_logger
from shared.outbox import OutboxRelay, make_producer
from shared.settings import Settings, get_settings

ROLES = ("api", "consumer", "relay", "background")
AUTH_MIGRATIONS = Path(auth.__file__).parent / "auth_migrations"
log = get_logger(__name__)


@dataclass
class ServiceSpec:
    name: str
    schema: str
    migrations: Path
    install_api: Callable[[FastAPI], None]
    register_consumers: Callable[[Database, KafkaBroker, Settings], list]
    consumes: list[str] = field(default_factory=list)
    produces: list[str] = field(default_factory=list)
    large_body_paths: dict[str, int] = field(default_factory=dict)
    default_port: int = 8001
    # Long-running loops of the service's own (e.g. a job monitor), run in the "background" role.
    background: list[Callable[[Database, Settings], Awaitable[None]]] = field(default_factory=list)

    @property
    def topics(self) -> list[str]:
        return [*self.consumes, *self.produces, *(dlq_topic(t) for t in self.consumes)]


async def migrate(spec: ServiceSpec, db: Database) -> None:
    await upgrade(db.engine, schema=auth.AUTH_SCHEMA, script_location=AUTH_MIGRATIONS)
    await upgrade(db.engine, schema=spec.schema, script_location=spec.migrations)


def build_app(spec: ServiceSpec, db: Database, settings: Settings) -> FastAPI:
    app = create_app(
        service=spec.name,
        max_body_bytes=settings.rlhf_max_body_bytes,
        large_body_paths=spec.large_body_paths,
    )
    app.state.db = db
    app.state.verifier = KeyVerifier(db.engine, ttl=settings.rlhf_auth_cache_seconds)
    spec.install_api(app)
    return app


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

    broker = producer = relay = server = None
    tasks: list[asyncio.Task] = []
    background: list[asyncio.Task] = []
    try:
        if {"consumer", "relay"} & roles:
            await ensure_topics(settings.require_kafka(), spec.topics)
        if "consumer" in roles:
            broker = KafkaBroker(settings.require_kafka(), enable_idempotence=False, logger=None)
            spec.register_consumers(db, broker, settings)
            await broker.start()
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
            )
            tasks.append(asyncio.create_task(relay.run()))
        if "background" in roles:
            background = [asyncio.create_task(loop_fn(db, settings)) for loop_fn in spec.background]
        if "api" in roles:
            port = settings.rlhf_http_port or spec.default_port
            config = uvicorn.Config(
                build_app(spec, db, settings), host=settings.rlhf_http_host, port=port,
                log_level="warning", access_log=False,
            )
            server = _Server(config)
            tasks.append(asyncio.create_task(server.serve()))
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
        await asyncio.gather(*tasks, *background, return_exceptions=True)
        if broker:
            await broker.stop()
        if producer:
            await producer.stop()
        await db.dispose()


def main(spec: ServiceSpec) -> None:
    parser = argparse.ArgumentParser(description=f"Run the {spec.name} service")
    parser.add_argument("--role", action="append", choices=ROLES, help="run only these roles (repeatable)")
    args = parser.parse_args()
    asyncio.run(run(spec, set(args.role or ROLES)))

