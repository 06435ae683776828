"""End-to-end latency: from `POST /api/feedback` answering to the item being in curation's projection,
at steady offered rates, beside the raw broker's own produce-to-consume latency at the same rates.

    python -m bench.latency [--rates 200 2000] [--seconds 20]

The product path: the feedback API commits the item and its FeedbackReceived (outbox) → the relay,
woken by the NOTIFY sent after the commit, publishes → curation's consumer applies it and records the event in
processed_events. The time an item became visible is that row's `processed_at` (the consumer's
transaction start, a few milliseconds before its commit: the figure is a slight underestimate);
the time it was accepted is the client's clock when the 201 arrived (same machine, same clock).
Requests are open-loop: request i is sent at start + i / rate whatever the answers do, over 64
keep-alive connections driven by a minimal client (RawClient), which costs a fraction of httpx's CPU.

The raw baseline: aiokafka producing the same number of ~900-byte messages at the same rate (one
send_and_wait each, like the relay's single-row batches when idle) to a consumer in the same process
reading them as they come, with the product consumers' fetch wait (Tansu holds an empty fetch for
all of it even when records arrive, so it bounds both); latency = receive time − send time.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.rawhttp import RawClient

ROOT = Path(__file__).parent.parent
MODULES = ["services.feedback.main", "services.curation.main"]


def log(msg: str) -> None:
    print(f"[latency {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if not values:
        return {"n": 0}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"n": len(values), "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "max_ms": round(values[-1] * 1000, 1)}


async def product_run(port: int, key: str, engine, bootstrap: str, rate: float, seconds: float) -> dict[str, Any]:
    from sqlalchemy import text

    from shared.events import FeedbackReceived
    from shared.infra import read_topic

    n = int(rate * seconds)
    answered: dict[str, float] = {}
    errors, kinds = 0, {}
    session = f"latency-{uuid.uuid4().hex[:8]}"
    bodies = [orjson.dumps({"query": f"latency {i}", "response": "r", "feedback_type": "thumbs_up",
                            "session_id": session}) for i in range(n)]
    async with RawClient(port, {"authorization": f"Bearer {key}"}) as client:

        async def post(i: int) -> None:
            nonlocal errors
            try:
                status, answer = await client.post("/api/feedback", bodies[i])
            except (OSError, asyncio.IncompleteReadError) as exc:
                errors += 1
                kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
                return
            if status == 201:
                answered[orjson.loads(answer)["ids"][0]] = time.time()
            else:
                errors += 1
                kinds[str(status)] = kinds.get(str(status), 0) + 1

        start = time.monotonic()
        tasks = []
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(post(i)))
        offered_s = time.monotonic() - start
        await asyncio.gather(*tasks)
    # Visible when curation recorded the FeedbackReceived whose key is the item's id.
    stmt = text("""SELECT o.key, extract(epoch FROM p.processed_at)
                   FROM feedback.outbox o JOIN curation.processed_events p ON p.event_id = o.event_id
                   WHERE o.key = ANY(:ids)""")
    deadline = time.monotonic() + 120
    while True:
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt, {"ids": list(answered)})).all()
        seen = {k: float(t) for k, t in rows}
        if len(seen) == len(answered) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    visible = [i for i in answered if i in seen]
    # The Kafka record's timestamp (set when the relay handed the event to its producer) splits the path.
    published = {r.key.decode(): r.timestamp / 1000 for r in await read_topic(bootstrap, FeedbackReceived.topic())
                 if r.key and r.key.decode() in seen}
    split = [i for i in visible if i in published]
    return {"rate": rate, "sent": n, "achieved_rate": round(n / offered_s, 1), "errors": errors, "error_kinds": kinds,
            "not_visible": len(answered) - len(seen),
            **percentiles([max(0.0, seen[i] - answered[i]) for i in visible]),
            "to_relay": percentiles([max(0.0, published[i] - answered[i]) for i in split]),
            "relay_to_projection": percentiles([max(0.0, seen[i] - published[i]) for i in split])}


async def raw_run(bootstrap: str, rate: float, seconds: float) -> dict[str, Any]:
    from shared.infra import ensure_topics
    from shared.settings import Settings

    topic = f"bench.latency.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic], partitions=3)
    n = int(rate * seconds)
    received: dict[int, float] = {}
    sent: dict[int, float] = {}
    # The same fetch wait as the product's consumers: on Tansu it is the consumer's latency floor.
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"latency-{uuid.uuid4().hex}",
                                auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=1000,
                                fetch_max_wait_ms=Settings().rlhf_consumer_fetch_max_wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    payload = b"x" * 900
    try:
        async def consume() -> None:
            while len(received) < n:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.time()
                    for r in records:
                        received[int(r.key)] = now

        reader = asyncio.create_task(consume())
        await asyncio.sleep(2.0)  # the consumer's group join, before the clock starts
        start = time.monotonic()
        sends = []
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            sent[i] = time.time()
            sends.append(asyncio.ensure_future(producer.send_and_wait(topic, payload, key=str(i).encode())))
        await asyncio.gather(*sends)
        await asyncio.wait_for(reader, 60)
    finally:
        await producer.stop()
        await consumer.stop()
    return {"rate": rate, "sent": n, **percentiles([received[i] - sent[i] for i in sent if i in received])}


async def run(rates: list[float], seconds: float) -> dict[str, Any]:
    from rlhf.stack import Stack
    from shared import auth
    from shared.db import make_engine
    from shared.infra import free_port

    workdir = Path(tempfile.mkdtemp(prefix="rlhf-latency-"))
    stack = Stack(workdir, database_url=os.environ.get("DATABASE_URL") or None,
                  kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None, kafka_port=free_port(),
                  gateway_port=free_port(), services=MODULES,
                  service_ports={"feedback": free_port(), "curation": free_port()},
                  extra_env={"RLHF_LOG_LEVEL": "WARNING"})
    stack.start_infrastructure()
    engine = make_engine(stack.database_url, pool_size=2)
    results: dict[str, Any] = {"load_before": os.getloadavg(), "product": [], "raw": []}
    try:
        await stack.migrate()
        stack.start_services()
        key = await auth.create_key(engine, organization=f"latency-{uuid.uuid4().hex[:6]}", role=auth.Role.viewer)
        port = stack.port_of(next(s for s in stack.services.values() if s.name == "feedback"))
        await product_run(port, key, engine, stack.kafka_bootstrap, 50, 2)  # warm-up: connections, groups joined
        for rate in rates:
            log(f"product at {rate:g} items/s for {seconds:g}s")
            results["product"].append(await product_run(port, key, engine, stack.kafka_bootstrap, rate, seconds))
            log(f"raw broker at {rate:g} msgs/s for {seconds:g}s")
            results["raw"].append(await raw_run(stack.kafka_bootstrap, rate, seconds))
    finally:
        await engine.dispose()
        stack.discard()
    results["load_after"] = os.getloadavg()
    return results


def render(r: dict[str, Any]) -> str:
    lines = ["end-to-end latency, POST answered -> in curation's projection (raw: produce -> consume)"]
    for product, raw in zip(r["product"], r["raw"], strict=True):
        lines.append(
            f"  {product['rate']:>6g}/s offered ({product['achieved_rate']:g}/s sent, {product['errors']} errors, "
            f"{product['not_visible']} not visible): p50 {product.get('p50_ms')} ms, p99 {product.get('p99_ms')} ms, "
            f"max {product.get('max_ms')} ms | raw broker p50 {raw.get('p50_ms')} ms, p99 {raw.get('p99_ms')} ms"
        )
        for part in ("to_relay", "relay_to_projection"):
            lines.append(f"      {part}: p50 {product[part].get('p50_ms')} ms, p99 {product[part].get('p99_ms')} ms")
    lines.append(f"  load average before {r['load_before']}, after {r['load_after']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[200, 2000])
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    result = asyncio.run(run(args.rates, args.seconds))
    print(render(result))
    out = ROOT / "bench" / "results" / "latency-latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
