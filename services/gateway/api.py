"""The gateway: one address for the UI and for clients, routing /api/<area>/* to the owning service.
It holds no data and checks no keys itself: each service authenticates every call it serves."""

from collections.abc import Iterable

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from shared.http import error
from shared.service import ServiceSpec

# Hop-by-hop headers are the connection's own and are not forwarded (RFC 9110 §7.6.1).
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
}


def route_table(specs: Iterable[ServiceSpec]) -> dict[str, str]:
    """Path prefix -> upstream base URL: each router's prefix of each service (RLHF_<NAME>_URL)."""
    return {prefix: spec.url() for spec in specs for prefix in spec.route_prefixes}


def upstream_for(routes: dict[str, str], path: str) -> str | None:
    """The service of the longest prefix that owns `path` (/api/models/ab-test before /api/models)."""
    owners = [prefix for prefix in routes if path == prefix or path.startswith(prefix + "/")]
    return routes[max(owners, key=len)] if owners else None


def install(app: FastAPI, routes: dict[str, str]) -> None:
    """Proxies every path under the routes' top segments (/api, and /v1 for the OpenAI-compatible router)."""
    for top in sorted({"/" + prefix.strip("/").split("/")[0] for prefix in routes} | {"/api"}):
        app.add_api_route(top + "/{rest:path}", _proxy(routes), methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                          include_in_schema=False)


IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
# The gateway's own server writes these; the upstream's copies would make them appear twice.
OWN_HEADERS = {"date", "server"}


def _refusal(request: Request):
    """Why the gateway will not forward `request`, or None: a NUL in the path, or dot segments (which
    would let `/api/feedback/..%2F..%2Fmetrics` leave the service's API)."""
    path = request.url.path
    if "\x00" in path:
        return error(400, "invalid_path", "the path holds a NUL character")
    if any(segment in (".", "..") for segment in path.split("/")):
        return error(400, "invalid_path", "dot segments (. and ..) are not allowed in paths")
    return None


def _proxy(routes: dict[str, str]):
    async def proxy(request: Request, rest: str):
        refused = _refusal(request)
        if refused is not None:
            return refused
        base = upstream_for(routes, request.url.path)
        if base is None:
            return error(404, "not_found", f"no service serves {request.url.path}")
        retryable = request.method in IDEMPOTENT
        # Raw bytes: a header value with non-ASCII bytes is passed on as it came, not re-encoded. A
        # streamed body keeps its Content-Length, so that the service can refuse an oversized one (413)
        # before reading it; a body read whole gets its length from the client library.
        dropped = HOP_BY_HOP if retryable else HOP_BY_HOP - {"content-length"}
        headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in dropped]
        headers.append((b"x-correlation-id", request.state.correlation_id.encode("latin-1")))
        client: httpx.AsyncClient = request.app.state.client
        # An idempotent request's body is small and read whole, so that it can be sent again once if
        # the upstream closed a kept-alive connection under it; other bodies are streamed through.
        content = await request.body() if retryable else request.stream()
        for attempt in (1, 2):
            upstream = client.build_request(
                request.method, base + request.url.path, params=request.url.query, headers=headers, content=content,
            )
            try:
                response = await client.send(upstream, stream=True)
                break
            except httpx.TransportError as exc:
                if not (retryable and attempt == 1):
                    return error(502, "bad_gateway", f"upstream unavailable: {type(exc).__name__}")
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            headers={k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP | OWN_HEADERS},
            background=BackgroundTask(response.aclose),
        )

    return proxy
