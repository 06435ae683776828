"""A local OpenAI-compatible chat server, as vLLM or Ollama would be: answers `POST
/v1/chat/completions` (streamed or not) with a text naming the model it was asked for, so a test
sees which version served it. `down` makes it answer 503 (a backend in trouble). Every request the
router sends it, and every answer it gives, is checked against OpenAI's OpenAPI contract (the same
checker as tests/fakes/openai_fake.py); what fails is kept in `violations`."""

import json
import time
import uuid
from typing import Any

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from openapi_core import Config, OpenAPI

from tests.fakes.openai_fake import _openapi_30_idioms_as_31, checked_by_contract, contract_path
from tests.fakes.server import ThreadedServer

_CONTRACT: dict = {}


def _without_implicit_discriminators(node: Any) -> Any:
    """A discriminator without a mapping names its schemas by the property's value (`role: user` ->
    #/components/schemas/user), which the document does not define; `oneOf` alone still checks."""
    if isinstance(node, list):
        return [_without_implicit_discriminators(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _without_implicit_discriminators(v) for k, v in node.items()}
    if isinstance(out.get("discriminator"), dict) and "mapping" not in out["discriminator"]:
        out.pop("discriminator")
    return out


def load_contract(base_url: str) -> OpenAPI:
    """OpenAI's OpenAPI document as tests/fakes/openai_fake.py reads it, for chat completions."""
    if not _CONTRACT:
        with open(contract_path()) as src:
            _CONTRACT["spec"] = _without_implicit_discriminators(
                _openapi_30_idioms_as_31(yaml.load(src, Loader=yaml.CSafeLoader)))
    return OpenAPI.from_dict(dict(_CONTRACT["spec"], servers=[{"url": base_url}]),
                             config=Config(spec_validator_cls=None))


class ChatFake:
    def __init__(self):
        self._server = ThreadedServer(self._app())
        self.port = self._server.port
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.down = False
        self.requests: list[dict] = []
        self.violations: list[str] = []
        self.contract = load_contract(self.url)

    def start(self) -> "ChatFake":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def validate(request: Request, call_next):
            return await checked_by_contract(self.contract, self.violations, request, call_next, refuse_invalid=False)

        @app.post("/v1/chat/completions")
        async def completions(request: Request):
            body = await request.json()
            self.requests.append(body)
            if self.down:
                return JSONResponse({"error": {"message": "overloaded", "type": "server_error", "param": None,
                                               "code": None}}, status_code=503)
            text = f"answer from {body['model']}"
            ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
            usage = {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
            if body.get("stream"):
                def events():
                    base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": body["model"]}
                    def chunk(delta, finish_reason=None):
                        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
                        return f"data: {json.dumps(base | {'choices': [choice]})}\n\n"

                    for i, word in enumerate(text.split(" ")):
                        yield chunk({"role": "assistant", "content": word} if i == 0 else {"content": " " + word})
                    yield chunk({}, "stop")
                    yield "data: [DONE]\n\n"

                return StreamingResponse(events(), media_type="text/event-stream")
            return {"id": ident, "object": "chat.completion", "created": created, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                                 "logprobs": None, "finish_reason": "stop"}],
                    "usage": usage}

        return app
