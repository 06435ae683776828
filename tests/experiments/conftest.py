"""Fixtures of the experiments tests: the service's HTTP app in-process on the real database,
registry events delivered to its handlers the way the shared consumer delivers them, a local
OpenAI-compatible chat server as the versions' backend, and the real `openai` SDK pointed at the
router with its answers checked against OpenAI's contract."""

import uuid
from datetime import UTC, datetime

import httpx
import openai
import orjson
import pytest
import pytest_asyncio
from openapi_core.contrib.starlette.requests import StarletteOpenAPIRequest
from openapi_core.contrib.starlette.responses import StarletteOpenAPIResponse
from sqlalchemy import text
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response

from services.experiments import handlers
from services.experiments.batching import Batcher
from services.experiments.main import SPEC
from shared.consumer import Delivery
from shared.db import Database
from shared.events import Event, ModelDeployed, ModelRegistered, ResponseServed
from shared.service import build_app, migrate
from tests.experiments.chat_fake import ChatFake, load_contract
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


@pytest_asyncio.fixture
async def app(experiments_db, settings):
    app = build_app(SPEC, experiments_db, settings)
    yield app
    if getattr(app.state, "experiments_batcher", None):
        await app.state.experiments_batcher.drain()


class ContractChecked(httpx.AsyncBaseTransport):
    """The router's answers to chat completions, checked against OpenAI's OpenAPI contract."""

    def __init__(self, app):
        self.inner = httpx.ASGITransport(app=app)
        self.contract = load_contract("http://experiments/v1")
        self.violations: list[str] = []
        self.checked = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        streamed = response.headers.get("content-type", "").startswith("text/event-stream")
        if request.url.path.endswith("/chat/completions") and response.status_code == 200 and not streamed:
            scope = {"type": "http", "method": request.method, "path": request.url.path, "root_path": "",
                     "query_string": request.url.query, "scheme": "http", "server": ("experiments", 80),
                     "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]}
            try:
                self.contract.validate_response(
                    StarletteOpenAPIRequest(StarletteRequest(scope), request.content),
                    StarletteOpenAPIResponse(Response(content=body, status_code=200,
                                                      media_type="application/json")))
                self.checked += 1
            except Exception as exc:
                self.violations.append(f"{exc!r} {getattr(exc, '__cause__', '')}")
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)


@pytest_asyncio.fixture
async def http(app):
    """The experiments app's HTTP API, in process."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://experiments") as client:
        yield client


async def start_experiment(http: httpx.AsyncClient, headers: dict, control: ModelRegistered,
                           treatment: ModelRegistered, *, path: str = "/api/experiments", **fields) -> dict:
    """An experiment between two versions through the API (thumbs-up rate its success metric unless
    `fields` say otherwise); returns the answer."""
    body = {"name": "experiment", "control_model_id": str(control.model_version_id),
            "treatment_model_id": str(treatment.model_version_id), "success_metrics": [{"name": "thumbs_up_rate"}],
            **fields}
    answer = await http.post(path, headers=headers, json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest_asyncio.fixture
async def checked(app):
    transport = ContractChecked(app)
    yield transport
    assert transport.violations == []


@pytest_asyncio.fixture
async def sdk(checked, make_key, org, chat_backend):
    """An OpenAI client whose key is an RLHF API key, pointed at the router; the router's answers and
    its calls to the backend are checked against OpenAI's contract."""
    key = (await make_key(org, "viewer"))["Authorization"].removeprefix("Bearer ")
    http = httpx.AsyncClient(transport=checked)
    async with openai.AsyncOpenAI(base_url="http://experiments/v1", api_key=key, http_client=http,
                                  max_retries=0) as client:
        yield client
    assert chat_backend.violations == []


async def outbox_events(db, organization: str, event_type: str) -> list[dict]:
    """The payloads of the organization's events of one type in the service's outbox, oldest first."""
    async with db.read() as session:
        rows = await session.execute(text("SELECT envelope FROM experiments.outbox WHERE organization = :o "
                                          "AND event_type = :t ORDER BY id"), {"o": organization, "t": event_type})
        return [orjson.loads(r[0])["payload"] for r in rows]


async def served_events(db, organization: str) -> list[dict]:
    return await outbox_events(db, organization, "ResponseServed")


async def deliver(db: Database, organization: str, handler, *events: Event) -> None:
    """Events applied as the shared consumer applies a batch: one unit of work."""
    async with db.unit_of_work() as uow:
        await handler(uow, [Delivery(e.envelope(organization=organization, producer="tests"), e) for e in events])


async def serve_with_latencies(db: Database, organization: str, experiment_id: str, variant: str,
                               latencies_ms) -> list[handlers.Served]:
    """Answers served in an experiment with these latencies, recorded as the router records them (a
    batch of ResponseServed through the batcher: exposures, outcomes, latency sketch, guardrails)."""
    served = [handlers.Served(organization, ResponseServed(
        response_id=f"r-{uuid.uuid4().hex}", model_name="support-bot", model_version_id=uuid.uuid4(),
        model_version="1.0.0", experiment_id=uuid.UUID(experiment_id), variant=variant,
        unit=f"{variant}-user-{i}", latency_ms=round(float(ms)), served_at=datetime.now(UTC)))
        for i, ms in enumerate(latencies_ms)]
    batcher = Batcher(db)
    for s in served:
        batcher.served(s)
    await batcher.drain()
    return served


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
