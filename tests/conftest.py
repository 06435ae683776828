"""Test infrastructure, started once per run: the real embedded PostgreSQL and Tansu broker (or the
ones named by DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS), migrated with the product's own migrations,
and the real service processes, started the way `rlhf up` starts them."""

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from rlhf.stack import Stack, migrate_all, service_specs
from shared import auth
from shared.db import make_engine
from shared.infra import ensure_topics, free_port
from shared.settings import Settings
from tests.support import KafkaProbe

# Short consumer-group sessions: a killed consumer's partitions move on quickly.
FAST_GROUPS = {
    "RLHF_CONSUMER_SESSION_TIMEOUT_MS": "6000",
    "RLHF_CONSUMER_HEARTBEAT_INTERVAL_MS": "1000",
    "RLHF_OUTBOX_POLL_INTERVAL": "0.05",
}


def pytest_configure(config):
    # Local runs take base models only from the models directory: the run's own, set before any service
    # process or settings object reads it, where the tests make their tiny models (tests/training/tiny_model.py).
    if not os.environ.get("RLHF_MODELS_DIR"):
        config._rlhf_models_dir = os.environ["RLHF_MODELS_DIR"] = tempfile.mkdtemp(prefix="rlhf-models-")


def pytest_unconfigure(config):
    if made := getattr(config, "_rlhf_models_dir", None):
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(scope="session")
def infra(tmp_path_factory):
    """PostgreSQL and Kafka, migrated. Yields the Stack that owns them."""
    data_dir = tmp_path_factory.mktemp("rlhf")
    stack = Stack(
        data_dir,
        database_url=os.environ.get("DATABASE_URL") or None,
        kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        kafka_port=free_port(),
        gateway_port=free_port(),
        service_ports={spec.name: free_port() for spec in service_specs()},
        extra_env=FAST_GROUPS,
    )
    stack.start_infrastructure()
    os.environ["DATABASE_URL"] = stack.database_url
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = stack.kafka_bootstrap
    os.environ.update(FAST_GROUPS)
    yield stack
    stack.stop()


@pytest_asyncio.fixture(scope="session")
async def migrated(infra):
    await migrate_all(infra.database_url)
    await ensure_topics(infra.kafka_bootstrap, [t for spec in service_specs() for t in spec.topics])
    return infra


@pytest.fixture(scope="session")
def stack(migrated):
    """Every service and the gateway as real processes (logs in <data dir>/logs)."""
    migrated.start_services()
    return migrated


@pytest.fixture(scope="session")
def settings(migrated) -> Settings:
    return Settings(database_url=migrated.database_url, kafka_bootstrap_servers=migrated.kafka_bootstrap)


@pytest_asyncio.fixture(scope="session")
async def engine(migrated):
    engine = make_engine(migrated.database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
def org() -> str:
    """A fresh organization per test, so tests never see each other's rows."""
    return f"org-{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def make_key(engine):
    async def make(organization: str, role: str = "curator") -> dict[str, str]:
        key = await auth.create_key(engine, organization=organization, role=auth.Role[role])
        return {"Authorization": f"Bearer {key}"}

    return make


@pytest_asyncio.fixture(scope="session")
async def kafka(migrated):
    probe = KafkaProbe(migrated.kafka_bootstrap)
    yield probe
    await probe.close()


@pytest_asyncio.fixture
async def gateway(stack):
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        yield client


def pytest_report_header(config):
    return f"data: embedded PostgreSQL + Tansu unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are set ({Path.cwd()})"
