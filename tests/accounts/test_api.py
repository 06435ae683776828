"""/api/keys in-process on the real PostgreSQL: an admin creates (the secret shown once), lists
(never the secret or its hash), rotates and revokes its organization's keys; expiry; the audit
trail; organizations kept apart; organization names checked; KeyCreated / KeyRevoked in the outbox."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from shared.auth import parse_key

pytestmark = pytest.mark.asyncio


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create(api, admin, **body):
    response = await api.post("/api/keys", headers=admin, json={"role": "viewer", **body})
    assert response.status_code == 201, response.text
    return response.json()


async def outbox(db, org):
    async with db.read() as session:
        rows = (await session.execute(
            text("SELECT event_type, envelope FROM rlhf_auth.outbox WHERE organization = :org ORDER BY id"),
            {"org": org})).all()
    return [(r.event_type, json.loads(r.envelope)["payload"]) for r in rows]


async def test_create_shows_the_secret_once_and_the_key_works(api, admin, org, accounts_db):
    made = await create(api, admin, role="curator", name="ci runner")
    assert (made["organization"], made["role"], made["name"], made["status"]) == (org, "curator", "ci runner", "active")
    assert parse_key(made["key"])[0] == made["key_id"]
    assert made["created_by"].startswith("key:")

    # The new key is a working curator key of the organization (and not an admin one).
    assert (await api.get("/api/keys", headers=bearer(made["key"]))).status_code == 403

    listed = (await api.get("/api/keys", headers=admin)).json()["items"]
    mine = next(k for k in listed if k["key_id"] == made["key_id"])
    assert "key" not in mine and "key_hash" not in mine
    assert made["key"].split("_", 2)[2] not in json.dumps(listed)
    assert (await api.get(f"/api/keys/{made['key_id']}", headers=admin)).json() == mine
    assert [(t, p["key_id"], p["role"]) for t, p in await outbox(accounts_db, org)] == [
        ("KeyCreated", made["key_id"], "curator")]


async def test_revoke_refuses_the_key_at_once_and_only_once(api, admin, org, accounts_db):
    made = await create(api, admin, role="admin")
    assert (await api.get("/api/keys", headers=bearer(made["key"]))).status_code == 200  # now cached

    revoked = await api.post(f"/api/keys/{made['key_id']}/revoke", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"]
    # The same process cached the key a moment ago: the revocation's NOTIFY dropped it.
    refused = await api.get("/api/keys", headers=bearer(made["key"]))
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"

    again = await api.post(f"/api/keys/{made['key_id']}/revoke", headers=admin)
    assert (again.status_code, again.json()["error"]) == (409, "key_revoked")
    assert [k["key_id"] for k in (await api.get("/api/keys?status=revoked", headers=admin)).json()["items"]] == [
        made["key_id"]]
    events = [(t, p["key_id"]) for t, p in await outbox(accounts_db, org)]
    assert events == [("KeyCreated", made["key_id"]), ("KeyRevoked", made["key_id"])]


async def test_rotate_gives_a_new_secret_with_the_same_name_and_role_and_revokes_the_old(api, admin, org):
    old = await create(api, admin, role="curator", name="nightly export")
    assert (await api.get("/api/keys", headers=bearer(old["key"]))).status_code == 403  # cached, working

    response = await api.post(f"/api/keys/{old['key_id']}/rotate", headers=admin)
    assert response.status_code == 201, response.text
    new = response.json()
    assert new["key_id"] != old["key_id"] and new["key"] != old["key"]
    assert (new["name"], new["role"], new["rotated_from"], new["status"]) == (
        "nightly export", "curator", old["key_id"], "active")
    assert (await api.get("/api/keys", headers=bearer(old["key"]))).status_code == 401
    assert (await api.get("/api/keys", headers=bearer(new["key"]))).status_code == 403  # valid, a curator
    assert (await api.get(f"/api/keys/{old['key_id']}", headers=admin)).json()["status"] == "revoked"
    assert (await api.post(f"/api/keys/{old['key_id']}/rotate", headers=admin)).status_code == 409


async def test_audit_trail_of_create_rotate_revoke(api, admin, org):
    made = await create(api, admin, name="temp")
    rotated = (await api.post(f"/api/keys/{made['key_id']}/rotate", headers=admin)).json()
    await api.post(f"/api/keys/{rotated['key_id']}/revoke", headers=admin)

    page = (await api.get("/api/keys/audit", headers=admin)).json()
    entries = [(e["action"], e["key_id"]) for e in page["items"] if e["key_id"] in (made["key_id"], rotated["key_id"])]
    assert entries == [  # newest first
        ("revoked", rotated["key_id"]),
        ("revoked", made["key_id"]),
        ("rotated", rotated["key_id"]),
        ("created", made["key_id"]),
    ]
    by_action = {(e["action"], e["key_id"]): e for e in page["items"]}
    assert by_action[("revoked", made["key_id"])]["details"] == {"replaced_by": rotated["key_id"]}
    assert by_action[("rotated", rotated["key_id"])]["details"]["rotated_from"] == made["key_id"]
    assert all(by_action[entry]["actor"].startswith("key:") for entry in entries)

    first = (await api.get("/api/keys/audit", headers=admin, params={"limit": 2})).json()
    second = (await api.get("/api/keys/audit", headers=admin, params={"limit": 2, "cursor": first["next_cursor"]}))
    assert [e["id"] for e in first["items"] + second.json()["items"]] == [e["id"] for e in page["items"]][:4]
    assert (await api.get("/api/keys/audit", headers=admin, params={"cursor": "x"})).status_code == 400
    only = (await api.get("/api/keys/audit", headers=admin, params={"key_id": made["key_id"]})).json()["items"]
    assert [e["action"] for e in only] == ["revoked", "created"]


async def test_an_expired_key_answers_401_like_a_revoked_one(api, admin):
    soon = datetime.now(UTC) + timedelta(seconds=2)
    made = await create(api, admin, role="admin", expires_at=soon.isoformat())
    assert made["expires_at"] is not None
    assert (await api.get("/api/keys", headers=bearer(made["key"]))).status_code == 200  # cached until expiry
    while (status := (await api.get("/api/keys", headers=bearer(made["key"]))).status_code) == 200:
        assert datetime.now(UTC) < soon + timedelta(seconds=1), "the cache kept an expired key"
        await asyncio.sleep(0.05)
    assert status == 401
    assert (await api.get(f"/api/keys/{made['key_id']}", headers=admin)).json()["status"] == "expired"
    listed = (await api.get("/api/keys", headers=admin, params={"status": "expired"})).json()["items"]
    assert [k["key_id"] for k in listed] == [made["key_id"]]


@pytest.mark.parametrize("expires_at", ["2020-01-01T00:00:00Z", "2030-01-01T00:00:00", "9999-12-31T23:59:59-14:00"])
async def test_expiry_must_be_a_future_moment_with_a_zone(api, admin, expires_at):
    response = await api.post("/api/keys", headers=admin, json={"role": "viewer", "expires_at": expires_at})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "expires_at"


async def test_another_organizations_keys_answer_404(api, admin, make_key, org):
    theirs = await create(api, await make_key(f"other-{org}", "admin"))
    for method, path in [("GET", ""), ("POST", "/revoke"), ("POST", "/rotate")]:
        response = await api.request(method, f"/api/keys/{theirs['key_id']}{path}", headers=admin)
        assert response.status_code == 404, (method, path, response.text)
    assert theirs["key_id"] not in json.dumps((await api.get("/api/keys", headers=admin)).json())
    assert theirs["key_id"] not in json.dumps((await api.get("/api/keys/audit", headers=admin)).json())


async def test_only_admins_manage_keys(api, make_key, org):
    curator = await make_key(org, "curator")
    assert (await api.get("/api/keys", headers=curator)).status_code == 403
    assert (await api.post("/api/keys", headers=curator, json={"role": "viewer"})).status_code == 403
    assert (await api.get("/api/keys")).status_code == 401


async def test_organization_names_are_slugs_and_ones_own(api, admin, org):
    for bad in ["", "a/b", "..", "../x", "Acme", "-acme", "a" * 64, "acme\u0000"]:
        response = await api.post("/api/keys", headers=admin, json={"role": "viewer", "organization": bad})
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["errors"][0]["field"] == "organization"
        assert "slug" in response.json()["message"] or "\u0000" in bad  # NUL: refused before, for any field
    other = await api.post("/api/keys", headers=admin, json={"role": "viewer", "organization": "someone-else"})
    assert other.status_code == 403 and "--direct" in other.json()["message"]
    assert (await create(api, admin, organization=org))["organization"] == org


async def test_bad_input_is_a_clear_4xx(api, admin):
    for body in [{"role": "owner"}, {"role": "viewer", "extra": 1}, {"role": "viewer", "name": "a\u0000b"},
                 {"role": "viewer", "name": "x" * 201}]:
        assert (await api.post("/api/keys", headers=admin, json=body)).status_code == 422, body
    assert (await api.get("/api/keys/not-a-key!", headers=admin)).status_code == 422
    assert (await api.get("/api/keys", headers=admin, params={"status": "gone"})).status_code == 422
