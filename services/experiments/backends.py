"""Calling a model version the way its `serving` says: OpenAI and OpenAI-compatible servers (vLLM,
TGI, Ollama) through the `openai` SDK with base_url, Bedrock through boto3's Converse and
ConverseStream APIs, local versions (base model + LoRA adapter) with transformers + peft, a few
loaded at a time.

Every backend answers in OpenAI's chat-completion shape (a dict) or as a stream of OpenAI chunks;
failures are BackendError with the HTTP status class the client should see."""

import asyncio
import hashlib
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import openai
import orjson


class BackendError(Exception):
    def __init__(self, status: int, message: str, code: str = "backend_error"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@lru_cache(maxsize=64)
def _openai_client(loop: asyncio.AbstractEventLoop, base_url: str | None, api_key: str) -> openai.AsyncOpenAI:
    # The SDK's aiohttp transport (its `aiohttp` extra): httpx's default pool checks every idle
    # connection on each request, the largest cost in a profile of the router under load. A
    # client's connections belong to one event loop, hence the loop in the key.
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120,
                              http_client=openai.DefaultAioHttpClient(timeout=120))


def openai_client(serving: dict[str, Any]) -> openai.AsyncOpenAI:
    key_env = serving.get("api_key_env") or ("OPENAI_API_KEY" if serving["kind"] == "openai" else None)
    api_key = os.environ.get(key_env, "") if key_env else ""
    if serving["kind"] == "openai":
        if not api_key:
            raise BackendError(502, f"no API key for OpenAI: {key_env} is not set", "backend_not_configured")
        base_url = serving.get("base_url") or os.environ.get("RLHF_OPENAI_BASE_URL") or None
    else:
        base_url = serving.get("base_url")
        if not base_url:
            raise BackendError(502, "the version's serving names no base_url", "backend_not_configured")
    return _openai_client(asyncio.get_running_loop(), base_url, api_key or "unused")


def _status_of(exc: openai.APIError) -> BackendError:
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code if 400 <= exc.status_code < 500 and exc.status_code not in (401, 403) else 502
        return BackendError(status, f"backend answered {exc.status_code}: {exc.message}", "backend_error")
    return BackendError(502, f"backend unreachable: {exc}", "backend_unavailable")


async def complete(serving: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """One chat completion (not streamed) in OpenAI's shape."""
    kind = serving.get("kind")
    if kind in ("openai", "openai_compatible"):
        client = openai_client(serving)
        request = {k: v for k, v in body.items() if k != "stream"} | {"model": serving["model"]}
        try:
            # The body as the client sent it, through the SDK's transport (its base URL, key, errors),
            # without its per-field request transform (~2 ms of CPU a call, the router's largest cost
            # in a profile; the body is plain JSON already) or its parsing of the answer into models.
            raw = await client.post("/chat/completions", body=request, cast_to=httpx.Response)
        except openai.APIError as exc:
            raise _status_of(exc) from exc
        try:
            return orjson.loads(raw.content)
        except orjson.JSONDecodeError as exc:
            raise BackendError(502, "the backend's answer is not JSON") from exc
    if kind == "bedrock":
        return await _bedrock_complete(serving, body)
    if kind == "local":
        return await asyncio.to_thread(LOCAL.complete, serving, body)
    raise BackendError(502, f"unknown serving kind {kind!r}", "backend_not_configured")


async def stream(serving: dict[str, Any], body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """A streamed chat completion as OpenAI chunks: OpenAI-compatible servers and Bedrock
    (ConverseStream) stream natively; local versions answer in one content chunk and a final one
    with the finish reason."""
    kind = serving.get("kind")
    if kind in ("openai", "openai_compatible"):
        client = openai_client(serving)
        params = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        try:
            chunks = await client.chat.completions.create(model=serving["model"], messages=body["messages"],
                                                          stream=True, extra_body=params)
            async for chunk in chunks:
                yield chunk.model_dump(exclude_unset=True)
        except openai.APIError as exc:
            raise _status_of(exc) from exc
        return
    if kind == "bedrock":
        async for chunk in _bedrock_stream(serving, body):
            yield chunk
        return
    whole = await complete(serving, body)
    choice = whole["choices"][0]
    base = {"id": whole["id"], "object": "chat.completion.chunk", "created": whole["created"], "model": whole["model"]}
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": choice["message"]["content"]},
                                "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason", "stop")}],
           **({"usage": whole["usage"]} if "usage" in whole else {})}


def _completion(model: str, text: str, prompt_tokens: int, completion_tokens: int,
                finish_reason: str = "stop") -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


# Bedrock: boto3's Converse and ConverseStream (one request shape for every Bedrock chat model),
# on a pool of their own threads (boto3 blocks), with no retries of boto3's own: as for OpenAI
# backends, the client decides whether to try again.
_BEDROCK_POOL = ThreadPoolExecutor(max_workers=int(os.environ.get("RLHF_BEDROCK_THREADS", "32")),
                                   thread_name_prefix="bedrock")
