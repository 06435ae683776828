"""The gateway serves the Curate UI: the built single-page app at / with its security headers,
every other non-API path answered by the app, the API untouched."""

import pytest

from services.gateway.ui import STATIC

pytestmark = pytest.mark.asyncio


async def test_the_ui_is_served_with_security_headers(stack, gateway):
    if not (STATIC / "index.html").is_file():
        pytest.skip("the UI is not built: make ui")
    r = await gateway.get("/")
    assert r.status_code == 200 and '<div id="app">' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    deep = await gateway.get("/some/panel/route")  # the single-page app routes it
    assert deep.status_code == 200 and deep.text == r.text
    assert (await gateway.get("/assets/missing-0000.js")).status_code == 404
    assert (await gateway.get("/api/feedback")).status_code == 401  # the API is not shadowed


async def test_security_headers_are_on_api_answers_too(stack, gateway):
    r = await gateway.get("/api/feedback")
    assert r.status_code == 401
    assert r.headers["x-content-type-options"] == "nosniff" and "frame-ancestors 'none'" in r.headers[
        "content-security-policy"]
