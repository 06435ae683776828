"""`rlhf up`: the whole product on one machine. With no DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS it
starts the embedded PostgreSQL and Tansu broker itself; then it migrates every service, starts each
service in its own process and the gateway in front of them, and stops them all on Ctrl-C."""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from services.gateway.main import DEFAULT_PORT as GATEWAY_PORT
from shared import auth
from shared.db import Database, make_engine
from shared.infra import TansuBroker, free_port, start_postgres
from shared.service import ROLES, SERVICES_VARIABLE, ServiceSpec, load_specs, migrate, service_modules

GATEWAY_MODULE = "services.gateway.main"


def service_specs(modules: list[str] | None = None) -> list[ServiceSpec]:
    return list(load_specs(modules).values())


async def migrate_all(database_url: str, modules: list[str] | None = None) -> None:
    """Every service's migrations (and the API keys'), for `rlhf migrate` and `rlhf up`."""
    for spec in service_specs(modules):
        db = Database(database_url, schema=spec.schema, producer=spec.name, pool_size=1)
        try:
            await migrate(spec, db)
        finally:
            await db.dispose()


class Stack:
    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        kafka_bootstrap: str | None = None,
        gateway_port: int = GATEWAY_PORT,
        service_ports: dict[str, int] | None = None,
        kafka_port: int = 19092,
        extra_env: dict[str, str] | None = None,
        services: list[str] | None = None,
    ):
        self.data_dir = data_dir.resolve()
        self.database_url = database_url
        self.kafka_bootstrap = kafka_bootstrap
        self.gateway_port = gateway_port
        self.service_ports = service_ports or {}
        self.kafka_port = kafka_port
        self.extra_env = extra_env or {}
        self.services = load_specs(services or service_modules())  # module -> spec, in start order
        self.postgres = None
        self.broker: TansuBroker | None = None
        self.processes: dict[str, subprocess.Popen] = {}
        self.probe_ports: dict[str, int] = {}  # processes without an API: where their /metrics are

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def port_of(self, spec: ServiceSpec) -> int:
        return self.service_ports.get(spec.name, spec.port)

    def start_infrastructure(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        if not self.database_url:
            self.postgres = start_postgres(self.data_dir)
            self.database_url = self.postgres.get_uri()
        if not self.kafka_bootstrap:
            self.broker = TansuBroker(self.kafka_port, log_path=self.data_dir / "logs" / "tansu.log").start()
            self.kafka_bootstrap = self.broker.bootstrap

    def env(self, **more: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url or "",
            KAFKA_BOOTSTRAP_SERVERS=self.kafka_bootstrap or "",
            RLHF_DATA_DIR=str(self.data_dir),
            RLHF_HTTP_HOST="127.0.0.1",
            **{SERVICES_VARIABLE: ",".join(self.services)},
        )
        if self.broker:  # an embedded broker forgets its topics when it stops: relays replay their outboxes
            env["RLHF_OUTBOX_REPLAY_ON_FRESH_BROKER"] = "1"
        env.update(self.extra_env)
        env.update(more)
        return env

    def url_of(self, spec: ServiceSpec) -> str:
        return f"http://127.0.0.1:{self.port_of(spec)}"

    def start_services(self) -> None:
        for module, spec in self.services.items():
            roles = [r for r in ROLES if r != "relay"] if spec.relay_process else []
            self._spawn(spec.name, module, self.env(RLHF_HTTP_PORT=str(self.port_of(spec))), roles)
        routes = {spec.url_variable: self.url_of(spec) for spec in self.services.values()}
        self._spawn("gateway", GATEWAY_MODULE, self.env(RLHF_HTTP_PORT=str(self.gateway_port), **routes))
        for spec in self.services.values():
            self._wait_healthy(spec.name, self.port_of(spec))
        self._wait_healthy("gateway", self.gateway_port)
        # Processes that take no requests start once every route answers, as their start would only
        # slow the others': relays of their own (events written meanwhile wait in the outbox), and the
        # further members of consumer groups (the group's first member consumes meanwhile).
        # Each on a port of its own for its /healthz and /metrics.
        for module, spec in self.services.items():
            extra = [("relay", f"{spec.name}-relay")] if spec.relay_process else []
            extra += [("consumer", f"{spec.name}-consumer-{n}") for n in range(2, spec.consumer_processes + 1)]
            for role, name in extra:
                self.probe_ports[name] = free_port()
                self._spawn(name, module, self.env(RLHF_HTTP_PORT=str(self.probe_ports[name])), [role])

    def _spawn(self, name: str, module: str, env: dict[str, str], roles: Sequence[str] = ()) -> None:
        log = open(self.data_dir / "logs" / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module, *(arg for role in roles for arg in ("--role", role))],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )

    def _wait_healthy(self, name: str, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}; see {self.data_dir / 'logs' / (name + '.log')}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not become healthy on port {port}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        if self.broker:
            self.broker.stop()
            self.broker = None

    def discard(self) -> None:
        """Stops the stack and deletes its data directory, the embedded PostgreSQL's cluster with it:
        for a stack made for one run (the benchmarks; a chaos run leaves ~450 MB)."""
        self.stop()
        if self.postgres:
            try:
                self.postgres.cleanup()
            except Exception as exc:  # the directory goes anyway
                print(f"postgres cleanup: {exc!r}", file=sys.stderr)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    async def migrate(self) -> None:
        await migrate_all(self.database_url, list(self.services))

    async def first_admin_key(self) -> str | None:
        """An admin key for organization `default`, made once: None when the data dir already had one."""
        marker = self.data_dir / "admin-key-issued"
        if marker.exists():
            return None
        engine = make_engine(self.database_url, pool_size=1)
        try:
            key = await auth.create_key(engine, organization="default", role=auth.Role.admin, name="first admin")
        finally:
            await engine.dispose()
        marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        return key


def redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def up(
    data_dir: Path, *, gateway_port: int = GATEWAY_PORT, services_port: int | None = None, kafka_port: int = 19092
) -> None:
    """Runs until Ctrl-C or SIGTERM. Each service listens on its own port, or with `services_port`
    service i (in start order) on services_port + i."""
    signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C stops it even when started with SIGINT ignored (as a shell starts background jobs, and
    # Python then leaves it ignored)
    signal.signal(signal.SIGINT, _interrupt)
    stack = Stack(
        data_dir,
        database_url=os.environ.get("DATABASE_URL") or None,
        kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        gateway_port=gateway_port,
        service_ports=None if services_port is None else {
            spec.name: services_port + i for i, spec in enumerate(load_specs().values())
        },
        kafka_port=kafka_port,
    )
    try:
        stack.start_infrastructure()
        asyncio.run(stack.migrate())
        admin_key = asyncio.run(stack.first_admin_key())
        stack.start_services()
        print(f"Betabase RLHF is up. Gateway: {stack.gateway_url}", flush=True)
        for spec in stack.services.values():
            print(f"  {spec.name:<10} {stack.url_of(spec)}  (metrics at /metrics)")
        for name, port in stack.probe_ports.items():
            print(f"  {name} (no API): metrics at http://127.0.0.1:{port}/metrics")
        where = f"embedded, data in {stack.data_dir / 'postgres'}" if stack.postgres else redacted(stack.database_url)
        print(f"  postgres   {where}")
        print(f"  kafka      {stack.kafka_bootstrap}{' (embedded Tansu)' if stack.broker else ''}")
        print(f"  logs       {stack.data_dir / 'logs'}")
        if admin_key:
            print(f"\nAdmin API key for organization 'default' (shown once):\n  {admin_key}\n")
        else:
            print("\nMake an API key with an admin key of its organization: RLHF_API_KEY=<admin key> "
                  "rlhf keys create --org ORG --role viewer|curator|admin\n"
                  "(a new organization's first admin key: rlhf keys create --direct --org ORG --role admin)\n")
        print("Ctrl-C stops everything.", flush=True)
        while True:
            for name, process in stack.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}; see {stack.data_dir / 'logs'}")
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    finally:
        stack.stop()
