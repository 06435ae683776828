"""`rlhf keys create | list | rotate | revoke | audit` as a user runs them (subprocesses): through
the running stack's /api/keys with an admin key, whatever RLHF_DATA_DIR says; on the database
itself, saying so, when no stack answers; organization names checked before anything is made."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.infra import free_port

RLHF = [sys.executable, "-m", "rlhf.cli", "keys"]


def rlhf(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*RLHF, *args], env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def through_stack(stack, tmp_path) -> dict[str, str]:
    """A shell pointed at the running stack, but with a data directory of its own (as when the
    command runs from another folder): nothing may land there."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "RLHF_API_KEY")}
    return {**env, "RLHF_URL": stack.gateway_url, "RLHF_DATA_DIR": str(tmp_path / "elsewhere")}


async def test_keys_through_the_running_stack(through_stack, gateway, make_key, org):
    elsewhere = Path(through_stack["RLHF_DATA_DIR"])
    refused = rlhf("create", "--role", "viewer", env=through_stack, check=False)
    assert refused.returncode == 1 and "RLHF_API_KEY" in refused.stderr and "--direct" in refused.stderr

    admin = (await make_key(org, "admin"))["Authorization"].removeprefix("Bearer ")
    env = {**through_stack, "RLHF_API_KEY": admin}
    made = rlhf("create", "--role", "curator", "--name", "ci", "--expires-in", "30d", env=env)
    key = made.stdout.strip()
    assert len(made.stdout.strip().splitlines()) == 1 and key.startswith("rlhf_")
    assert f"of {org}, role curator, expires" in made.stderr
    assert (await gateway.get("/api/training-datasets", headers=bearer(key))).status_code == 200
    assert not await asyncio.to_thread(elsewhere.exists)  # no second database

    key_id = key.split("_")[1]
    listed = rlhf("list", env=env).stdout
    assert key_id in listed and "curator" in listed and "active" in listed and key.split("_", 2)[2] not in listed

    rotated = rlhf("rotate", key_id, env=env)
    new_key = rotated.stdout.strip()
    assert new_key != key and f"revoked {key_id}" in rotated.stderr
    assert (await gateway.get("/api/training-datasets", headers=bearer(new_key))).status_code == 200
    assert (await gateway.get("/api/training-datasets", headers=bearer(key))).status_code == 401

    new_id = new_key.split("_")[1]
    assert f"revoked key {new_id}" in rlhf("revoke", new_id, env=env).stdout
    assert (await gateway.get("/api/training-datasets", headers=bearer(new_key))).status_code == 401
    again = rlhf("revoke", new_id, env=env, check=False)
    assert again.returncode == 1 and "already revoked" in again.stderr

    audit = rlhf("audit", env=env).stdout.splitlines()
    actions = [(line.split()[1], line.split()[2]) for line in audit[1:]]
    assert actions[:4] == [(new_id, "revoked"), (key_id, "revoked"), (new_id, "rotated"), (key_id, "created")]

    other = rlhf("create", "--org", f"x{org}", "--role", "viewer", env=env, check=False)
    assert other.returncode == 1 and "403" in other.stderr and "--direct" in other.stderr


async def test_keys_on_the_database_when_no_stack_answers(stack, gateway, org):
    # DATABASE_URL names the database the test stack uses; nothing answers at this URL.
    env = {**os.environ, "RLHF_URL": f"http://127.0.0.1:{free_port()}"}
    env.pop("RLHF_API_KEY", None)
    made = rlhf("create", "--org", org, "--role", "admin", env=env)
    assert "no stack answers at" in made.stderr and "working on the database directly" in made.stderr
    key = made.stdout.strip()
    key_id = key.split("_")[1]
    assert (await gateway.get("/api/keys", headers=bearer(key))).status_code == 200  # the stack's database

    assert key_id in rlhf("list", "--org", org, env=env).stdout
    audit = rlhf("audit", "--key-id", key_id, env=env).stdout
    assert "created" in audit and "cli:" in audit

    # Revoked from the command line, in another process: every service hears the NOTIFY.
    rlhf("revoke", key_id, env=env)
    revoked_at = time.monotonic()
    while (await gateway.get("/api/keys", headers=bearer(key))).status_code != 401:
        assert time.monotonic() - revoked_at <= 1.0, "the stack still took a key the command line revoked"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("organization", ["", "/", "..", "acme/../x", "Acme"])
def test_organization_names_are_checked_before_anything_is_made(organization, tmp_path):
    env = {**os.environ, "RLHF_URL": f"http://127.0.0.1:{free_port()}", "RLHF_DATA_DIR": str(tmp_path / "d")}
    done = rlhf("create", "--org", organization, "--role", "viewer", env=env, check=False)
    assert done.returncode == 2, done.stderr
    assert "slug" in done.stderr and not done.stdout


def test_no_warning_noise_without_xdg_runtime_dir(tmp_path):
    """With XDG_RUNTIME_DIR unset (cron, ssh, containers) a command that starts the embedded PostgreSQL
    says what it does and nothing else: no RuntimeDirWarning from platformdirs."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "DATABASE_URL", "RLHF_API_KEY")}
    env.update({"RLHF_URL": f"http://127.0.0.1:{free_port()}", "RLHF_DATA_DIR": str(tmp_path / "d"),
                "PYTHONWARNINGS": "default"})
    done = rlhf("list", env=env)
    assert "working on the database directly" in done.stderr
    assert "Warning" not in done.stderr, done.stderr
    assert "Warning" not in rlhf("--help", env=env).stderr
