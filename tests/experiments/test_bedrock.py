"""Versions served by Bedrock, through the router and the real `openai` SDK: boto3's real
bedrock-runtime client (Converse, ConverseStream) against a local fake of Bedrock Runtime at the
network boundary (tests/fakes/bedrock_runtime_fake.py, checked against botocore's service model).
Answers, streamed or not, carry the model's text and token counts; Bedrock's errors come back in
OpenAI's shape: throttling as 429, a model that is not ready or a server error as 502."""

import json
import uuid

import openai
import pytest

from services.experiments import handlers
from tests.experiments.conftest import deliver, deployed, registered, served_events
from tests.fakes.bedrock_runtime_fake import BedrockRuntimeFake

pytestmark = pytest.mark.asyncio

ASK = [{"role": "system", "content": "Answer briefly."},
       {"role": "user", "content": "How do I reset my password?"}]


@pytest.fixture(scope="module")
def bedrock():
    """The fake, and boto3 pointed at it the way an operator would point it at a VPC endpoint: the
    service-specific endpoint variable boto3 reads (and test credentials to sign with)."""
    fake = BedrockRuntimeFake().start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake.url)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK"):
            env.delenv(name, raising=False)
        yield fake
    fake.stop()
    assert fake.violations == []


async def bedrock_version(db, organization: str, name: str) -> str:
    """`name`'s deployed version, served by a Bedrock custom model (provisioned); its model ARN."""
    arn = f"arn:aws:bedrock:us-east-1:123456789012:provisioned-model/{name}-{uuid.uuid4().hex[:8]}"
    v1 = registered(name, "1.0.0", {"kind": "bedrock", "model_arn": arn, "region": "us-east-1"})
    await deliver(db, organization, handlers.record_registered, v1)
    await deliver(db, organization, handlers.record_deployed, deployed(v1))
    return arn


async def test_a_version_served_by_bedrock_answers_through_converse_streamed_or_not(
        sdk, app, checked, experiments_db, bedrock, org):
    arn = await bedrock_version(experiments_db, org, "claude-bot")
    expected = f"bedrock answer from {arn.rsplit('/', 1)[-1]}"

    raw = await sdk.chat.completions.with_raw_response.create(model="claude-bot", messages=ASK, max_tokens=64,
                                                               temperature=0.2)
    completion = raw.parse()
    assert completion.choices[0].message.content == expected and completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (6, 4)
    assert completion.id.startswith("chatcmpl-rlhf-") and completion.model == "claude-bot"
    assert raw.headers["x-rlhf-model-version"] == "1.0.0" and checked.checked == 1  # OpenAI's contract holds
    sent = bedrock.requests[-1]
    assert (sent["operation"], sent["modelId"]) == ("Converse", arn)
    assert sent["system"] == [{"text": "Answer briefly."}]
    assert sent["messages"] == [{"role": "user", "content": [{"text": "How do I reset my password?"}]}]
    assert sent["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.2}

    stream = await sdk.chat.completions.create(model="claude-bot", messages=ASK, stream=True)
    chunks = [c async for c in stream]
    assert bedrock.requests[-1]["operation"] == "ConverseStream"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 4  # a chunk per delta
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 4)
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-rlhf-")

    await app.state.experiments_batcher.drain()
    events = await served_events(experiments_db, org)
    assert [(e["answer"], e["prompt_tokens"], e["completion_tokens"]) for e in events] == [(expected, 6, 4)] * 2
    assert events[0]["response_id"] == completion.id and events[1]["response_id"] == chunks[0].id


async def test_bedrock_errors_answer_in_openai_shape_with_their_status_class(sdk, app, experiments_db, bedrock, org):
    arn = await bedrock_version(experiments_db, org, "busy-bot")

    bedrock.fail(arn, "ThrottlingException", 429)
    with pytest.raises(openai.RateLimitError) as throttled:
        await sdk.chat.completions.create(model="busy-bot", messages=ASK)
    assert throttled.value.status_code == 429 and "ThrottlingException" in throttled.value.message
    with pytest.raises(openai.RateLimitError):
        await sdk.chat.completions.create(model="busy-bot", messages=ASK, stream=True)

    for error, status in (("ModelNotReadyException", 429), ("InternalServerException", 500),
                          ("ServiceUnavailableException", 503)):
        bedrock.fail(arn, error, status)
        asked = len(bedrock.requests)
        with pytest.raises(openai.InternalServerError) as failed:
            await sdk.chat.completions.create(model="busy-bot", messages=ASK)
        assert failed.value.status_code == 502 and failed.value.code == "backend_error"
        assert len(bedrock.requests) == asked + 1  # boto3 does not retry behind the client's back
        assert error in failed.value.message
        with pytest.raises(openai.InternalServerError) as failed:
            await sdk.chat.completions.create(model="busy-bot", messages=ASK, stream=True)
        assert failed.value.status_code == 502

    bedrock.clear(arn)
    bedrock.fail_mid_stream(arn, "modelStreamErrorException")
    stream = await sdk.chat.completions.create(model="busy-bot", messages=ASK, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="ModelStreamErrorException"):
        async for chunk in stream:
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "bedrock"

    bedrock.clear(arn)
    answer = await sdk.chat.completions.create(model="busy-bot", messages=ASK)
    assert answer.choices[0].message.content.startswith("bedrock answer from busy-bot")
    await app.state.experiments_batcher.drain()
    assert len(await served_events(experiments_db, org)) == 1  # failures are not announced as served answers


async def test_tools_reach_bedrock_and_its_tool_calls_come_back_in_openai_shape_streamed_or_not(
        sdk, checked, experiments_db, bedrock, org):
    arn = await bedrock_version(experiments_db, org, "tool-bot")
    parameters = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
    tools = [{"type": "function", "function": {"name": "lookup_order", "description": "Find an order",
                                               "parameters": parameters}}]
    first = await sdk.chat.completions.create(model="tool-bot", messages=ASK, tools=tools, tool_choice="required")
    [call] = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup_order"
    assert json.loads(call.function.arguments) == {"query": "How do I reset my password?"}
    assert bedrock.requests[-1]["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "lookup_order", "description": "Find an order",
                                "inputSchema": {"json": parameters}}}], "toolChoice": {"any": {}}}

    asked = {"id": call.id, "type": "function",
             "function": {"name": "lookup_order", "arguments": call.function.arguments}}
    follow_up = [*ASK, {"role": "assistant", "content": None, "tool_calls": [asked]},
                 {"role": "tool", "tool_call_id": call.id, "content": "order 42 shipped"}]
    second = await sdk.chat.completions.create(model="tool-bot", messages=follow_up, tools=tools)
    assert second.choices[0].message.content == f"bedrock answer from {arn.rsplit('/', 1)[-1]} using order 42 shipped"
    assert bedrock.requests[-1]["messages"][1:] == [
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": call.id, "name": "lookup_order",
                                                       "input": {"query": "How do I reset my password?"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": call.id,
                                                     "content": [{"text": "order 42 shipped"}]}}]}]
    assert checked.checked == 2

    stream = await sdk.chat.completions.create(model="tool-bot", messages=ASK, tools=tools, stream=True)
    chunks = [c async for c in stream]
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id.startswith("tooluse_") and deltas[0].function.name == "lookup_order"
    assert {d.index for d in deltas} == {0} and len(deltas) == 3  # the start, then the arguments in two pieces
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"query": "How do I reset my password?"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
