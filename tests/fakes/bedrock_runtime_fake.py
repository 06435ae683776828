"""A local stand-in for Amazon Bedrock Runtime's Converse API, at the network boundary: boto3's
real `bedrock-runtime` client talks to it over HTTP (point it here with `endpoint_url` or
AWS_ENDPOINT_URL_BEDROCK_RUNTIME). moto does not implement Converse.

- `POST /model/{modelId}/converse`: a JSON answer (ConverseResponse).
- `POST /model/{modelId}/converse-stream`: the answer as AWS event-stream messages
  (application/vnd.amazon.eventstream), which botocore decodes: messageStart, a contentBlockDelta
  per word, contentBlockStop, messageStop, metadata (usage and latency).

The answer is "bedrock answer from <the model id's last path segment>", so a test sees which
version served it ("... using <result>" after a tool result); offered tools, it first calls the
first one with the last user text as `query` (stopReason tool_use). Usage counts words.

Every request is checked against botocore's own service model (the operation's input shape, with
ParamValidator) and so is every answer and event the fake sends; what does not fit is kept in
`violations` (a request that does not fit is answered with a ValidationException, as Bedrock would).
Requests must be SigV4-signed.

`fail(model_id, error, status)` answers that model's requests with a Bedrock error (rest-json: the
status, `x-amzn-ErrorType`, `{"message": ...}`) until `clear(model_id)`; `fail_mid_stream(model_id,
error)` sends one delta and then that exception event in the stream."""

import binascii
import struct
import time
import uuid
from typing import Any

import botocore.session
import orjson
from botocore.validate import ParamValidator
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from tests.fakes.server import ThreadedServer

_SERVICE = botocore.session.get_session().get_service_model("bedrock-runtime")
EVENTSTREAM = "application/vnd.amazon.eventstream"


