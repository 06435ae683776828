"""Chaos run: feedback submitted over HTTP and on the bus at once while roles are SIGKILLed at random
moments and restarted; at the end every item must be stored once, projected once, announced at
least once and applied once, with nothing dead-lettered and no consumer lag.

    python -m bench.chaos [--items 100000] [--kills 5] [--duration 60] [--seed 7]

The roles run as the product runs them, one process each (`python -m services.<name>.main --role`):
feedback api, feedback relay, feedback consumer, curation consumer, curation relay. Half the items
go to the feedback API in batches of 100 (a batch that fails is looked up by its session id before
it is sent again, as a careful client does: a batch is all or nothing, so present means committed),
half are published on rlhf.feedback.submitted.v1 by another platform service (each its own event
id). With no DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS the embedded PostgreSQL and Tansu run in a
temporary directory. `tests/rlhf/test_chaos.py` runs the same at 10,000 items in `make test`.
"""

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import func, select

ROOT = Path(__file__).parent.parent
BATCH = 100
ROLES = {
    "feedback-api": ("services.feedback.main", "api"),
    "feedback-relay": ("services.feedback.main", "relay"),
    "feedback-consumer": ("services.feedback.main", "consumer"),
    "curation-consumer": ("services.curation.main", "consumer"),
    "curation-relay": ("services.curation.main", "relay"),
}


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Roles:
    """One process per role; `kill` is SIGKILL, `start` starts it again the same way."""

    env: dict[str, str]
    logs: Path
    api_port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str) -> None:
        module, role = ROLES[name]
        # The API's port for the API alone: a process given a port without the API serves its probes there.
        env = dict(self.env, RLHF_HTTP_PORT=str(self.api_port)) if role == "api" else self.env
        out = open(self.logs / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module, "--role", role], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
        )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def item(i: int, session: str) -> dict[str, Any]:
    return {"query": f"chaos item {i}", "response": "r", "feedback_type": "thumbs_up", "session_id": session}


async def submit_http(base: str, headers: dict[str, str], first: int, count: int, pace: float) -> int:
    """Batches of BATCH items; a failed batch is sent again only if its session id is not stored."""
    retries = 0
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
        for start in range(first, first + count, BATCH):
            session = f"chaos-http-{start}"
            body = {"items": [item(i, session) for i in range(start, min(start + BATCH, first + count))]}
            while True:
                try:
                    r = await client.post("/api/feedback/batch", json=body)
                    if r.status_code == 201:
                        break
                except httpx.HTTPError:
                    pass
                retries += 1
                await asyncio.sleep(0.2)
                try:
                    found = await client.get("/api/feedback", params={"session_id": session, "limit": 1})
                    if found.status_code == 200 and found.json()["items"]:
                        break  # the lost answer's batch was committed
                except httpx.HTTPError:
                    pass  # the API is down: try the batch again (it was not stored if we cannot see it)
            await asyncio.sleep(pace)
    return retries


async def submit_bus(bootstrap: str, organization: str, first: int, count: int, pace: float) -> None:
    from shared.events import FeedbackSubmitted
    from shared.outbox import encode

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        for start in range(first, first + count, BATCH):
            sends = []
            for i in range(start, min(start + BATCH, first + count)):
                event = FeedbackSubmitted(**item(i, f"chaos-bus-{start}"))
                message = encode(event, organization=organization, producer="chaos")
                sends.append(await producer.send(event.topic(), message.envelope.encode(), key=message.key.encode()))
            await asyncio.gather(*sends)
            await asyncio.sleep(pace)
    finally:
        await producer.stop()


async def kill_at_random(roles: Roles, rng: random.Random, kills: int, window: float) -> list[dict[str, Any]]:
    """Kills at random moments of the window; the roles in a random order, each once before any twice."""
    made = []
    order = rng.sample(sorted(ROLES), len(ROLES))
    start = time.monotonic()
    for n, at in enumerate(sorted(rng.uniform(0.5, window) for _ in range(kills))):
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        name = order[n % len(order)]
        roles.kill(name)
        down = rng.uniform(0.0, 2.0)
        await asyncio.sleep(down)
        roles.start(name)
        made.append({"role": name, "at_s": round(time.monotonic() - start, 2), "down_s": round(down, 2)})
        log(f"killed and restarted {name}")
    return made


