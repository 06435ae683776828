"""The OpenAI-compatible router (/v1): `POST /v1/chat/completions` with `model` set to a registry
name, `GET /v1/models`. Any OpenAI client works with base_url = <gateway>/v1 and an RLHF API key.

The caller's unit is the request's `user` field, else the `X-RLHF-Unit` header, else random. Every
answer gets our response id (OpenAI's `id`), headers naming experiment, variant and version, and
`x-rlhf-overhead-ms` (time in the router, the backend's excluded; for a stream, until the backend
call starts). Answers are announced as ResponseServed and exposures written in batches, never a
database write per request. Errors have OpenAI's shape: 404 for an unknown model, 502 for a backend
that is down (counted as an error outcome for the guardrails)."""

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from services.experiments import backends, handlers, repository, routing
from services.experiments.api import Batch, Routes
from shared.events import ResponseServed
from shared.http import DB, ErrorBody, ServiceRoute, Viewer

router = APIRouter(prefix="/v1", tags=["openai-compatible router"], route_class=ServiceRoute)


class ORJSONAnswer(JSONResponse):
    def render(self, content) -> bytes:
        return orjson.dumps(content)

UNIT_HEADER = "x-rlhf-unit"
MAX_LOGGED_CHARS = 100_000


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(BaseModel):
    """How the router answers its own errors: OpenAI's shape, which OpenAI clients understand."""

    error: OpenAIErrorDetail


OPENAI_ERRORS = {
    400: {"model": OpenAIError, "description": "the body is not JSON, or has no model (a string) and messages"},
    404: {"model": OpenAIError, "description": "no model of that name, or none of its versions deployed"},
    # The backend's own refusals are passed on in OpenAI's shape; a key's failed authentications are ours.
    429: {"model": OpenAIError | ErrorBody, "description": "the backend is throttling, or too many failed "
                                                           "authentications from this address"},
    502: {"model": OpenAIError, "description": "the version's backend is down, unreachable or not configured"},
}


def openai_error(status: int, message: str, *, type_: str, code: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status)


def _backend_error(exc: backends.BackendError) -> JSONResponse:
    return openai_error(exc.status, exc.message, code=exc.code,
                        type_="api_error" if exc.status >= 500 else "invalid_request_error")


def _headers(name: str, choice: routing.Choice, response_id: str, overhead_ms: float) -> dict[str, str]:
    headers = {"x-rlhf-response-id": response_id, "x-rlhf-model": name,
               "x-rlhf-model-version": choice.target.version,
               "x-rlhf-model-version-id": str(choice.target.version_id),
               "x-rlhf-overhead-ms": f"{overhead_ms:.3f}"}
    if choice.experiment_id:
        headers |= {"x-rlhf-experiment": str(choice.experiment_id), "x-rlhf-variant": choice.variant or ""}
    return headers


def _cost(serving: dict[str, Any], prompt: int | None, completion: int | None) -> float | None:
    """Estimated from the serving's optional prices per 1,000 tokens."""
    price_in, price_out = serving.get("price_per_1k_prompt_tokens"), serving.get("price_per_1k_completion_tokens")
    if price_in is None and price_out is None:
        return None
    return ((prompt or 0) * (price_in or 0) + (completion or 0) * (price_out or 0)) / 1000


def _served(organization: str, name: str, choice: routing.Choice, unit: str, response_id: str, body: dict,
            latency_ms: float, usage: dict | None, answer: str | None, error: str | None) -> handlers.Served:
    prompt, completion = (usage or {}).get("prompt_tokens"), (usage or {}).get("completion_tokens")
    event = ResponseServed(
        response_id=response_id, model_name=name, model_version_id=choice.target.version_id,
        model_version=choice.target.version, experiment_id=choice.experiment_id, variant=choice.variant, unit=unit,
        latency_ms=max(0, round(latency_ms)), prompt_tokens=prompt, completion_tokens=completion,
        estimated_cost=_cost(choice.target.serving, prompt, completion),
        messages=body.get("messages", []) if len(orjson.dumps(body.get("messages", []))) <= MAX_LOGGED_CHARS else [],
        answer=(answer or "")[:MAX_LOGGED_CHARS] if error is None else None, error=error,
        served_at=datetime.now(UTC))
    return handlers.Served(organization, event, error=error is not None)


