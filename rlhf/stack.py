"""`rlhf up`: the whole product on one machine. With no DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS it
starts the embedded PostgreSQL and Tansu broker itself; then it migrates every service, starts each
service in its own process and the gateway in front of them, and stops them all on Ctrl-C."""

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from shared import auth
from shared.db import Database, make_engine
from shared.infra import TansuBroker, start_postgres
from shared.service import ServiceSpec, migrate


@dataclass(frozen=True)
class ServiceProcess:
    name: str
    module: str
    port: int
    url_variable: str | None  # how the gateway learns where it is


SERVICES = [
    ServiceProcess("feedback", "services.feedback.main", 8001, "RLHF_FEEDBACK_URL"),
    ServiceProcess("curation", "services.curation.main", 8002, "RLHF_CURATION_URL"),
    ServiceProcess("training", "services.training.main", 8003, "RLHF_TRAINING_URL"),
]
GATEWAY = ServiceProcess("gateway", "services.gateway.main", 8000, None)


def service_specs() -> list[ServiceSpec]:
    return [importlib.import_module(svc.module).SPEC for svc in SERVICES]


async def migrate_all(database_url: str) -> None:
    """Every service's migrations (and the API keys'), for `rlhf migrate` and `rlhf up`."""
    for spec in service_specs():
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
        gateway_port: int = 8000,
        service_ports: dict[str, int] | None = None,
        kafka_port: int = 19092,
        extra_env: dict[str, str] | None = None,
    ):
        self.data_dir = data_dir.resolve()
        self.database_url = database_url
        self.kafka_bootstrap = kafka_bootstrap
        self.gateway_port = gateway_port
        self.service_ports = service_ports or {}
        self.kafka_port = kafka_port
        self.extra_env = extra_env or {}
        self.postgres = None
        self.broker: TansuBroker | None = None
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def port_of(self, svc: ServiceProcess) -> int:
        return self.service_ports.get(svc.name, svc.port)

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
        )
        env.update(self.extra_env)
        env.update(more)
        return env

    def start_services(self) -> None:
        routes = {}
        for svc in SERVICES:
            port = self.port_of(svc)
            self._spawn(svc, self.env(RLHF_HTTP_PORT=str(port)))
            routes[svc.url_variable] = f"http://127.0.0.1:{port}"
        self._spawn(GATEWAY, self.env(RLHF_HTTP_PORT=str(self.gateway_port), **routes))
        for svc in [*SERVICES, GATEWAY]:
            port = self.gateway_port if svc is GATEWAY else self.port_of(svc)
            self._wait_healthy(svc, port)

    def _spawn(self, svc: ServiceProcess, env: dict[str, str]) -> None:
        log = open(self.data_dir / "logs" / f"{svc.name}.log", "ab")
        self.processes[svc.name] = subprocess.Popen(
            [sys.executable, "-m", svc.module], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def _wait_healthy(self, svc: ServiceProcess, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes[svc.name]
            if process.poll() is not None:
                raise RuntimeError(
                    f"{svc.name} exited with {process.returncode}; see {self.data_dir / 'logs' / (svc.name + '.log')}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{svc.name} did not become healthy on port {port}")

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

    async def migrate(self) -> None:
        await migrate_all(self.database_url)

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


def up(data_dir: Path, *, gateway_port: int = 8000, services_port: int = 8001, kafka_port: int = 19092) -> None:
    """Runs until Ctrl-C or SIGTERM. Service i (in SERVICES order) listens on services_port + i."""
    signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C stops it even when started with SIGINT ignored (as a shell starts background jobs, and
    # Python then leaves it ignored)
    signal.signal(signal.SIGINT, _interrupt)
    stack = Stack(
        data_dir,
        database_url=os.environ.get("DATABASE_URL") or None,
        kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        gateway_port=gateway_port,
        service_ports={svc.name: services_port + i for i, svc in enumerate(SERVICES)},
        kafka_port=kafka_port,
    )
    try:
        stack.start_infrastructure()
        asyncio.run(stack.migrate())
        admin_key = asyncio.run(stack.first_admin_key())
        stack.start_services()
        print(f"Betabase RLHF is up. Gateway: {stack.gateway_url}", flush=True)
        for svc in SERVICES:
            print(f"  {svc.name:<10} http://127.0.0.1:{stack.port_of(svc)}  (metrics at /metrics)")
        where = f"embedded, data in {stack.data_dir / 'postgres'}" if stack.postgres else redacted(stack.database_url)
        print(f"  postgres   {where}")
        print(f"  kafka      {stack.kafka_bootstrap}{' (embedded Tansu)' if stack.broker else ''}")
        print(f"  logs       {stack.data_dir / 'logs'}")
        if admin_key:
            print(f"\nAdmin API key for organization 'default' (shown once):\n  {admin_key}\n")
        else:
            print("\nMake an API key with: rlhf keys create --org ORG --role viewer|curator|admin\n")
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
