"""Wires the gateway: routes to the services, health and metrics.

    python -m services.gateway.main
"""

from contextlib import asynccontextmanager

import httpx
import uvicorn

from services.gateway import api, docs, health, security, ui
from services.gateway.forwarded import ForwardedForMiddleware
from shared.http import create_app
from shared.observability import configure_logging
from shared.service import load_specs, run_process
from shared.settings import Settings, get_settings

DEFAULT_PORT = 8000


def build_app(settings: Settings):
    routes = api.route_table(load_specs().values())

    @asynccontextmanager
    async def lifespan(app):
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
            app.state.client = client
            yield

    # Bodies are streamed through; each service enforces its own size limits.
    app = create_app(service="gateway", max_body_bytes=64 * 1024 * 1024, lifespan=lifespan, guard_input=False)
    api.install(app, routes)
    security.install(app)
    app.add_middleware(ForwardedForMiddleware)  # services count failed authentications by it
    docs.install(app, load_specs().values())
    health.install(app, load_specs().values())
    ui.install(app)  # last: its catch-all serves the UI at / and every path the API does not
    return app


def main() -> None:
    settings = get_settings()
    configure_logging("gateway", fmt=settings.rlhf_log_format, level=settings.rlhf_log_level)
    config = uvicorn.Config(
        build_app(settings), host=settings.rlhf_http_host, port=settings.rlhf_http_port or DEFAULT_PORT,
        log_level="warning", access_log=False,
    )
    run_process(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
