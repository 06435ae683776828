"""Local versions through the router: a tiny Llama made in the test, two LoRA adapters trained on it
in the test (a few steps each on different sentences), registered as two versions of one name with
`local` serving; the real `openai` SDK gets answers from both variants, streamed or not."""

import httpx
import openai
import pytest
import pytest_asyncio

pytest.importorskip("peft")

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from services.experiments import handlers  # noqa: E402
from services.experiments.main import SPEC  # noqa: E402
from shared.service import build_app  # noqa: E402
from tests.experiments.conftest import deliver, deployed, registered  # noqa: E402
from tests.training.tiny_model import make_tiny_llama  # noqa: E402

pytestmark = pytest.mark.asyncio

SENTENCES = {"a": ["user: hello\nassistant: the parcel ships today"] * 4,
             "b": ["user: hello\nassistant: please reset your password"] * 4}


def train_adapter(base, texts: list[str], out) -> str:
    """A LoRA adapter trained for a few steps on `texts`, saved to `out`."""
    torch.manual_seed(len(str(out)))
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    for _ in range(8):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    return out.as_uri()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    base = make_tiny_llama(root / "base", [t for ts in SENTENCES.values() for t in ts] * 5)
    return str(base), {k: train_adapter(base, texts, root / f"adapter-{k}") for k, texts in SENTENCES.items()}


@pytest_asyncio.fixture
async def app(experiments_db, settings):
    app = build_app(SPEC, experiments_db, settings)
    yield app
    if getattr(app.state, "experiments_batcher", None):
        await app.state.experiments_batcher.drain()


async def test_two_adapters_of_a_tiny_local_model_answer_as_two_variants(app, experiments_db, tiny, make_key, org):
    base, adapters = tiny
    v1 = registered("local-bot", "1.0.0", {"kind": "local", "base_model": base, "adapter_url": adapters["a"]})
    v2 = registered("local-bot", "1.1.0", {"kind": "local", "base_model": base, "adapter_url": adapters["b"]})
    await deliver(experiments_db, org, handlers.record_registered, v1, v2)
    await deliver(experiments_db, org, handlers.record_deployed, deployed(v1))
    curator = await make_key(org, "curator")
    key = curator["Authorization"].removeprefix("Bearer ")
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://experiments")
    exp = await http.post("/api/experiments", headers=curator, json={
        "name": "adapters", "control_model_id": str(v1.model_version_id),
        "treatment_model_id": str(v2.model_version_id), "success_metrics": [{"name": "rating"}]})
    assert exp.status_code == 201, exp.text
    client = openai.AsyncOpenAI(base_url="http://experiments/v1", api_key=key, max_retries=0,
                                http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app)))

    answers: dict[str, set[str]] = {"control": set(), "treatment": set()}
    for i in range(12):
        raw = await client.chat.completions.with_raw_response.create(
            model="local-bot", messages=[{"role": "user", "content": "hello"}], user=f"u{i}", max_tokens=6)
        completion = raw.parse()
        answers[raw.headers["x-rlhf-variant"]].add(completion.choices[0].message.content)
        assert completion.usage.completion_tokens > 0
    assert answers["control"] and answers["treatment"]
    assert answers["control"] != answers["treatment"]  # two adapters, two answers (greedy decoding)

    stream = await client.chat.completions.create(model="local-bot", messages=[{"role": "user", "content": "hello"}],
                                                   user="u0", max_tokens=6, stream=True)
    chunks = [c async for c in stream]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed in answers["control"] | answers["treatment"]
