"""`rlhf up` and `rlhf keys create` as a user runs them: the embedded stack from nothing, a key,
feedback through the gateway, FeedbackReceived on the broker, Ctrl-C, and state kept across a restart."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from services import SERVICES
from shared.events import FeedbackReceived
from shared.infra import free_port
from tests.support import KafkaProbe, envelope_of, of_org

pytestmark = pytest.mark.asyncio

RLHF = [sys.executable, "-m", "rlhf.cli"]


def clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    return {**env, "RLHF_DATA_DIR": str(data_dir)}


def start_up(data_dir: Path, ports: dict[str, int]) -> tuple[subprocess.Popen, list[str]]:
    process = subprocess.Popen(
        [*RLHF, "up", "--port", str(ports["gateway"]), "--services-port", str(ports["services"]),
         "--kafka-port", str(ports["kafka"])],
        env=clean_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError("rlhf up exited:\n" + "".join(lines))
        lines.append(line)
        if line.startswith("Ctrl-C stops everything"):
            return process, lines
    raise AssertionError("rlhf up did not come up:\n" + "".join(lines))


def interrupt(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=180)  # generous: the machine may be busy with other work
    assert process.returncode == 0, out
    return out


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def ports_for_up() -> dict[str, int]:
    """`rlhf up` puts the services on consecutive ports: find a base whose next ones are free too."""
    while True:
        base = free_port()
        if base + len(SERVICES) < 65536 and all(port_is_free(base + i) for i in range(len(SERVICES))):
            return {"gateway": free_port(), "services": base, "kafka": free_port()}


async def test_up_keys_post_list_event_and_restart(tmp_path):
    data_dir = tmp_path / "state"
    ports = ports_for_up()
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    process, lines = start_up(data_dir, ports)
    try:
        banner = "".join(lines)
        assert f"Gateway: {gateway}" in banner
        assert "Admin API key for organization 'default'" in banner
        admin = next(lines[i + 1] for i, line in enumerate(lines) if line.startswith("Admin API key")).strip()
        # The command line finds the running stack and makes the key through its API, with that admin key.
        key = subprocess.run(
            [*RLHF, "keys", "create", "--role", "curator"],
            env={**clean_env(data_dir), "RLHF_URL": gateway, "RLHF_API_KEY": admin},
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
            r = await client.post(
                "/api/feedback", headers=headers,
                json={"query": "Is it up?", "response": "Yes.", "feedback_type": "thumbs_up"},
            )
            assert r.status_code == 201, r.text
            fid = r.json()["ids"][0]
            listed = (await client.get("/api/feedback", headers=headers)).json()["items"]
            assert [i["id"] for i in listed] == [fid]
        # Published by feedback's relay, which runs in a process of its own (its main process has no relay).
        probe = KafkaProbe(f"127.0.0.1:{ports['kafka']}")
        records = await probe.collect([FeedbackReceived.topic()], lambda rs: len(rs) >= 1, match=of_org("default"))
        assert envelope_of(records[0])["payload"]["feedback_id"] == fid
        running = [" ".join(p.cmdline()[1:]) for p in psutil.Process(process.pid).children(recursive=True)]
        assert "-m services.feedback.main --role api --role consumer --role background" in running
        assert running.count("-m services.feedback.main --role relay") == 1
        for service in ("feedback", "curation"):  # their consumer groups' second members
            assert running.count(f"-m services.{service}.main --role consumer") == 1
        # Each shows its metrics on the port the banner names.
        relay_metrics = next(line.split("metrics at ")[1].strip() for line in lines
                             if line.startswith("  feedback-relay (no API)"))
        async with httpx.AsyncClient(timeout=30) as client:
            published = f'rlhf_events_published_total{{service="feedback",topic="{FeedbackReceived.topic()}"}}'
            assert published in (await client.get(relay_metrics)).text
    finally:
        out = interrupt(process)
    assert "stopping" in out

    # Second start: same data dir, no new admin key, the feedback is still there.
    process, lines = start_up(data_dir, ports)
    try:
        assert "Admin API key" not in "".join(lines)
        async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
            listed = (await client.get("/api/feedback", headers=headers)).json()["items"]
        assert [i["id"] for i in listed] == [fid]
    finally:
        interrupt(process)