async def lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Messages not yet committed by `group`: high-water marks (from reading the topics, since the
    embedded broker's ListOffsets is wrong after batched produce) minus committed offsets."""
    from shared.infra import read_topic

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        behind = 0
        for topic in topics:
            ends: dict[int, int] = {}
            for record in await read_topic(bootstrap, topic):
                ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
            for partition, end in ends.items():
                committed = await consumer.committed(TopicPartition(topic, partition)) or 0
                behind += max(0, end - committed)
        return behind
    finally:
        await consumer.stop()


async def chaos(database_url: str, bootstrap: str, workdir: Path, *, items: int, kills: int, duration: float,
                seed: int) -> dict[str, Any]:
    from rlhf.stack import migrate_all
    from services.curation.models import FeedbackView
    from services.curation.models import processed_events as curation_processed
    from services.feedback.models import Feedback
    from shared import auth
    from shared.db import make_engine
    from shared.events import FeedbackReceived, FeedbackReviewed, FeedbackSubmitted, dlq_topic
    from shared.infra import ensure_topics, free_port, read_topic
    from shared.service import load_specs

    rng = random.Random(seed)
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    modules = ["services.feedback.main", "services.curation.main"]
    await migrate_all(database_url, modules)
    await ensure_topics(bootstrap, [t for spec in load_specs(modules).values() for t in spec.topics])
    engine = make_engine(database_url, pool_size=2)
    organization = f"chaos-{uuid.uuid4().hex[:8]}"
    key = await auth.create_key(engine, organization=organization, role=auth.Role.curator)
    env = {
        **os.environ, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RLHF_DATA_DIR": str(workdir), "RLHF_LOG_LEVEL": "WARNING", "RLHF_SERVICES": ",".join(modules),
        "RLHF_CONSUMER_SESSION_TIMEOUT_MS": "6000", "RLHF_CONSUMER_HEARTBEAT_INTERVAL_MS": "1000",
    }
    roles = Roles(env, workdir / "logs", free_port())
    for name in ROLES:
        roles.start(name)
    base = f"http://127.0.0.1:{roles.api_port}"
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                if (await client.get(base + "/healthz")).status_code == 200:
                    break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)

    half = items // 2
    batches = max(1, half // BATCH)
    pace = duration / batches
    stored = select(func.count()).select_from(Feedback).where(Feedback.organization == organization)
    projected = select(func.count()).select_from(FeedbackView).where(FeedbackView.organization == organization)
    try:
        log(f"{items:,} items over ~{duration:.0f}s, {kills} kills, seed {seed}")
        started = time.monotonic()
        http, _, kills_made = await asyncio.gather(
            submit_http(base, {"Authorization": f"Bearer {key}"}, 0, half, pace),
            submit_bus(bootstrap, organization, half, items - half, pace),
            kill_at_random(roles, rng, kills, duration),
        )
        submitted_s = time.monotonic() - started
        last_kill = time.monotonic()
        log("submitted; waiting for the projection to drain")
        deadline = time.monotonic() + 600
        while True:
            async with engine.connect() as conn:
                in_feedback = (await conn.execute(stored)).scalar_one()
                in_curation = (await conn.execute(projected)).scalar_one()
            if in_feedback >= items and in_curation >= items:
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        drain_s = time.monotonic() - last_kill
        async with engine.connect() as conn:
            distinct = (await conn.execute(
                select(func.count(func.distinct(Feedback.query))).where(Feedback.organization == organization)
            )).scalar_one()
            ids = set((await conn.execute(select(Feedback.id).where(Feedback.organization == organization))).scalars())
            applied = (await conn.execute(select(func.count()).select_from(curation_processed).where(
                curation_processed.c.topic == FeedbackReceived.topic()))).scalar_one()
        org_header = organization.encode()
        received = [r for r in await read_topic(bootstrap, FeedbackReceived.topic())
                    if dict(r.headers).get("organization") == org_header]
        announced = {orjson.loads(r.value)["payload"]["feedback_id"] for r in received}
        event_ids = {orjson.loads(r.value)["event_id"] for r in received}
        dead = 0
        for event_type in (FeedbackSubmitted, FeedbackReceived, FeedbackReviewed):
            dead += len(await read_topic(bootstrap, dlq_topic(event_type.topic())))
        return {
            "items": items, "seed": seed, "kills": kills_made, "http_retries": http,
            "submitted_s": round(submitted_s, 2), "drain_after_last_kill_s": round(drain_s, 2),
            "stored": in_feedback, "stored_distinct": distinct, "projected": in_curation,
            "announced_items": len(announced & {str(i) for i in ids}), "announcements": len(received),
            "announced_events": len(event_ids), "applied_events": applied, "dead_lettered": dead,
            "lag_feedback": await lag(bootstrap, "rlhf.feedback", [FeedbackSubmitted.topic()]),
            "lag_curation": await lag(bootstrap, "rlhf.curation",
                                      [FeedbackReceived.topic(), FeedbackReviewed.topic()]),
        }
    finally:
        roles.stop_all()
        await engine.dispose()


def render(r: dict[str, Any]) -> str:
    kills = ", ".join(f"{k['role']} at {k['at_s']}s (down {k['down_s']}s)" for k in r["kills"])
    return "\n".join([
        f"chaos run: {r['items']:,} items (half HTTP, half bus), seed {r['seed']}",
        f"  kills: {len(r['kills'])}: {kills}",
        f"  stored {r['stored']:,} ({r['stored_distinct']:,} distinct) · projected {r['projected']:,} · "
        f"announced {r['announced_items']:,} items in {r['announcements']:,} messages "
        f"({r['announced_events']:,} events) · applied {r['applied_events']:,} · dead-lettered {r['dead_lettered']}",
        f"  lost {r['items'] - r['stored_distinct']:,} · duplicated {r['stored'] - r['stored_distinct']:,} · "
        f"lag feedback {r['lag_feedback']} · lag curation {r['lag_curation']} · HTTP retries {r['http_retries']}",
        f"  submitted in {r['submitted_s']}s; drained {r['drain_after_last_kill_s']}s after the last kill",
    ])


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    from rlhf.stack import Stack
    from shared.infra import free_port

    workdir = Path(tempfile.mkdtemp(prefix="rlhf-chaos-"))
    stack = Stack(workdir, database_url=os.environ.get("DATABASE_URL") or None,
                  kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None, kafka_port=free_port())
    stack.start_infrastructure()
    try:
        result = await chaos(stack.database_url, stack.kafka_bootstrap, workdir, items=args.items, kills=args.kills,
                             duration=args.duration, seed=args.seed)
    except BaseException:
        stack.stop()
        log(f"the run's data and logs are kept in {workdir}")
        raise
    stack.discard()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds over which items are submitted")
    parser.add_argument("--seed", type=int, default=7)
    result = asyncio.run(_main(parser.parse_args()))
    print(render(result))
    out = ROOT / "bench" / "results" / "chaos-latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
