"""Fixtures of the registry tests: the registry's HTTP app in-process on the real database, and
completed jobs delivered to its handler the way the shared consumer delivers them."""

import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest_asyncio

from services.registry import handlers
from services.registry.main import SPEC
from shared.consumer import Delivery
from shared.db import Database
from shared.events import ExportRef, JobCompleted
from shared.objectstore import default_store
from shared.service import migrate
from shared.settings import get_settings
from tests.support import in_process_api, service_database


def pytest_configure(config):
    """An object store of the run's own (unless another folder's fixtures set one), before the
    service processes start, so that they and this process read the same files."""
    if not os.environ.get("RLHF_OBJECT_STORE_URL"):
        os.environ["RLHF_OBJECT_STORE_URL"] = Path(tempfile.mkdtemp(prefix="rlhf-registry-objects-")).as_uri()
        get_settings.cache_clear()
        default_store.cache_clear()


GOOD_EVALUATION = {"kind": "local", "eval_loss": 0.4, "preference_accuracy": 0.9, "reward_margin": 0.7,
                   "leak_check": {"samples": 8, "findings": 0, "pii_findings": 0, "verbatim_findings": 0,
                                  "examples": []}}


@pytest_asyncio.fixture(scope="session")
async def registry_db(migrated):
    async with service_database(SPEC, migrated.database_url) as db:
        await migrate(SPEC, db)  # a no-op once the registry is one of the stack's services
        yield db


@pytest_asyncio.fixture
async def api(registry_db, settings):
    async with in_process_api(SPEC, registry_db, settings) as client:
        yield client


def completed_job(*, model_name: str | None = "support-bot", base_model: str = "tiny-llama",
                  provider: str = "huggingface", evaluation: dict | None = GOOD_EVALUATION,
                  export: ExportRef | None = None, job_id: uuid.UUID | None = None) -> JobCompleted:
    job_id = job_id or uuid.uuid4()
    model = {"openai": "ft:gpt-4o-mini-2024-07-18:acme::abc123",
             "bedrock": "arn:aws:bedrock:us-east-1:123456789012:custom-model/x"}.get(
        provider, default_store().url(f"adapters/{job_id}") + "/")
    return JobCompleted(
        job_id=job_id, dataset_id=export.dataset_id if export else None, provider=provider, base_model=base_model,
        resulting_model_id=model, final_metrics={"train_loss": 0.5}, actual_cost=1.25,
        completed_at=datetime.now(UTC), method="dpo", hyperparameters={"beta": 0.1}, cost_estimate=1.5,
        export_version=export.export_version if export else None, export=export, model_name=model_name,
        evaluation=evaluation,
    )


async def deliver(db: Database, organization: str, *events, handler=handlers.register_completed_job) -> None:
    """Events applied as the shared consumer applies a batch: one unit of work."""
    async with db.unit_of_work() as uow:
        await handler(uow, [Delivery(e.envelope(organization=organization, producer="tests"), e) for e in events])
