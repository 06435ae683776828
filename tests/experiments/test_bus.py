"""End to end with the stack up, through the broker and the gateway: two versions of one name
registered (served by a local OpenAI-compatible server), the first deployed; an experiment; simulated
users calling /v1/chat/completions through the `openai` SDK and posting feedback by response id only;
a significant result; full deploy -> DeploymentRequested -> the registry's ModelDeployed -> the
name's traffic on the winner."""

import json
import random
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest

from shared.events import DeploymentRequested, ExperimentConcluded, ExperimentStarted, ModelDeployed, ResponseServed
from shared.objectstore import object_store_from_url
from tests.support import envelope_of, eventually, of_org

pytestmark = pytest.mark.asyncio

USERS = 200


@pytest.fixture(params=["openai_compatible", pytest.param("local", marks=pytest.mark.timeout(900))])
def servings(request, chat_backend):
    """How v1 and v2 are served: by a local OpenAI-compatible server, or as two LoRA adapters of a
    tiny Llama trained in the test (loaded by the experiments service process itself)."""
    if request.param == "openai_compatible":
        return [{"kind": "openai_compatible", "base_url": chat_backend.url, "model": m} for m in ("bot-v1", "bot-v2")]
    base, adapters = request.getfixturevalue("tiny_adapters")
    # The registry takes a local adapter only from the stack's object store (store:<key>), where training
    # leaves its adapters: the one its services were given (RLHF_OBJECT_STORE_URL; a test module may set
    # it for the whole run), else <data dir>/objects, the services' default.
    stack = request.getfixturevalue("stack")
    store = object_store_from_url(stack.env().get("RLHF_OBJECT_STORE_URL") or (stack.data_dir / "objects").as_uri())
    for k, url in adapters.items():
        shutil.copytree(Path(urlsplit(url).path), store.path(f"adapters/tests-{k}"), dirs_exist_ok=True)
    return [{"kind": "local", "base_model": base, "adapter_url": f"store:adapters/tests-{k}/"} for k in ("a", "b")]


async def test_the_loop_closes_routed_answers_feedback_result_full_deploy_traffic_on_the_winner(
        stack, gateway, kafka, servings, make_key, org):
    admin = await make_key(org, "admin")
    policy = await gateway.put("/api/models/policy", headers=admin, json={"require_evaluation": False})
    assert policy.status_code == 200, policy.text
    versions = []
    for model, serving in zip(("bot-v1", "bot-v2"), servings, strict=True):
        answer = await gateway.post("/api/models", headers=admin, json={
            "name": "support-bot", "model_id": model, "base_model": "tiny-llama", "serving": serving})
        assert answer.status_code == 201, answer.text
        versions.append(answer.json())
    v1, v2 = versions
    assert (await gateway.post(f"/api/models/{v1['id']}/deploy", headers=admin)).status_code == 200

    key = (await make_key(org, "viewer"))["Authorization"].removeprefix("Bearer ")
    client = openai.AsyncOpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0)

    async def answer_for(unit: str):
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="support-bot", messages=[{"role": "user", "content": "Where is my order?"}], user=unit,
                max_tokens=4)
        except openai.NotFoundError:
            return None
        return raw

    local = servings[0]["kind"] == "local"

    def answered_by(raw, version) -> bool:
        content = raw.parse().choices[0].message.content
        if raw.headers["x-rlhf-model-version-id"] != version["id"]:
            return False
        return local or content == f"answer from {version['model_id']}"

    first = await eventually(lambda: answer_for("early-user"))  # ModelDeployed reached the router
    assert answered_by(first, v1)

    async def versions_known():  # ModelRegistered for both reached the experiments service
        answer = await gateway.post("/api/experiments", headers=admin, json={
            "name": "v2 vs v1", "control_model_id": v1["id"], "treatment_model_id": v2["id"],
            "traffic_split": 0.5, "min_sample_size": 50, "success_metrics": [{"name": "thumbs_up_rate"}],
            "guardrails": [{"metric": "error_rate", "max_degradation": 0.1}]})
        return answer.json() if answer.status_code == 201 else None

    experiment = await eventually(versions_known)

    async def routed(unit: str):
        raw = await answer_for(unit)
        return raw if raw is not None and raw.headers.get("x-rlhf-experiment") == experiment["id"] else None

    rng = random.Random(11)
    answered = []
    for i in range(USERS):
        raw = await eventually(lambda i=i: routed(f"user-{i}"))
        variant = raw.headers["x-rlhf-variant"]
        assert answered_by(raw, v2 if variant == "treatment" else v1)
        answered.append((raw.parse().id, variant))
    assert {v for _, v in answered} == {"control", "treatment"}

    async def feedback(response_id: str, thumbs_up: bool):
        answer = await gateway.post("/api/feedback", headers={"Authorization": f"Bearer {key}"}, json={
            "response_id": response_id, "feedback_type": "thumbs_up" if thumbs_up else "thumbs_down"})
        return answer if answer.status_code == 201 else None

    likes = {"control": [], "treatment": []}
    for response_id, variant in answered:  # users like v2's answers more
        liked = rng.random() < (0.9 if variant == "treatment" else 0.3)
        likes[variant].append(liked)
        await eventually(lambda r=response_id, x=liked: feedback(r, x))  # ResponseServed reached feedback

    async def significant():
        results = (await gateway.get(f"/api/experiments/{experiment['id']}", headers=admin)).json()["results"]
        done = results["metrics"][0]["control"]["n"] + results["metrics"][0]["treatment"]["n"] == USERS
        return results if done else None

    results = await eventually(significant)
    for variant, seen in likes.items():  # every thumb counted for the variant that served the answer
        metric = results["metrics"][0][variant]
        assert (metric["n"], metric["mean"]) == (len(seen), pytest.approx(sum(seen) / len(seen))), results
    state = (await gateway.get(f"/api/experiments/{experiment['id']}", headers=admin)).json()
    assert results["metrics"][0]["significant"] and results["recommendation"]["winner"] == "treatment", (
        json.dumps(results["metrics"]) + json.dumps(results["guardrails"]) + str(state["status_reason"]))

    deployed = await gateway.post(f"/api/experiments/{experiment['id']}/full-deploy", headers=admin)
    assert deployed.status_code == 200 and deployed.json()["winner"] == "treatment"

    async def on_the_winner():
        raw = await answer_for(f"later-{rng.random()}")
        return raw if raw and raw.headers["x-rlhf-model-version-id"] == v2["id"] else None

    after = await eventually(on_the_winner)
    assert answered_by(after, v2)
    assert "x-rlhf-experiment" not in after.headers

    records = await kafka.collect(
        [ExperimentStarted.topic(), ExperimentConcluded.topic(), DeploymentRequested.topic(), ModelDeployed.topic(),
         ResponseServed.topic()],
        lambda rs: len(rs) >= 4 + USERS, match=of_org(org))
    by_topic: dict[str, list] = {}
    for record in records:
        by_topic.setdefault(record.topic, []).append(envelope_of(record)["payload"])
    [concluded] = by_topic[ExperimentConcluded.topic()]
    assert concluded["winner"] == "treatment" and concluded["winner_model_id"] == v2["id"]
    [request] = by_topic[DeploymentRequested.topic()]
    assert request["source_experiment_id"] == experiment["id"]
    assert [d["model_version_id"] for d in by_topic[ModelDeployed.topic()]] == [v1["id"], v2["id"]]
    assert by_topic[ModelDeployed.topic()][1]["source_experiment_id"] == experiment["id"]
