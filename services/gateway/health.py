"""The gateway's /healthz: its own liveness and each service's, asked at once with a short
timeout. 200 when every service answers, 503 (with which one did not) otherwise."""

import asyncio
import time
from collections.abc import Iterable

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route

from shared.service import ServiceSpec

TIMEOUT = 2.0


async def probe(client: httpx.AsyncClient, url: str) -> dict:
    start = time.perf_counter()
    try:
        response = await client.get(f"{url}/healthz", timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return {"status": "unavailable", "url": url, "error": type(exc).__name__}
    took = round((time.perf_counter() - start) * 1000, 1)
    status = "ok" if response.status_code == 200 else "unhealthy"
    return {"status": status, "url": url, "http_status": response.status_code, "latency_ms": took}


def install(app: FastAPI, specs: Iterable[ServiceSpec]) -> None:
    upstreams = {spec.name: spec.url() for spec in specs}
    # Replaces the plain liveness route every app gets from shared.http.create_app.
    app.router.routes[:] = [r for r in app.router.routes if not (isinstance(r, Route) and r.path == "/healthz")]

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        client: httpx.AsyncClient = request.app.state.client
        answers = await asyncio.gather(*(probe(client, url) for url in upstreams.values()))
        services = dict(zip(upstreams, answers, strict=True))
        ready = all(s["status"] == "ok" for s in services.values())
        body = {"status": "ok" if ready else "degraded", "service": "gateway", "services": services}
        return JSONResponse(body, status_code=200 if ready else 503)