@router.get("/models")
async def list_models(principal: Viewer, database: DB):
    async with database.read() as session:
        names = await repository.model_names(session, principal.organization)
    return {"object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": principal.organization} for n in names]}


@router.post("/chat/completions", responses=OPENAI_ERRORS)
async def chat_completions(request: Request, principal: Viewer, cache: Routes, batch: Batch):
    started = time.perf_counter()
    try:
        body = await request.json()
    except ValueError:
        return openai_error(400, "the body is not JSON", type_="invalid_request_error", code="invalid_json")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not isinstance(
            body.get("messages"), list):
        return openai_error(400, "model (a string) and messages (a list) are required",
                            type_="invalid_request_error", code="invalid_request", param="model")
    name = body["model"]
    unit = str(body.get("user") or request.headers.get(UNIT_HEADER) or uuid.uuid4())
    route = await cache.get(principal.organization, name)
    choice = routing.choose(route, unit) if route else None
    if choice is None:
        return openai_error(404, f"The model `{name}` does not exist or has no deployed version",
                            type_="invalid_request_error", code="model_not_found", param="model")
    response_id = f"chatcmpl-rlhf-{uuid.uuid4().hex}"
    organization = principal.organization
    if body.get("stream"):
        return await _stream(name, body, choice, unit, response_id, organization, batch, started)

    before_backend = time.perf_counter()
    try:
        completion = await backends.complete(choice.target.serving, body)
    except backends.BackendError as exc:
        latency = (time.perf_counter() - before_backend) * 1000
        batch.served(_served(organization, name, choice, unit, response_id, body, latency, None, None, exc.message))
        return _backend_error(exc)
    backend_ms = (time.perf_counter() - before_backend) * 1000
    completion["id"], completion["model"] = response_id, name
    message = (completion.get("choices") or [{}])[0].get("message") or {}
    batch.served(_served(organization, name, choice, unit, response_id, body, backend_ms, completion.get("usage"),
                         message.get("content"), None))
    overhead = (time.perf_counter() - started) * 1000 - backend_ms
    return ORJSONAnswer(completion, headers=_headers(name, choice, response_id, overhead))


async def _stream(name: str, body: dict, choice: routing.Choice, unit: str, response_id: str, organization: str,
                  batch, started: float):
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. The first chunk is
    awaited before the response starts, so a backend that is down still answers a plain 502."""
    before_backend = time.perf_counter()
    chunks = backends.stream(choice.target.serving, body).__aiter__()
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = None
    except backends.BackendError as exc:
        latency = (time.perf_counter() - before_backend) * 1000
        batch.served(_served(organization, name, choice, unit, response_id, body, latency, None, None, exc.message))
        return _backend_error(exc)
    overhead = (before_backend - started) * 1000

    async def events():
        parts: list[str] = []
        usage = None
        error = None
        try:
            chunk = first
            while chunk is not None:
                chunk["id"], chunk["model"] = response_id, name
                for c in chunk.get("choices") or []:
                    parts.append((c.get("delta") or {}).get("content") or "")
                usage = chunk.get("usage") or usage
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
                chunk = await anext(chunks, None)
            yield b"data: [DONE]\n\n"
        except backends.BackendError as exc:
            error = exc.message
            error_body = {"error": {"message": exc.message, "type": "api_error", "code": exc.code}}
            yield b"data: " + orjson.dumps(error_body) + b"\n\n"
        finally:
            latency = (time.perf_counter() - before_backend) * 1000
            batch.served(_served(organization, name, choice, unit, response_id, body, latency, usage,
                                 "".join(parts), error))

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers=_headers(name, choice, response_id, overhead) | {"cache-control": "no-cache"})
