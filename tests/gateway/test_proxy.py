"""The gateway's proxy cannot be tricked and one request's failure never fails another's (issue 13,
reproductions 9-12): a gateway in this process in front of a real uvicorn upstream, an app made as
every service's is (`create_app`), that crashes on one path and echoes on the others."""

import asyncio
import socket
import threading
from contextlib import asynccontextmanager

import httpx
import pytest
import structlog
import uvicorn
from fastapi import FastAPI, Request

from services.gateway import api
from shared.http import create_app
from shared.infra import free_port

pytestmark = pytest.mark.asyncio


def upstream_app() -> FastAPI:
    app = create_app(service="flaky", max_body_bytes=1 << 20)

    @app.api_route("/api/flaky/{rest:path}", methods=["GET", "POST"])
    async def echo(rest: str, request: Request):
        body = (await request.body()).decode()  # as FastAPI reads a body before a route runs
        if rest == "boom":
            raise RuntimeError("the upstream crashed")
        return {"path": request.url.path, "org": request.headers.get("x-org"),
                "note": request.headers.get("x-note"), "body": body}

    return app


@pytest.fixture(scope="module")
def upstream():
    # The upstream logs each crash's traceback in this process: plainly, as a service does.
    structlog.configure(processors=[structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(upstream_app(), host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            threading.Event().wait(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)
    structlog.reset_defaults()


@asynccontextmanager
async def gateway_to(url: str):
    app = create_app(service="gateway", max_body_bytes=1 << 20, guard_input=False)
    api.install(app, {"/api/flaky": url})
    async with httpx.AsyncClient(timeout=60) as upstream_client:  # the upstream logs each crash's traceback
        app.state.client = upstream_client
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            yield client


async def test_a_crashing_upstream_request_never_fails_the_next_one(upstream):
    async with gateway_to(upstream) as gw:
        for i in range(10):
            crashed = await gw.get("/api/flaky/boom", headers={"x-org": "evil"})
            assert crashed.status_code == 500 and crashed.json()["error"] == "internal_error", crashed.text
            ok = await gw.get(f"/api/flaky/item-{i}", headers={"x-org": "acme"})
            assert ok.status_code == 200, ok.text
            assert ok.json()["org"] == "acme"
            crashed = await gw.post("/api/flaky/boom", json={"n": i})
            assert crashed.status_code == 500 and crashed.json()["error"] == "internal_error", crashed.text
            ok = await gw.post(f"/api/flaky/item-{i}", content=b'{"n": 1}', headers={"x-org": "acme"})
            assert ok.status_code == 200 and ok.json()["body"] == '{"n": 1}', ok.text


async def test_paths_that_would_leave_the_api_are_refused(upstream):
    async with gateway_to(upstream) as gw:
        # (a client normalizes literal ./ and ../ itself; the encoded forms reach the gateway as they are)
        for path in ("/api/flaky/..%2F..%2Fmetrics", "/api/flaky/%2e%2e/%2e%2e/metrics", "/api/flaky/%2E/x",
                     "/api/flaky/a%00b"):
            r = await gw.get(path)
            assert r.status_code == 400 and r.json()["error"] == "invalid_path", (path, r.text)
        assert (await gw.get("/api/flaky/a%2Fb")).json()["path"] == "/api/flaky/a/b"


async def test_non_ascii_header_bytes_are_passed_on_not_a_500(upstream):
    async with gateway_to(upstream) as gw:
        r = await gw.get("/api/flaky/x", headers=[(b"x-note", "café".encode())])
        assert r.status_code == 200 and r.json()["note"] == "café".encode().decode("latin-1")


async def test_one_date_and_one_server_header_through_the_real_gateway(stack, gateway):
    r = await gateway.get("/api/feedback")
    assert r.status_code == 401
    assert len(r.headers.get_list("date")) == 1 and len(r.headers.get_list("server")) == 1


async def test_concurrent_requests_of_two_organizations_around_crashes(upstream):
    async with gateway_to(upstream) as gw:
        answers = await asyncio.gather(*(
            gw.get("/api/flaky/boom" if i % 2 else f"/api/flaky/ok-{i}", headers={"x-org": f"org-{i % 2}"})
            for i in range(40)
        ))
        assert [r.status_code for r in answers] == [500 if i % 2 else 200 for i in range(40)]


async def test_an_oversized_body_answers_413_through_the_gateway(stack, gateway, make_key, org):
    big = b'{"query": "' + b"x" * (2 << 20) + b'", "response": "r", "feedback_type": "thumbs_up"}'

    async def chunked():
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    h = await make_key(org, "viewer")
    for headers in ({}, h):  # with a key and without: the size is refused before anything else
        headers = headers | {"content-type": "application/json"}
        for content in (big, chunked()):  # with Content-Length, and chunked
            r = await gateway.post("/api/feedback", content=content, headers=headers)
            assert r.status_code == 413 and r.json()["error"] == "body_too_large", r.text