_BEDROCK_CLIENTS_LOCK = threading.Lock()
_BEDROCK_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                 "content_filtered": "content_filter", "guardrail_intervened": "content_filter"}
# Errors the caller can act on keep their status (slow down, fix the request); everything else is
# the backend's trouble (a model not ready or timing out, access, a missing model, a 5xx): 502.
_BEDROCK_CALLER_ERRORS = {"ThrottlingException": 429, "ValidationException": 400}


@lru_cache(maxsize=16)
def _bedrock_client_for(region: str | None, endpoint_url: str | None):
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=10, read_timeout=120,
                    max_pool_connections=64)
    return boto3.client("bedrock-runtime", region_name=region, endpoint_url=endpoint_url, config=config)


def bedrock_client(serving: dict[str, Any]):
    """A bedrock-runtime client for the serving's region (else AWS_REGION / AWS_DEFAULT_REGION), at
    AWS_ENDPOINT_URL_BEDROCK_RUNTIME (or AWS_ENDPOINT_URL) when set, as boto3 itself reads them;
    one per region and endpoint, shared by threads (boto3 clients are thread-safe once made)."""
    region = serving.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_BEDROCK_RUNTIME") or os.environ.get("AWS_ENDPOINT_URL") or None
    with _BEDROCK_CLIENTS_LOCK:  # making a client is not thread-safe
        return _bedrock_client_for(region, endpoint)


