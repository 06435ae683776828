"""Fixtures of the experiments tests: the service's HTTP app in-process on the real database,
registry events delivered to its handlers the way the shared consumer delivers them, and a local
OpenAI-compatible chat server as the versions' backend."""

import uuid
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from services.experiments import handlers
from services.experiments.main import SPEC
from shared.consumer import Delivery
from shared.db import Database
from shared.events import Event, ModelDeployed, ModelRegistered
from shared.service import migrate
from tests.experiments.chat_fake import ChatFake
from tests.support import in_process_api, service_database


@pytest_asyncio.fixture(scope="session")
async def experiments_db(migrated):
    async with service_database(SPEC, migrated.database_url) as db:
        await migrate(SPEC, db)
        yield db


@pytest_asyncio.fixture
async def api(experiments_db, settings):
    async with in_process_api(SPEC, experiments_db, settings) as client:
        yield client
        batcher = getattr(client._transport.app.state, "experiments_batcher", None)  # noqa: SLF001
        if batcher:
            await batcher.drain()


@pytest.fixture(scope="session")
def chat_backend():
    fake = ChatFake().start()
    yield fake
    fake.stop()


async def deliver(db: Database, organization: str, handler, *events: Event) -> None:
    """Events applied as the shared consumer applies a batch: one unit of work."""
    async with db.unit_of_work() as uow:
        await handler(uow, [Delivery(e.envelope(organization=organization, producer="tests"), e) for e in events])


def registered(name: str, version: str, serving: dict, status: str = "testing") -> ModelRegistered:
    return ModelRegistered(model_version_id=uuid.uuid4(), name=name, model_version=version,
                           model_id=f"{name}-{version}", base_model="tiny-llama", status=status, serving=serving,
                           registered_by="tests", registered_at=datetime.now(UTC))


def deployed(version: ModelRegistered) -> ModelDeployed:
    return ModelDeployed(model_version_id=version.model_version_id, name=version.name,
                         model_version=version.model_version, model_id=version.model_id, serving=version.serving,
                         deployed_by="tests", deployed_at=datetime.now(UTC))


async def two_versions(db: Database, organization: str, backend_url: str, name: str = "support-bot"):
    """v1 deployed and v2 in testing, both served by the chat fake under their own model names."""
    v1 = registered(name, "1.0.0", {"kind": "openai_compatible", "base_url": backend_url, "model": f"{name}-v1"})
    v2 = registered(name, "1.1.0", {"kind": "openai_compatible", "base_url": backend_url, "model": f"{name}-v2"})
    await deliver(db, organization, handlers.record_registered, v1, v2)
    await deliver(db, organization, handlers.record_deployed, deployed(v1))
    return v1, v2
