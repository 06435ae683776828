"""Through the gateway, on every real service process: a revoked key is refused by each service
within the product's guarantee (1 s after the revocation answered), and failed authentications
are limited per client address (429 with Retry-After), without locking out keys already in use."""

import asyncio
import secrets
import time

import httpx

from services.gateway.main import build_app as build_gateway
from shared.settings import Settings

# One read route per service, each served by its own process behind the gateway.
READS = ["/api/feedback", "/api/training-datasets", "/api/fine-tuning/jobs", "/api/models", "/api/experiments",
         "/api/keys"]
GUARANTEE = 1.0  # seconds: README "API keys" and SECURITY.md


async def test_a_revoked_key_is_refused_by_every_service_within_a_second(gateway, make_key, org):
    operator = await make_key(org, "admin")
    doomed = (await gateway.post("/api/keys", headers=operator, json={"role": "admin", "name": "doomed"})).json()
    headers = {"Authorization": f"Bearer {doomed['key']}"}
    for path in READS:  # each process now holds the key in its cache
        for _ in range(2):
            response = await gateway.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text)

    revoked = await gateway.post(f"/api/keys/{doomed['key_id']}/revoke", headers=operator)
    answered = time.monotonic()
    assert revoked.status_code == 200, revoked.text

    async def refused_after(path: str) -> float:
        while (await gateway.get(path, headers=headers)).status_code != 401:
            if time.monotonic() - answered > 10 * GUARANTEE:
                break
            await asyncio.sleep(0.05)
        return time.monotonic() - answered

    delays = dict(zip(READS, await asyncio.gather(*(refused_after(p) for p in READS)), strict=True))
    assert all(delay <= GUARANTEE for delay in delays.values()), delays


def random_address() -> str:
    return f"198.51.100.{secrets.randbelow(254) + 1}, 2001:db8::{secrets.token_hex(2)}"


def unknown_key() -> dict[str, str]:
    return {"Authorization": f"Bearer rlhf_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"}


async def test_failed_authentications_are_limited_per_client_address(gateway, make_key, org):
    # The gateway passes on the caller's address; from loopback (a trusted proxy) the tests may name
    # the client in X-Forwarded-For, as a proxy in front of the gateway would.
    address = random_address()
    attacker = {"X-Forwarded-For": address}
    known = {**await make_key(org, "viewer"), **attacker}
    assert (await gateway.get("/api/feedback", headers=known)).status_code == 200  # in use, cached
    fresh = {**await make_key(org, "viewer"), **attacker}

    wrong = [unknown_key() for _ in range(20)]  # RLHF_AUTH_FAILURE_LIMIT's default
    for key in wrong:
        assert (await gateway.get("/api/feedback", headers={**key, **attacker})).status_code == 401
    limited = await gateway.get("/api/feedback", headers={**unknown_key(), **attacker})
    assert limited.status_code == 429, limited.text
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["error"] == "too_many_failed_authentications"

    # The same stale key again is answered from memory (not guessing, not limited) ...
    assert (await gateway.get("/api/feedback", headers={**wrong[0], **attacker})).status_code == 401
    # ... a key already in use from that address keeps working, a new one waits out the window ...
    assert (await gateway.get("/api/feedback", headers=known)).status_code == 200
    assert (await gateway.get("/api/feedback", headers=fresh)).status_code == 429
    # ... and other addresses, and other services (each counts its own), are not affected.
    other = {**fresh, "X-Forwarded-For": random_address()}
    assert (await gateway.get("/api/feedback", headers=other)).status_code == 200
    assert (await gateway.get("/api/models", headers={**unknown_key(), **attacker})).status_code == 401



async def test_a_remote_client_cannot_choose_the_address_it_is_counted_as(stack, monkeypatch):
    """The gateway in-process, called from an address that is not a trusted proxy: whatever the
    client writes in X-Forwarded-For, its failures are counted against its own address."""
    for spec in stack.services.values():
        monkeypatch.setenv(spec.url_variable, stack.url_of(spec))
    app = build_gateway(Settings())
    remote = (f"203.0.113.{secrets.randbelow(254) + 1}", 40000)
    async with httpx.AsyncClient(timeout=30) as upstream:
        app.state.client = upstream  # what the gateway's lifespan would set
        transport = httpx.ASGITransport(app=app, client=remote)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            statuses = [
                (await client.get("/api/feedback", headers={**unknown_key(), "X-Forwarded-For": f"192.0.2.{i}"}))
                .status_code
                for i in range(21)
            ]
    assert statuses == [401] * 20 + [429]