def _text_of(content: Any) -> str:
    """An OpenAI message's content as text: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _turn_content(m: dict[str, Any]) -> list[dict[str, Any]]:
    """An OpenAI message's content as Converse blocks: its text (if any), an assistant's tool calls
    as toolUse blocks, a tool message as a toolResult block."""
    if m.get("role") == "tool":
        return [{"toolResult": {"toolUseId": m.get("tool_call_id") or "", "content": [{"text": _text_of(
            m.get("content"))}]}}]
    text = _text_of(m.get("content"))
    blocks: list[dict[str, Any]] = [{"text": text}] if text else []
    for call in m.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError as exc:
            raise BackendError(400, f"tool call {call.get('id')}'s arguments are not JSON", "invalid_request") from exc
        blocks.append({"toolUse": {"toolUseId": call.get("id") or "", "name": function.get("name") or "",
                                   "input": arguments}})
    return blocks


def _tool_config(body: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's function tools and tool_choice as Converse's toolConfig (tool_choice "none": no tools)."""
    tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function" and t.get("function")]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    specs = [{"toolSpec": {"name": f["name"], "inputSchema": {"json": f.get("parameters") or {"type": "object"}},
                           **({"description": f["description"]} if f.get("description") else {})}} for f in tools]
    config: dict[str, Any] = {"tools": specs}
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        config["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    return config


def _converse_request(serving: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as Converse's: system (and developer) messages as `system`; user,
    assistant and tool messages as turns (tool results are the user's turn, and consecutive turns
    of one role are merged, as Converse wants roles to alternate); max_tokens / temperature / top_p
    / stop as `inferenceConfig`; function tools and tool_choice as `toolConfig`."""
    messages = body["messages"]
    system = [{"text": _text_of(m.get("content"))} for m in messages if m.get("role") in ("system", "developer")]
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.get("role") not in ("user", "assistant", "tool"):
            continue
        role = "assistant" if m["role"] == "assistant" else "user"
        content = _turn_content(m)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(content)
        else:
            turns.append({"role": role, "content": content})
    stop = body.get("stop")
    config = {k: v for k, v in (("maxTokens", body.get("max_completion_tokens") or body.get("max_tokens")),
                                ("temperature", body.get("temperature")), ("topP", body.get("top_p")),
                                ("stopSequences", [stop] if isinstance(stop, str) else stop)) if v is not None}
    tools = _tool_config(body)
    return {"modelId": serving["model_arn"], "messages": turns, **({"system": system} if system else {}),
            **({"inferenceConfig": config} if config else {}), **({"toolConfig": tools} if tools else {})}


def _bedrock_error(exc: Exception) -> BackendError:
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        code = code[:1].upper() + code[1:]  # errors inside a stream are named as members: throttlingException
        return BackendError(_BEDROCK_CALLER_ERRORS.get(code, 502),
                            f"bedrock answered {code}: {error.get('Message', '')}", "backend_error")
    return BackendError(502, f"bedrock unreachable: {exc}", "backend_unavailable")


async def _on_bedrock_thread(fn, *args):
    import botocore.exceptions

    try:
        return await asyncio.get_running_loop().run_in_executor(_BEDROCK_POOL, fn, *args)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise _bedrock_error(exc) from exc


async def _bedrock_complete(serving: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    client = bedrock_client(serving)
    request = _converse_request(serving, body)
    answer = await _on_bedrock_thread(lambda: client.converse(**request))
    blocks = answer["output"]["message"]["content"]
    text = "".join(block.get("text", "") for block in blocks)
    usage = answer.get("usage", {})
    completion = _completion(serving["model_arn"], text, usage.get("inputTokens", 0), usage.get("outputTokens", 0),
                             _BEDROCK_STOP.get(answer.get("stopReason"), "stop"))
    calls = [{"id": b["toolUse"]["toolUseId"], "type": "function",
              "function": {"name": b["toolUse"]["name"], "arguments": orjson.dumps(b["toolUse"]["input"]).decode()}}
             for b in blocks if "toolUse" in b]
    if calls:
        message = completion["choices"][0]["message"]
        message["tool_calls"] = calls
        message["content"] = text or None
    return completion


async def _bedrock_stream(serving: dict[str, Any], body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """ConverseStream's events as OpenAI chunks: a first chunk with the role, one per text delta, a
    tool call's start (id and name) and each piece of its arguments as `tool_calls` deltas, and a
    last chunk with the finish reason and the usage from the metadata event."""
    client = bedrock_client(serving)
    request = _converse_request(serving, body)
    response = await _on_bedrock_thread(lambda: client.converse_stream(**request))
    events = iter(response["stream"])
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": serving["model_arn"]}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    finish, usage = "stop", None
    calls: dict[int, int] = {}  # content block -> the index of its tool call
    try:
        while (event := await _on_bedrock_thread(next, events, None)) is not None:
            if "messageStart" in event:
                yield chunk({"role": "assistant", "content": ""})
            elif "contentBlockStart" in event and "toolUse" in event["contentBlockStart"].get("start", {}):
                tool = event["contentBlockStart"]["start"]["toolUse"]
                index = calls.setdefault(event["contentBlockStart"]["contentBlockIndex"], len(calls))
                yield chunk({"tool_calls": [{"index": index, "id": tool["toolUseId"], "type": "function",
                                             "function": {"name": tool["name"], "arguments": ""}}]})
            elif "contentBlockDelta" in event:
                delta = event["contentBlockDelta"].get("delta", {})
                block = event["contentBlockDelta"].get("contentBlockIndex")
                if delta.get("text"):
                    yield chunk({"content": delta["text"]})
                elif "toolUse" in delta and block in calls:
                    yield chunk({"tool_calls": [{"index": calls[block],
                                                 "function": {"arguments": delta["toolUse"].get("input", "")}}]})
            elif "messageStop" in event:
                finish = _BEDROCK_STOP.get(event["messageStop"].get("stopReason"), "stop")
            elif "metadata" in event:
                tokens = event["metadata"].get("usage", {})
                usage = {"prompt_tokens": tokens.get("inputTokens", 0),
                         "completion_tokens": tokens.get("outputTokens", 0),
                         "total_tokens": tokens.get("totalTokens", 0)}
        yield {**chunk({}, finish), **({"usage": usage} if usage else {})}
    finally:
        response["stream"].close()


def _adapter_dir(url: str) -> str:
    """A local directory holding the adapter: file:// URLs as they are; s3:// prefixes downloaded
    once into the cache directory."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return unquote(parts.path)
    if parts.scheme == "s3":
        import boto3

        dest = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rlhf" / "adapters" / \
            hashlib.sha256(url.encode()).hexdigest()[:16]
        if not dest.exists():
            client, prefix = boto3.client("s3"), parts.path.lstrip("/")
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=parts.netloc, Prefix=prefix):
                for obj in page.get("Contents", []):
                    target = dest / obj["Key"][len(prefix):].lstrip("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(parts.netloc, obj["Key"], str(target))
        return str(dest)
    raise BackendError(502, f"cannot load an adapter from {url}", "backend_not_configured")


class LocalModels:
    """Base model + LoRA adapter from the object store, loaded once per process; the `size` most
    recently used stay in memory. Generation runs on CPU (or GPU when torch sees one)."""

    def __init__(self, size: int = 2):
        self.size = size
        self._loaded: OrderedDict[tuple[str, str], tuple[Any, Any]] = OrderedDict()

    def _load(self, serving: dict[str, Any]):
        key = (serving["base_model"], serving["adapter_url"])
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        try:
            from peft import PeftModel
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise BackendError(502, "local serving needs the train extra (transformers, peft)",
                               "backend_not_configured") from exc
        from shared.local_models import model_to_load
        from shared.settings import get_settings

        adapter_dir = _adapter_dir(serving["adapter_url"])
        base = model_to_load(serving["base_model"], get_settings().models_dir())  # a name under RLHF_MODELS_DIR
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir if os.path.exists(
            os.path.join(adapter_dir, "tokenizer_config.json")) else base)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_dir).eval()
        self._loaded[key] = (tokenizer, model)
        while len(self._loaded) > self.size:
            self._loaded.popitem(last=False)
        return tokenizer, model

    def complete(self, serving: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        import torch

        tokenizer, model = self._load(serving)
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in body["messages"]) + "\nassistant:"
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=int(body.get("max_tokens") or 32), do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        new = out[0][inputs["input_ids"].shape[1]:]
        text = tokenizer.decode(new, skip_special_tokens=True)
        return _completion(serving["base_model"], text, int(inputs["input_ids"].shape[1]), int(new.shape[0]))


LOCAL = LocalModels(size=int(os.environ.get("RLHF_LOCAL_MODELS_LOADED", "2")))
