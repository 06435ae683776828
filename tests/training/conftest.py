"""Fixtures of the training tests: the providers' local stand-ins, started when this folder is
collected — before the session's service processes start, so that they inherit the settings
pointing at them (OPENAI base URL and key, the moto server as Bedrock and S3) — and helpers that
export a dataset the way the curation service does: files in the object store, then
DatasetExported on the bus."""

import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest
import pytest_asyncio

from services.training.main import SPEC
from services.training.settings import get_training_settings
from shared.db import Database
from shared.events import DatasetExported
from shared.infra import free_port
from shared.objectstore import object_store_from_url
from shared.settings import get_settings
from tests.fakes.openai_fake import OpenAIFake, contract_path
from tests.support import in_process_api, service_database

BEDROCK_ROLE = "arn:aws:iam::123456789012:role/rlhf-bedrock-fine-tuning"
FAKES: dict = {}


def pytest_configure(config):
    objects = Path(tempfile.mkdtemp(prefix="rlhf-training-objects-"))
    env = {
        "RLHF_OBJECT_STORE_URL": objects.as_uri(),
        "RLHF_TRAINING_POLL_INTERVAL": "0.2",
        "RLHF_TRAINING_PROGRESS_INTERVAL": "0.5",
        # local compute priced so that budgets bite: $1000 an hour at a million tokens an hour
        "RLHF_LOCAL_CPU_HOUR_PRICE": "1000", "RLHF_LOCAL_GPU_HOUR_PRICE": "1000",
        "RLHF_LOCAL_TOKENS_PER_HOUR": "1000000",
        "RLHF_OPENAI_MAX_RETRIES": "3",
    }
    if contract_path().exists():
        fake = OpenAIFake().start()
        FAKES["openai"] = fake
        env.update(RLHF_OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="sk-test-fake")
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    FAKES["moto"] = moto
    bucket = f"rlhf-bedrock-{uuid.uuid4().hex[:8]}"
    env.update(
        AWS_ENDPOINT_URL_BEDROCK=f"http://127.0.0.1:{port}", AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
        RLHF_BEDROCK_ROLE_ARN=BEDROCK_ROLE, RLHF_BEDROCK_BUCKET=bucket,
    )
    os.environ.update(env)
    boto3.client("s3").create_bucket(Bucket=bucket)
    get_settings.cache_clear()
    get_training_settings.cache_clear()


def pytest_unconfigure(config):
    if "openai" in FAKES:
        FAKES.pop("openai").stop()
    if "moto" in FAKES:
        FAKES.pop("moto").stop()


@pytest.fixture
def openai_fake() -> OpenAIFake:
    if "openai" not in FAKES:
        pytest.skip(f"OpenAI contract not found at {contract_path()} (set RLHF_OPENAI_CONTRACT)")
    return FAKES["openai"]


@pytest_asyncio.fixture(scope="session")
async def training_db(migrated):
    async with service_database(SPEC, migrated.database_url) as db:
        yield db


@pytest_asyncio.fixture
async def api(training_db, settings):
    """The training service's HTTP app in-process, on the real database."""
    async with in_process_api(SPEC, training_db, settings) as client:
        yield client


def sft_rows(n: int = 12) -> list[dict]:
    return [{"messages": [{"role": "system", "content": "You are a support assistant."},
                          {"role": "user", "content": f"How do I check deployment {i}?"},
                          {"role": "assistant", "content": "Open Deployments, then the Status panel."}]}
            for i in range(n)]


def openai_dpo_rows(n: int = 12) -> list[dict]:
    return [{"input": {"messages": [{"role": "user", "content": f"How do I check deployment {i}?"}]},
             "preferred_output": [{"role": "assistant", "content": "Open Deployments, then Status."}],
             "non_preferred_output": [{"role": "assistant", "content": "No idea."}]} for i in range(n)]


def bedrock_rows(n: int = 12) -> list[dict]:
    return [{"system": "You are a support assistant.",
             "messages": [{"role": "user", "content": f"How do I check deployment {i}?"},
                          {"role": "assistant", "content": "Open Deployments, then the Status panel."}]}
            for i in range(n)]


def trl_dpo_rows(n: int = 16) -> list[dict]:
    return [{"prompt": f"How do I check deployment {i}?", "chosen": "Open Deployments then the Status panel.",
             "rejected": "No idea, sorry."} for i in range(n)]


ROWS = {"openai_sft": sft_rows, "openai_dpo": openai_dpo_rows, "bedrock_claude": bedrock_rows, "trl_dpo": trl_dpo_rows}


def export_dataset(organization: str, export_format: str, *, rows: list[dict] | None = None,
                   auto_train: dict | None = None, dataset_id: uuid.UUID | None = None,
                   validation: list[dict] | None = None, name: str = "Support answers") -> DatasetExported:
    """Writes an export to the object store as curation does (train, validation when given,
    manifest, sources.jsonl); returns the event announcing it."""
    dataset_id = dataset_id or uuid.uuid4()
    rows = rows if rows is not None else ROWS.get(export_format, sft_rows)()
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    store = object_store_from_url(get_settings().object_store_url())
    key = f"exports/{organization}/{dataset_id}/v1"
    with store.writer(f"{key}/train.jsonl") as out:
        out.write(body)
    validation_url = validation_sha256 = None
    if validation:
        validation_body = "".join(json.dumps(r) + "\n" for r in validation).encode()
        with store.writer(f"{key}/validation.jsonl") as out:
            out.write(validation_body)
        validation_url = store.url(f"{key}/validation.jsonl")
        validation_sha256 = hashlib.sha256(validation_body).hexdigest()
    with store.writer(f"{key}/manifest.json") as out:
        out.write(json.dumps({"format": export_format, "count": len(rows)}).encode())
    sources = [{"split": split, "id": str(uuid.uuid4()), "feedback_ids": [str(uuid.uuid4())]}
               for split, n in (("train", len(rows)), ("validation", len(validation or []))) for _ in range(n)]
    with store.writer(f"{key}/sources.jsonl") as out:
        out.write("".join(json.dumps(e) + "\n" for e in sources).encode())
    return DatasetExported(
        dataset_id=dataset_id, name=name, dataset_type="dpo" if "dpo" in export_format else "instruction",
        export_version=1, format=export_format, url=store.url(f"{key}/train.jsonl"),
        sha256=hashlib.sha256(body).hexdigest(), manifest_url=store.url(f"{key}/manifest.json"),
        validation_url=validation_url, validation_sha256=validation_sha256,
        counts={"train": len(rows), "validation": len(validation or []), "total": len(rows) + len(validation or [])},
        auto_train=auto_train,
    )


async def record_export(training_db: Database, organization: str, event: DatasetExported) -> None:
    """For in-process API tests: the dataset as the consumer would have recorded it."""
    from services.training import handlers
    from shared.consumer import Delivery

    async with training_db.unit_of_work() as uow:
        await handlers.record_exported_datasets(uow, [Delivery(event.envelope(organization=organization,
                                                                               producer="tests"), event)])


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from tests.training.tiny_model import make_tiny_llama, model_dir

    texts = [" ".join([r["prompt"], r["chosen"], r["rejected"]]) for r in trl_dpo_rows()]
    texts += ["user: assistant: system: You are a support assistant."]
    return make_tiny_llama(model_dir("tiny-llama"), texts)
