"""Input that parses but that PostgreSQL, the event encoder or a consumer cannot hold, refused at
the door with a 422 naming the field, in every service, before a route sees it:

- a NUL character in any string (PostgreSQL text and JSONB refuse it), in a body or a query parameter;
- a lone surrogate (`"\\ud800"`: not encodable as UTF-8);
- `NaN` / `Infinity` (not JSON; Python's parser takes them, JSONB and the outbox cannot);
- integers beyond 64 bits (JSONB takes them, the event encoder does not);
- nesting deeper than MAX_DEPTH (free-form fields such as `feedback_value` would carry it everywhere).

Malformed JSON is left to FastAPI, which answers its usual 422. The checks cost one C parse, two
byte scans and a walk of the body's objects and arrays (the walk of every value, naming its path,
only when a scan finds a NUL escape or a long run of digits, or the nesting is too deep).
Field-specific ranges stay with each field's schema, helped by the types below
(`StorableDatetime`: a moment that exists in UTC, as PostgreSQL's timestamptz needs).
"""

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from pydantic import AfterValidator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_DEPTH = 32
MAX_INT = 2**63 - 1
# Every digit as "0", so that 19 digits in a row (an integer beyond 64 bits, or a long fraction) are
# one substring search: the regex \d{19,} took 8 ms over a 1,000-item batch body, this 0.5 ms.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19
_NUL_ESCAPE = b"\\u0000"  # how JSON writes a NUL character (a raw one is not JSON)
_BODY_METHODS = {"POST", "PUT", "PATCH"}
# Where the guard leaves a JSON body it parsed (and found storable), in the request's scope, for the
# route (shared.http.ServiceRoute) to use instead of parsing it a second time with the stdlib.
PARSED_BODY = "rlhf.parsed_json_body"
NOT_PARSED = object()


def in_utc(value: datetime) -> datetime:
    """`value` as a UTC moment; ValueError for one that has none (9999-12-31T23:59:59-14:00 is in year
    10000 in UTC, 0001-01-01T00:00:00+14:00 before year 1)."""
    try:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError("is outside the dates that can be stored (years 1 to 9999 in UTC)") from None


StorableDatetime = Annotated[datetime, AfterValidator(in_utc)]


class InputGuardMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = query_problem(scope.get("query_string", b""))
        if "\x00" in scope.get("path", ""):
            problem = ("path", "the path holds a NUL character")
        if problem is None and scope["method"] in _BODY_METHODS and _is_json(scope):
            body, more = await _read_body(receive)
            problem, doc = check_json(body)
            if doc is not NOT_PARSED and not more:
                scope[PARSED_BODY] = doc  # the route takes it from here instead of parsing the body again
            receive = _replay(body, more, receive)
        if problem is None:
            return await self.app(scope, receive, send)
        await _refuse(send, *problem)


def query_problem(query_string: bytes) -> tuple[str, str] | None:
    if b"%00" not in query_string and b"%ED" not in query_string.upper():
        return None
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, errors="surrogateescape"):
        if "\x00" in value or "\x00" in name:
            return f"query.{name}", "holds a NUL character"
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"query.{name}", "is not valid UTF-8"
    return None


def check_json(body: bytes) -> tuple[tuple[str, str] | None, Any]:
    """(field path, message) of the first thing in a JSON body that cannot be stored, or None; and
    the body as parsed (what `json.loads` gives; NOT_PARSED when the body is empty or malformed)."""
    if not body:
        return None, NOT_PARSED
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            json.loads(body)
        except ValueError:
            return None, NOT_PARSED  # malformed: FastAPI names the position
        return ("body", f"not strict JSON: {exc} (NaN, Infinity and lone surrogates are refused)"), NOT_PARSED
    if _LONG_DIGITS in body.translate(_DIGITS_AS_ZERO):
        doc = json.loads(body)  # orjson reads integers beyond 64 bits as floats: look at the exact ones
    elif _NUL_ESCAPE not in body and not _deeper_than(doc, MAX_DEPTH):
        # No NUL can be in a string or key without its escape in the body, no integer beyond 64 bits
        # without 19 digits in a row: only the depth was left to check (the whole walk, which builds
        # every value's path, was a quarter of a 1,000-item batch's CPU).
        return None, doc
    return _walk(doc), doc


_CONTAINERS = (dict, list)  # a tuple: isinstance with a `dict | list` union is twice as slow (the walk's cost)


def _deeper_than(doc: Any, limit: int) -> bool:
    stack = [(doc, 0)] if isinstance(doc, _CONTAINERS) else []
    while stack:
        value, depth = stack.pop()
        if depth >= limit:
            return True
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
    return False


def _walk(doc: Any) -> tuple[str, str] | None:
    stack: list[tuple[Any, tuple, int]] = [(doc, (), 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return _dotted(path), "holds a NUL character"
        elif isinstance(value, bool) or value is None or isinstance(value, float):
            continue
        elif isinstance(value, int):
            if not -MAX_INT - 1 <= value <= MAX_INT:
                return _dotted(path), "is an integer beyond 64 bits"
        elif isinstance(value, _CONTAINERS):
            if depth >= MAX_DEPTH:
                return _dotted(path), f"nests deeper than {MAX_DEPTH} levels"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                if isinstance(key, str) and "\x00" in key:
                    return _dotted((*path, key)), "has a NUL character in a key"
                stack.append((child, (*path, key), depth + 1))
    return None


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "body"


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return True  # FastAPI parses a body without a content type as JSON too


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


async def _refuse(send: Send, field: str, message: str) -> None:
    text = f"{field} {message}" if field != "body" else message
    body = orjson.dumps({"error": "validation_error", "message": text, "errors": [{"field": field, "message": text}]})
    await send({"type": "http.response.start", "status": 422,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
