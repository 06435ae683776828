"""What the gateway adds in front of the services: the merged API reference, every service's
health in its own, and the per-key rate limit."""

import httpx
import pytest

from services.gateway.main import build_app
from services.gateway.ratelimit import RateLimitMiddleware, RateLimitSettings, TokenBuckets
from services.gateway.ui import STATIC
from shared.service import load_specs
from shared.settings import Settings


async def test_openapi_merges_every_service(stack, gateway):
    doc = (await gateway.get("/openapi.json")).json()
    for spec in load_specs().values():
        for prefix in spec.route_prefixes:
            assert any(path.startswith(prefix) for path in doc["paths"]), prefix
    assert "FeedbackOut" in doc["components"]["schemas"] and "JobDetail" in doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    if (STATIC / "docs.html").is_file():
        page = await gateway.get("/docs")
        assert page.status_code == 200 and 'id="swagger"' in page.text


async def test_healthz_reports_each_service(stack, gateway):
    r = await gateway.get("/healthz")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ok" and body["service"] == "gateway"
    assert set(body["services"]) == set(spec.name for spec in load_specs().values())
    assert all(s["status"] == "ok" for s in body["services"].values())


def test_token_buckets_refill_at_the_rate():
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", 0.0) == pytest.approx(0.5)  # one token comes back every 0.5 s
    assert buckets.take("other", 0.0) == 0.0  # keys do not share a bucket
    assert buckets.take("k", 0.5) == 0.0


async def test_over_the_limit_a_key_gets_429_with_retry_after(monkeypatch):
    monkeypatch.setenv("RLHF_GATEWAY_RATE_LIMIT", "0.5")
    monkeypatch.setenv("RLHF_GATEWAY_RATE_BURST", "2")
    app = build_app(Settings())
    async with httpx.AsyncClient(timeout=2.0) as upstream:
        app.state.client = upstream  # no service listens there: the first calls answer 502
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            key = {"Authorization": "Bearer rlhf_a_b"}
            first = [(await client.get("/api/feedback", headers=key)).status_code for _ in range(2)]
            assert 429 not in first
            limited = await client.get("/api/feedback", headers=key)
            assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
            assert int(limited.headers["retry-after"]) == 2
            assert limited.headers["x-content-type-options"] == "nosniff"
            other = await client.get("/api/feedback", headers={"Authorization": "Bearer rlhf_c_d"})
            assert other.status_code != 429
            assert (await client.get("/healthz")).status_code != 429  # only /api/* is limited


def test_a_zero_rate_turns_the_limit_off():
    assert RateLimitMiddleware(None, RateLimitSettings(rlhf_gateway_rate_limit=0)).buckets is None