def _header(name: str, value: str) -> bytes:
    """One event-stream header with a string value (type 7): name length (1 byte), name, type,
    value length (2 bytes, big-endian), value."""
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", 7, len(raw_value)) + raw_value


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: a prelude (total length, headers length, both 4-byte big-endian,
    and the CRC32 of those 8 bytes), the headers, the payload, and the CRC32 of everything before it
    (botocore/eventstream.py checks both)."""
    raw_headers = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    return encode_message({":event-type": event_type, ":content-type": "application/json",
                           ":message-type": "event"}, orjson.dumps(payload))


def exception_event(exception_type: str, message: str) -> bytes:
    return encode_message({":exception-type": exception_type, ":content-type": "application/json",
                           ":message-type": "exception"}, orjson.dumps({"message": message}))


class BedrockRuntimeFake:
    def __init__(self):
        self.requests: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.failures: dict[str, tuple[str, int]] = {}
        self.mid_stream_failures: dict[str, str] = {}
        self._server = ThreadedServer(self._app())
        self.url = f"http://127.0.0.1:{self._server.port}"

    def start(self) -> "BedrockRuntimeFake":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def fail(self, model_id: str, error: str, status: int) -> None:
        self.failures[model_id] = (error, status)

    def fail_mid_stream(self, model_id: str, exception_member: str) -> None:
        """`exception_member` as ConverseStreamOutput names it, e.g. modelStreamErrorException."""
        self.mid_stream_failures[model_id] = exception_member

    def clear(self, model_id: str) -> None:
        self.failures.pop(model_id, None)
        self.mid_stream_failures.pop(model_id, None)

    # -- checks against botocore's service model -----------------------------------------------
    def _check(self, what: str, params: dict[str, Any], shape) -> bool:
        report = ParamValidator().validate(params, shape)
        if report.has_errors():
            self.violations.append(f"{what}: {report.generate_report()}")
            return False
        return True

    def _check_event(self, event_type: str, payload: dict[str, Any]) -> None:
        stream_shape = _SERVICE.operation_model("ConverseStream").output_shape.members["stream"]
        self._check(f"ConverseStream event {event_type}", payload, stream_shape.members[event_type])

    @staticmethod
    def _error(error: str, status: int, message: str) -> Response:
        return Response(orjson.dumps({"message": message}), status_code=status, media_type="application/json",
                        headers={"x-amzn-ErrorType": f"{error}:http://internal.amazon.com/coral/com.amazon.bedrock/"})

    def _answer(self, model_id: str, body: dict[str, Any]) -> tuple[str, dict[str, Any] | None, int]:
        """The text, the tool call (with tools offered and no tool result yet: the first tool, asked
        with the last user text as `query`) and the prompt's length in words."""
        text = f"bedrock answer from {model_id.rsplit('/', 1)[-1]}"
        last = (body.get("messages") or [{}])[-1].get("content", [])
        results = [c["text"] for b in last if "toolResult" in b for c in b["toolResult"]["content"] if "text" in c]
        tools = (body.get("toolConfig") or {}).get("tools") or []
        call = None
        if results:
            text += " using " + " ".join(results)
        elif tools:
            query = " ".join(b["text"] for b in last if "text" in b)
            call = {"toolUseId": f"tooluse_{uuid.uuid4().hex[:12]}", "name": tools[0]["toolSpec"]["name"],
                    "input": {"query": query}}
        prompt_words = sum(len(str(block.get("text", "")).split()) for m in body.get("messages", [])
                           for block in m.get("content", []))
        return text, call, prompt_words

    def _app(self) -> FastAPI:
        app = FastAPI()

        async def received(operation: str, model_id: str, request: Request) -> tuple[dict, Response | None]:
            body = orjson.loads(await request.body() or b"{}")
            self.requests.append({"operation": operation, "modelId": model_id, **body})
            if not request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
                self.violations.append(f"{operation}: the request is not SigV4-signed")
                return body, self._error("AccessDeniedException", 403, "missing authentication token")
            if not self._check(f"{operation} request", {"modelId": model_id, **body},
                               _SERVICE.operation_model(operation).input_shape):
                return body, self._error("ValidationException", 400, "the request does not fit ConverseRequest")
            if model_id in self.failures:
                error, status = self.failures[model_id]
                return body, self._error(error, status, f"{error} from the fake")
            return body, None

        @app.post("/model/{model_id:path}/converse")
        async def converse(model_id: str, request: Request):
            body, refusal = await received("Converse", model_id, request)
            if refusal is not None:
                return refusal
            text, call, prompt = self._answer(model_id, body)
            completion = len(text.split())
            content = [{"text": text}] if call is None else [{"toolUse": call}]
            answer = {"output": {"message": {"role": "assistant", "content": content}},
                      "stopReason": "end_turn" if call is None else "tool_use",
                      "usage": {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion},
                      "metrics": {"latencyMs": 1}}
            self._check("Converse answer", answer, _SERVICE.operation_model("Converse").output_shape)
            return Response(orjson.dumps(answer), media_type="application/json")

        @app.post("/model/{model_id:path}/converse-stream")
        async def converse_stream(model_id: str, request: Request):
            body, refusal = await received("ConverseStream", model_id, request)
            if refusal is not None:
                return refusal
            text, call, prompt = self._answer(model_id, body)
            words = text.split(" ")
            failure = self.mid_stream_failures.get(model_id)
            started = time.monotonic()

            def events():
                def sent(event_type: str, payload: dict[str, Any]) -> bytes:
                    self._check_event(event_type, payload)
                    return event(event_type, payload)

                yield sent("messageStart", {"role": "assistant"})
                if call is not None:  # the arguments' JSON in two pieces, as models stream it
                    arguments = orjson.dumps(call["input"]).decode()
                    yield sent("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {
                        "toolUseId": call["toolUseId"], "name": call["name"]}}})
                    for piece in (arguments[:5], arguments[5:]):
                        yield sent("contentBlockDelta", {"contentBlockIndex": 0,
                                                         "delta": {"toolUse": {"input": piece}}})
                    yield sent("contentBlockStop", {"contentBlockIndex": 0})
                    yield sent("messageStop", {"stopReason": "tool_use"})
                    usage = {"inputTokens": prompt, "outputTokens": 1, "totalTokens": prompt + 1}
                    yield sent("metadata", {"usage": usage, "metrics": {"latencyMs": 1}})
                    return
                for i, word in enumerate(words):
                    yield sent("contentBlockDelta", {"contentBlockIndex": 0,
                                                     "delta": {"text": word if i == 0 else " " + word}})
                    if failure:
                        yield exception_event(failure, f"{failure} from the fake")
                        return
                yield sent("contentBlockStop", {"contentBlockIndex": 0})
                yield sent("messageStop", {"stopReason": "end_turn"})
                yield sent("metadata", {"usage": {"inputTokens": prompt, "outputTokens": len(words),
                                                  "totalTokens": prompt + len(words)},
                                        "metrics": {"latencyMs": int((time.monotonic() - started) * 1000)}})

            return StreamingResponse(events(), media_type=EVENTSTREAM)

        return app
