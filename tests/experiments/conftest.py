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


SENTENCES = {"a": ["user: hello\nassistant: the parcel ships today"] * 4,
             "b": ["user: hello\nassistant: please reset your password"] * 4}


def train_adapter(base, texts: list[str], out) -> str:
    """A LoRA adapter trained for a few steps on `texts`, saved to `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(len(str(out)))
    tokenizer = AutoTokenizer.from_pretrained(base)
    # Every projection and 30 steps: enough for each adapter to learn its sentence, so that the two
    # versions answer differently whatever the random base model.
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=8, lora_alpha=16, target_modules=modules, task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    for _ in range(30):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    return out.as_uri()


@pytest.fixture(scope="session")
def tiny_adapters(tmp_path_factory):
    """A tiny Llama made here and two LoRA adapters trained on it: (base directory, {a, b: adapter URL})."""
    pytest.importorskip("peft")
    from tests.training.tiny_model import make_tiny_llama

    root = tmp_path_factory.mktemp("tiny")
    base = make_tiny_llama(root / "base", [t for ts in SENTENCES.values() for t in ts] * 5)
    return str(base), {k: train_adapter(base, texts, root / f"adapter-{k}") for k, texts in SENTENCES.items()}
