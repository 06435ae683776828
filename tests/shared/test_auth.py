"""API keys on the real database: hashed at rest, scoped, revocable."""

import pytest
from sqlalchemy import select, update

from shared.auth import AuthError, KeyVerifier, Role, api_keys, create_key, parse_key

pytestmark = pytest.mark.asyncio


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
