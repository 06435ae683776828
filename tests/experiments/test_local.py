"""Local versions through the router: a tiny Llama made in the test, two LoRA adapters trained on it
in the test (a few steps each on different sentences), registered as two versions of one name with
`local` serving; the real `openai` SDK gets answers from both variants, streamed or not."""

import httpx
import openai
import pytest

pytest.importorskip("peft")

from services.experiments import handlers  # noqa: E402
from tests.experiments.conftest import deliver, deployed, registered, start_experiment  # noqa: E402

pytestmark = pytest.mark.asyncio


async def test_two_adapters_of_a_tiny_local_model_answer_as_two_variants(app, http, experiments_db, tiny_adapters,
                                                                          make_key, org):
    base, adapters = tiny_adapters
    v1 = registered("local-bot", "1.0.0", {"kind": "local", "base_model": base, "adapter_url": adapters["a"]})
    v2 = registered("local-bot", "1.1.0", {"kind": "local", "base_model": base, "adapter_url": adapters["b"]})
    await deliver(experiments_db, org, handlers.record_registered, v1, v2)
    await deliver(experiments_db, org, handlers.record_deployed, deployed(v1))
    curator = await make_key(org, "curator")
    key = curator["Authorization"].removeprefix("Bearer ")
    await start_experiment(http, curator, v1, v2, name="adapters", success_metrics=[{"name": "rating"}])
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
