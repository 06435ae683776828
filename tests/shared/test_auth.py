"""API keys on the real database: hashed at rest, scoped, revocable, expiring; organization names;
the failed-authentication limit and the client address it counts by."""

import pytest
from sqlalchemy import select, update

from shared.auth import AuthError, KeyVerifier, Role, api_keys, create_key, parse_key


async def test_key_is_stored_hashed_and_verifies_to_its_org_and_role(engine, org):
    key = await create_key(engine, organization=org, role=Role.curator, name="ci")
    key_id, secret = parse_key(key)
    async with engine.connect() as conn:
        stored = (await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))).one()
    assert secret not in stored.key_hash and key not in stored.key_hash
    principal = await KeyVerifier(engine, ttl=0).verify(key)
    assert (principal.organization, principal.role) == (org, Role.curator)
    assert principal.can(Role.viewer) and not principal.can(Role.admin)


async def test_wrong_secret_malformed_and_revoked_keys_are_refused(engine, org):
    key = await create_key(engine, organization=org, role=Role.admin)
    verifier = KeyVerifier(engine, ttl=0)
    with pytest.raises(AuthError):
        await verifier.verify(key[:-2] + "xx")
    for malformed in ["", "rlhf_", "sk-abc", "rlhf__secret"]:
        with pytest.raises(AuthError):
            await verifier.verify(malformed)
    async with engine.begin() as conn:
        await conn.execute(update(api_keys).where(api_keys.c.key_id == parse_key(key)[0]).values(revoked=True))
    with pytest.raises(AuthError):
        await verifier.verify(key)


async def test_an_expired_key_is_refused_and_never_cached_past_its_expiry(engine, org):
    from datetime import UTC, datetime, timedelta

    in_an_hour = datetime.now(UTC) + timedelta(hours=1)
    key = await create_key(engine, organization=org, role=Role.viewer, expires_at=in_an_hour)
    verifier = KeyVerifier(engine, ttl=3600)
    assert (await verifier.verify(key)).organization == org
    async with engine.begin() as conn:  # time passes
        await conn.execute(update(api_keys).where(api_keys.c.key_id == parse_key(key)[0])
                           .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(AuthError):
        await KeyVerifier(engine).verify(key)


async def test_organization_names_are_slugs_at_creation(engine):
    from shared.errors import Invalid

    for bad in ["", "/", "..", "a/b", "a..b/..", "ACME", "acme corp", "-x", "x" * 64]:
        with pytest.raises(Invalid, match="slug"):
            await create_key(engine, organization=bad, role=Role.viewer)


def test_failed_authentications_are_counted_per_address_in_a_window():
    from shared.auth import FailedAuthLimiter

    limiter = FailedAuthLimiter(limit=3, window=60)
    for t in range(3):
        assert limiter.retry_after("a", t) == 0
        limiter.record_failure("a", t)
    assert limiter.retry_after("a", 10) == 50
    assert limiter.retry_after("b", 10) == 0
    assert limiter.retry_after("a", 60) == 0  # a new window
    assert FailedAuthLimiter(limit=0, window=60).retry_after("a", 0) == 0  # 0 turns it off


def test_the_client_address_is_the_peer_or_what_a_trusted_proxy_appended():
    from shared.auth import client_address, trusted_networks

    trusted = trusted_networks("127.0.0.1,::1,10.0.0.0/8")
    # Behind the gateway (trusted), a remote client's own X-Forwarded-For entries are left of the
    # address the gateway appended: only the right-most untrusted hop is believed.
    assert client_address("127.0.0.1", "203.0.113.9, 192.0.2.1", trusted) == "192.0.2.1"
    assert client_address("127.0.0.1", "203.0.113.9, 10.1.2.3", trusted) == "203.0.113.9"
    assert client_address("192.0.2.1", "203.0.113.9", trusted) == "192.0.2.1"  # an untrusted peer's header
    assert client_address("127.0.0.1", "", trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", "not-an-address, 192.0.2.1", trusted) == "192.0.2.1"
    assert client_address("127.0.0.1", "\u00e9t\u00e9", trusted) == "127.0.0.1"
    assert client_address(None, None, trusted) == "unknown"
