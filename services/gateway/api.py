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


def _proxy(routes: dict[str, str]):
    async def proxy(request: Request, rest: str):
        base = upstream_for(routes, request.url.path)
        if base is None:
            return error(404, "not_found", f"no service serves {request.url.path}")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        headers.append(("x-correlation-id", request.state.correlation_id))
        client: httpx.AsyncClient = request.app.state.client
        upstream = client.build_request(
            request.method,
            base + request.url.path,
            params=request.url.query,
            headers=headers,
            content=request.stream(),
        )
        try:
            response = await client.send(upstream, stream=True)
        except httpx.TransportError as exc:
            return error(502, "bad_gateway", f"upstream unavailable: {type(exc).__name__}")
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            headers={k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP},
            background=BackgroundTask(response.aclose),
        )

    return proxy
