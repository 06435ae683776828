"""The API reference of the whole product at the gateway: `/openapi.json` merges every service's
own OpenAPI (asked of the services, so it is what they serve now), `/docs` shows it with
Swagger UI (built with the UI into static/docs.html)."""

import asyncio
import time
from collections.abc import Iterable

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from services.gateway.openapi import merge
from services.gateway.ui import NOT_BUILT, STATIC
from shared.http import error
from shared.service import ServiceSpec

CACHE_SECONDS = 30.0
# FastAPI's own pages for the gateway's (empty) schema, replaced by the product's.
FASTAPI_DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def install(app: FastAPI, specs: Iterable[ServiceSpec]) -> None:
    upstreams = {spec.name: spec.url() for spec in specs}
    cache: dict[str, tuple[float, dict]] = {}
    app.router.routes[:] = [r for r in app.router.routes if not (isinstance(r, Route) and r.path in FASTAPI_DOCS)]

    async def service_document(client: httpx.AsyncClient, url: str) -> dict:
        response = await client.get(f"{url}/openapi.json", timeout=5.0)
        response.raise_for_status()
        return response.json()

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> Response:
        hit = cache.get("merged")
        if hit and hit[0] > time.monotonic():
            return JSONResponse(hit[1])
        client: httpx.AsyncClient = request.app.state.client
        answers = await asyncio.gather(
            *(service_document(client, url) for url in upstreams.values()), return_exceptions=True
        )
        missing = [name for name, a in zip(upstreams, answers, strict=True) if isinstance(a, BaseException)]
        if missing:
            return error(502, "bad_gateway", f"no OpenAPI from {', '.join(missing)}", services=missing)
        merged = merge([a for a in answers if isinstance(a, dict)])
        cache["merged"] = (time.monotonic() + CACHE_SECONDS, merged)
        return JSONResponse(merged)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        page = STATIC / "docs.html"
        if not page.is_file():
            return Response(NOT_BUILT, status_code=503, media_type="text/plain")
        return FileResponse(page, headers={"cache-control": "no-cache"})
