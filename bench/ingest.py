"""Feedback ingest benchmark: product figures next to raw baselines measured in the same run.

    python -m bench.ingest            (or: rlhf bench ingest --batches 80 --singles 2000)

Raw baselines (what the machine can do without the product):
  * asyncpg COPY (copy_records_to_table) into a scratch table in schema `bench_raw`;
  * aiokafka batched produce, the relay's producer settings, two ways: `send()` each message and
    gather a thousand at a time (aiokafka's usual API; the baseline issue 14's target names), and
    record batches built per partition and handed over whole (its batch API, as the relay sends);
  * a bare FastAPI `POST /echo` under uvicorn, driven by the same HTTP load generator.
Product figures (the feedback service as real processes, `python -m services.feedback.main`):
  * batch ingest, committed-only and committed-and-published (outbox backlog 0);
  * single POST throughput and latency;
  * outbox relay events/s (relay started on a full outbox);
  * consumer events/s (consumer started on a full topic).
Beside them: the bare endpoint and single POST again under a minimal raw-socket client (httpx is
itself the limit of the bare figure on 2 cores), and, per phase, the CPU used by the client, the
service, PostgreSQL, Tansu and everything else on the machine (docs/benchmarks.md explains each).

With no DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS the embedded PostgreSQL and Tansu broker are started
in a temporary directory and removed at the end. The table goes to stdout; progress to stderr; the
figures also go to bench/results/ingest-latest.json.
"""

import asyncio
import importlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import BaseModel

from bench.rawhttp import RawClient

RESULTS = Path(__file__).parent / "results" / "ingest-latest.json"
SERVICE_MODULE = "services.feedback.main"
SUBMITTED_TOPIC = "rlhf.feedback.submitted.v1"
RAW_TOPIC = "bench.raw.produce"
RAW_SCHEMA = "bench_raw"
BATCH_SIZE = 1000
CONSUMER_TARGET = 20_000  # events/s, a service's consumer group as `rlhf up` runs it (issue 14)
BATCH_CONCURRENCY = 4
SINGLE_CONCURRENCY = 16
RELAY_BATCH_CONCURRENCY = 4


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# The bare endpoint (served by uvicorn in a subprocess: `uvicorn bench.ingest:echo_app --factory`)


class EchoIn(BaseModel):
    session_id: str | None = None
    query: str
    response: str
    feedback_type: str
    feedback_value: dict[str, Any] = {}
    tags: list[str] = []


class EchoOut(BaseModel):
    ids: list[uuid.UUID]
    count: int


def echo_app():
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/echo", status_code=201, response_model=EchoOut)
    async def echo(item: EchoIn) -> EchoOut:
        return EchoOut(ids=[uuid.uuid4()], count=1)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return app


# ---------------------------------------------------------------------------------------------------
# Data


def feedback_item(i: int) -> dict[str, Any]:
    """One realistic submission: ~330 bytes of JSON, ~880 bytes as a FeedbackReceived envelope."""
    return {
        "session_id": f"sess-{i % 997:04d}",
        "query": f"How do I rotate the API keys of project {i} without downtime for the running workers?",
        "response": (
            "Create a second key, roll it out to every worker through the secret store, wait until the "
            f"old key has no traffic in the access log (item {i}), then revoke it from the console."
        ),
        "feedback_type": "rating",
        "feedback_value": {"rating": 1 + i % 5},
        "tags": ["bench"],
    }


def batch_body(start: int) -> bytes:
    return orjson.dumps({"items": [feedback_item(start + j) for j in range(BATCH_SIZE)]})


# ---------------------------------------------------------------------------------------------------
# CPU accounting: who burnt the 2 cores during a phase


class CpuMeter:
    def __init__(self) -> None:
        self.groups: dict[str, Callable[[], list[psutil.Process]]] = {}
        self.reaped: dict[str, bool] = {}

    def add(self, name: str, procs: Callable[[], list[psutil.Process]], *, reaped: bool = False) -> None:
        """`reaped`: also count the root's exited children (PostgreSQL backends come and go)."""
        self.groups[name] = procs
        self.reaped[name] = reaped

    def _sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, procs in self.groups.items():
            out[name] = _cpu_seconds(procs(), reaped=self.reaped[name])
        t = psutil.cpu_times()
        out["machine"] = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        return out

    def start(self) -> "CpuSpan":
        return CpuSpan(self, self._sample(), time.perf_counter())


@dataclass
class CpuSpan:
    meter: CpuMeter
    before: dict[str, float]
    t0: float

    def stop(self) -> dict[str, float]:
        """CPU seconds per group during the span, and the wall time, as 'cores busy' (cpu/wall)."""
        after = self.meter._sample()
        wall = time.perf_counter() - self.t0
        out = {k: round((after.get(k, 0.0) - v) / wall, 2) for k, v in self.before.items()}
        # Whatever else ran on the machine meanwhile (other people's tests, the kernel's own work).
        out["other"] = round(out.pop("machine") - sum(out.values()), 2)
        return out


def _tree(pid: int | None) -> list[psutil.Process]:
    if not pid:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _cpu_seconds(procs: list[psutil.Process], *, reaped: bool) -> float:
    """User + system seconds of the processes, plus with `reaped` (for the first, the tree's root) of
    its children that have exited and been reaped, so a PostgreSQL backend ending mid-phase counts."""
    total = 0.0
    for i, p in enumerate(procs):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
        if reaped and i == 0:
            total += t.children_user + t.children_system
    return total


# ---------------------------------------------------------------------------------------------------
# HTTP load generator: the same for the bare endpoint and the product


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        s = sorted(self.latencies_ms)
        return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


async def http_load(
    base_url: str, path: str, bodies: Callable[[int], bytes], n: int, concurrency: int, headers: dict[str, str]
) -> LoadResult:
    """n POSTs with `concurrency` in flight over a pool of `concurrency` keep-alive connections; every
    answer must be 201. Bodies are built before the clock starts."""
    payloads = [bodies(i) for i in range(n)]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    hdrs = {"content-type": "application/json", **headers}
    latencies: list[float] = []
    next_i = 0
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=300.0) as client:

        async def worker() -> None:
            nonlocal next_i
            while next_i < n:
                i = next_i
                next_i += 1
                t = time.perf_counter()
                r = await client.post(path, content=payloads[i], headers=hdrs)
                latencies.append((time.perf_counter() - t) * 1000)
                if r.status_code != 201:
                    raise RuntimeError(f"POST {path} answered {r.status_code}: {r.text[:300]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return LoadResult(n, elapsed, latencies)


async def raw_http_load(
    port: int, path: str, bodies: Callable[[int], bytes], n: int, concurrency: int, headers: dict[str, str]
) -> LoadResult:
    """A supplementary generator: `concurrency` keep-alive HTTP/1.1 connections written to and read
    from with bare asyncio streams (bench.rawhttp, bodies pre-encoded). It costs a fraction of httpx's
    CPU per request, so on a 2-core machine it shows how much of a figure the client itself was eating."""
    payloads = [bodies(i) for i in range(n)]
    latencies: list[float] = []
    next_i = 0
    async with RawClient(port, headers, connections=concurrency) as client:

        async def worker() -> None:
            nonlocal next_i
            while next_i < n:
                i = next_i
                next_i += 1
                t = time.perf_counter()
                status, body = await client.post(path, payloads[i])
                latencies.append((time.perf_counter() - t) * 1000)
                if status != 201:
                    raise RuntimeError(f"POST {path} answered {status}: {body[:300]!r}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return LoadResult(n, time.perf_counter() - t0, latencies)


# ---------------------------------------------------------------------------------------------------
# Processes


def wait_http(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}: {tail(log_path)}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer: {tail(log_path)}")


def tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def stop_process(process: subprocess.Popen | None) -> None:
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class Services:
    """Starts `python -m services.feedback.main --role ...` processes with the bench's environment."""

    def __init__(self, stack, logs: Path):
        self.stack = stack
        self.logs = logs
        self.running: list[subprocess.Popen] = []

    def start(self, *roles: str, name: str, module: str = SERVICE_MODULE) -> tuple[subprocess.Popen, int, Path]:
        from shared.infra import free_port

        port = free_port()
        env = self.stack.env(RLHF_HTTP_PORT=str(port), RLHF_HTTP_HOST="127.0.0.1", RLHF_LOG_LEVEL="WARNING")
        log_path = self.logs / f"{name}.log"
        args = [sys.executable, "-m", module]
        for role in roles:
            args += ["--role", role]
        process = subprocess.Popen(
            args, env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent
        )
        self.running.append(process)
        if "api" in roles:
            wait_http(f"http://127.0.0.1:{port}/healthz", process, log_path)
        return process, port, log_path

    def stop(self, process: subprocess.Popen) -> None:
        stop_process(process)
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in list(self.running):
            self.stop(process)


# ---------------------------------------------------------------------------------------------------
# Phases


async def raw_copy(dsn: str, rows: int, chunk: int = BATCH_SIZE) -> dict[str, Any]:
    """COPY `rows` rows, `chunk` rows per COPY (each its own committed transaction, like one batch
    request), on one connection, into a uuid-keyed 6-column table."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE; CREATE SCHEMA {RAW_SCHEMA}")
        await conn.execute(
            f"CREATE TABLE {RAW_SCHEMA}.rows (id uuid PRIMARY KEY, organization text, query text, "
            "response text, feedback_value jsonb, created_at timestamptz)"
        )
        now = datetime.now(UTC)
        records = []
        for i in range(rows):
            item = feedback_item(i)
            records.append(
                (uuid.uuid4(), "bench-raw", item["query"], item["response"],
                 orjson.dumps(item["feedback_value"]).decode(), now)
            )
        t0 = time.perf_counter()
        for start in range(0, rows, chunk):
            await conn.copy_records_to_table(
                "rows", schema_name=RAW_SCHEMA, records=records[start : start + chunk],
                columns=["id", "organization", "query", "response", "feedback_value", "created_at"],
            )
        elapsed = time.perf_counter() - t0
        return {"rows": rows, "rows_per_copy": chunk, "seconds": round(elapsed, 3), "rows_per_s": rows / elapsed}
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {RAW_SCHEMA} CASCADE")
        await conn.close()


async def produce_gathered(producer: AIOKafkaProducer, topic: str, messages: list[tuple[bytes, bytes]],
                           chunk: int = BATCH_SIZE) -> float:
    """The relay's pattern: `await send()` each message of a chunk, then gather the chunk's futures."""
    t0 = time.perf_counter()
    for start in range(0, len(messages), chunk):
        futures = [await producer.send(topic, value=v, key=k) for k, v in messages[start : start + chunk]]
        await asyncio.gather(*futures)
    return time.perf_counter() - t0


async def produce_record_batches(producer: AIOKafkaProducer, topic: str, messages: list[tuple[bytes, bytes]],
                                 chunk: int = BATCH_SIZE) -> float:
    """The relay's pattern: each chunk as one record batch per partition (aiokafka's batch API, through
    the relay's own `send_record_batches`), then gather the batches' acknowledgements."""
    from shared.outbox import send_record_batches

    t0 = time.perf_counter()
    for start in range(0, len(messages), chunk):
        records = [(topic, k, v, []) for k, v in messages[start : start + chunk]]
        await asyncio.gather(*await send_record_batches(producer, records))
    return time.perf_counter() - t0


async def raw_produce(bootstrap: str, n: int, size: int) -> dict[str, Any]:
    from shared.infra import ensure_topics

    await ensure_topics(bootstrap, [RAW_TOPIC])
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks="all", linger_ms=5,
        max_batch_size=1_048_576, max_request_size=16_777_216,
    )
    await producer.start()
    try:
        pad = b"x" * size
        messages = [(str(uuid.uuid4()).encode(), pad) for _ in range(n)]
        await produce_gathered(producer, RAW_TOPIC, messages[:2000])  # connect, metadata, warm
        elapsed = await produce_gathered(producer, RAW_TOPIC, messages)
        await produce_record_batches(producer, RAW_TOPIC, messages[:2000])
        batched = await produce_record_batches(producer, RAW_TOPIC, messages)
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        await admin.delete_topics([RAW_TOPIC])
    except Exception as exc:  # a scratch topic left on an in-memory broker is harmless
        log(f"could not delete {RAW_TOPIC}: {exc!r}")
    finally:
        await admin.close()
    return {"messages": n, "bytes_each": size, "messages_per_gather": BATCH_SIZE,
            "seconds": round(elapsed, 3), "msgs_per_s": n / elapsed,
            "record_batches": {"seconds": round(batched, 3), "msgs_per_s": n / batched}}


async def bare_endpoint(n: int, concurrency: int, logs: Path, meter: CpuMeter) -> dict[str, Any]:
    from shared.infra import free_port

    port = free_port()
    log_path = logs / "bare-echo.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.ingest:echo_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log"],
        stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process, log_path)
        meter.add("bare uvicorn", lambda: [psutil.Process(process.pid)])
        base = f"http://127.0.0.1:{port}"
        body = lambda i: orjson.dumps(feedback_item(i))  # noqa: E731
        await http_load(base, "/echo", body, min(500, n), concurrency, {})  # warm-up
        span = meter.start()
        res = await http_load(base, "/echo", body, n, concurrency, {})
        cpu = span.stop()
        span = meter.start()
        raw = await raw_http_load(port, "/echo", body, n, concurrency, {})
        raw_cpu = span.stop()
    finally:
        stop_process(process)
        meter.add("bare uvicorn", lambda: [])
    return {"requests": n, "concurrency": concurrency, "seconds": round(res.seconds, 3), "rps": res.rps,
            "p50_ms": res.pct(0.50), "p99_ms": res.pct(0.99), "cpu_cores": cpu,
            "minimal_client": _minimal(raw, raw_cpu)}


def _minimal(res: LoadResult, cpu: dict[str, float]) -> dict[str, Any]:
    return {"seconds": round(res.seconds, 3), "rps": res.rps, "p50_ms": res.pct(0.50), "p99_ms": res.pct(0.99),
            "cpu_cores": cpu}


class Db:
    """The benchmark's own polling connection. The probes polled in a loop are index lookups (EXISTS,
    min(id) of the outbox's pending ids, primary keys), so that polling costs PostgreSQL next to nothing;
    counts are taken only once per phase."""

    def __init__(self, conn: asyncpg.Connection):
        self.conn = conn

    async def backlog(self) -> int:
        return await self.conn.fetchval("SELECT count(*) FROM feedback.outbox_pending")

    async def drained(self) -> bool:
        return not await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM feedback.outbox_pending)"
        )

    async def first_unpublished(self) -> int | None:
        return await self.conn.fetchval("SELECT min(id) FROM feedback.outbox_pending")

    async def count_org(self, org: str, table: str = "feedback.rlhf_feedback") -> int:
        return await self.conn.fetchval(f"SELECT count(*) FROM {table} WHERE organization = $1", org)

    async def any_of_org(self, org: str, table: str = "feedback.rlhf_feedback") -> bool:
        return await self.conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE organization = $1)", org)

    async def processed(self, event_ids: list[uuid.UUID], schema: str = "feedback") -> int:
        return await self.conn.fetchval(
            f"SELECT count(*) FROM {schema}.processed_events WHERE event_id = ANY($1::uuid[])", event_ids
        )


async def poll_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str,
                     interval: float = 0.02) -> float:
    deadline = time.perf_counter() + timeout
    while not await check():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout:.0f}s")
        await asyncio.sleep(interval)
    return time.perf_counter()


async def batch_ingest(base: str, headers: dict[str, str], db: Db, batches: int, meter: CpuMeter) -> dict[str, Any]:
    # Warm-up: the auth cache, the pools, the producer; then an empty backlog before the clock starts.
    await http_load(base, "/api/feedback/batch", lambda i: batch_body(10_000_000 + i * BATCH_SIZE), 2, 2, headers)
    await poll_until(db.drained, 120, "warm-up backlog drained")
    payloads = [batch_body(i * BATCH_SIZE) for i in range(batches)]
    span = meter.start()
    t0 = time.perf_counter()
    res = await http_load(base, "/api/feedback/batch", lambda i: payloads[i], batches, BATCH_CONCURRENCY, headers)
    t_committed = time.perf_counter()
    backlog_at_commit = await db.backlog()
    t_published = await poll_until(db.drained, 300, "batch ingest backlog drained")
    cpu = span.stop()
    items = batches * BATCH_SIZE
    return {
        "items": items, "batches": batches, "items_per_batch": BATCH_SIZE, "concurrency": BATCH_CONCURRENCY,
        "committed_seconds": round(t_committed - t0, 3),
        "committed_items_per_s": items / (t_committed - t0),
        "published_seconds": round(t_published - t0, 3),
        "published_items_per_s": items / (t_published - t0),
        "backlog_at_last_response": backlog_at_commit,
        "batch_p50_ms": res.pct(0.50), "batch_p99_ms": res.pct(0.99),
        "cpu_cores": cpu,
    }


async def _eq(value: Awaitable[int], target: int) -> bool:
    return (await value) == target


async def single_posts(base: str, headers: dict[str, str], n: int, meter: CpuMeter) -> dict[str, Any]:
    body = lambda i: orjson.dumps(feedback_item(i))  # noqa: E731
    await http_load(base, "/api/feedback", body, min(500, n), SINGLE_CONCURRENCY, headers)  # warm-up
    span = meter.start()
    res = await http_load(base, "/api/feedback", body, n, SINGLE_CONCURRENCY, headers)
    cpu = span.stop()
    span = meter.start()
    raw = await raw_http_load(httpx.URL(base).port, "/api/feedback", body, n, SINGLE_CONCURRENCY, headers)
    raw_cpu = span.stop()
    return {"requests": n, "concurrency": SINGLE_CONCURRENCY, "seconds": round(res.seconds, 3), "rps": res.rps,
            "p50_ms": res.pct(0.50), "p99_ms": res.pct(0.99), "cpu_cores": cpu,
            "minimal_client": _minimal(raw, raw_cpu)}


async def relay_phase(services: Services, headers: dict[str, str], db: Db, n: int,
                      meter: CpuMeter) -> dict[str, Any]:
    """Fill the outbox through an api-only process, then time a relay-only process draining it."""
    api, port, _ = services.start("api", name="feedback-api-only")
    try:
        base = f"http://127.0.0.1:{port}"
        batches = n // BATCH_SIZE
        t0 = time.perf_counter()
        await http_load(base, "/api/feedback/batch", lambda i: batch_body(20_000_000 + i * BATCH_SIZE),
                        batches, RELAY_BATCH_CONCURRENCY, headers)
        fill_seconds = time.perf_counter() - t0
    finally:
        services.stop(api)
    backlog = await db.backlog()
    head = await db.first_unpublished()
    log(f"outbox holds {backlog} unpublished rows (filled in {fill_seconds:.1f}s); starting the relay")
    span = meter.start()
    t_start = time.perf_counter()
    relay, _, _ = services.start("relay", name="feedback-relay-only")
    meter.add("service", lambda: _tree(relay.pid))
    try:
        first: list[tuple[float, int]] = []

        async def started() -> bool:
            if await db.first_unpublished() != head:  # the oldest row went out: the first batch is in
                t = time.perf_counter()
                first.append((t, await db.backlog()))
                return True
            return False

        await poll_until(started, 120, "relay started publishing")
        t_done = await poll_until(db.drained, 600, "relay drained the outbox")
        cpu = span.stop()
    finally:
        services.stop(relay)
    t_first, b_first = first[0]
    return {
        "events": backlog, "fill_seconds": round(fill_seconds, 3),
        "seconds_from_spawn": round(t_done - t_start, 3),
        "events_per_s_from_spawn": backlog / (t_done - t_start),
        "startup_seconds": round(t_first - t_start, 3),
        "steady_events_per_s": b_first / (t_done - t_first) if t_done > t_first else None,
        "cpu_cores": cpu,
    }


@dataclass(frozen=True)
class ConsumerCase:
    """The consumer-only processes of `service` (as many as `rlhf up` runs), timed on its topic
    filled beforehand with n events."""

    service: str
    event: Callable[[int], Any]  # the i-th event (an shared.events.Event)
    table: str  # where an applied event lands, as a row with an organization column

    @property
    def keyed(self) -> bool:  # keyed by feedback id as the feedback relay keys them, or unkeyed as other producers may
        return self.service != "feedback"


def _submitted(i: int):
    from shared.events import FeedbackSubmitted

    return FeedbackSubmitted.model_validate(feedback_item(i))


def _received(i: int):
    from shared.events import FeedbackReceived

    return FeedbackReceived.model_validate(
        feedback_item(i) | {"feedback_id": uuid.uuid4(), "created_at": datetime.now(UTC), "source": "bus"}
    )


FEEDBACK_CONSUMER = ConsumerCase("feedback", _submitted, "feedback.rlhf_feedback")
CURATION_CONSUMER = ConsumerCase("curation", _received, "curation.feedback_projection")


async def consumer_phase(services: Services, bootstrap: str, db: Db, n: int, meter: CpuMeter,
                         case: ConsumerCase = FEEDBACK_CONSUMER) -> dict[str, Any]:
    """Publish n events first, then time the consumer-only processes of the case's service applying them."""
    org = f"bench-consumer-{uuid.uuid4().hex[:8]}"
    messages, event_ids = [], []
    topic = None
    for i in range(n):
        # Each envelope with its own correlation id (the default), as independent producers send them.
        event = case.event(i)
        topic = event.topic()
        event_id = uuid.uuid4()
        wire = event.to_wire(event_id=event_id, organization=org, producer="bench", correlation_id=str(event_id))
        event_ids.append(event_id)
        messages.append((str(event.feedback_id).encode() if case.keyed else None, wire.encode()))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, acks="all", linger_ms=5,
        max_batch_size=1_048_576, max_request_size=16_777_216,
    )
    await producer.start()
    last_of_partition: dict[int, uuid.UUID] = {}
    first_of_partition: dict[int, int] = {}
    try:
        t0 = time.perf_counter()
        for start in range(0, n, BATCH_SIZE):
            chunk = messages[start : start + BATCH_SIZE]
            futures = [await producer.send(topic, value=v, key=k) for k, v in chunk]
            for j, meta in enumerate(await asyncio.gather(*futures)):
                last_of_partition[meta.partition] = event_ids[start + j]
                first_of_partition.setdefault(meta.partition, meta.offset)
        publish_seconds = time.perf_counter() - t0
    finally:
        await producer.stop()
    # One consumer applies a partition's batches in offset order, so the last event of every partition
    # being processed means all of them are (checked by a full count at the end).
    tails = list(last_of_partition.values())
    # The service's consumer group starts at the phase's own events: what earlier phases left on the
    # topic (the curation consumer's: every FeedbackReceived of the ingest phases, ~145,000) would
    # otherwise be applied in the timed window too, uncounted.
    await start_group_at(bootstrap, f"rlhf.{case.service}", topic, first_of_partition)
    log(f"{n:,} events on {topic} in {publish_seconds:.1f}s; starting a {case.service} consumer")
    span = meter.start()
    t_start = time.perf_counter()
    # As many members of the service's consumer group as `rlhf up` runs, each its own process.
    module = f"services.{case.service}.main"
    members = importlib.import_module(module).SPEC.consumer_processes
    consumers = [services.start("consumer", name=f"{case.service}-consumer-{n}", module=module)[0]
                 for n in range(1, members + 1)]
    meter.add("service", lambda: [p for c in consumers for p in _tree(c.pid)])
    try:
        first: list[tuple[float, int]] = []

        async def started() -> bool:
            if await db.any_of_org(org, case.table):
                t = time.perf_counter()
                first.append((t, await db.count_org(org, case.table)))
                return True
            return False

        await poll_until(started, 120, "consumer stored its first rows")
        schema = case.table.split(".")[0]
        t_done = await poll_until(lambda: _eq(db.processed(tails, schema), len(tails)), 600,
                                  "consumer stored every event")
        cpu = span.stop()
        stored = await db.count_org(org, case.table)
        if stored != n:
            raise RuntimeError(f"consumer stored {stored} of {n} events")
    finally:
        for consumer in consumers:
            services.stop(consumer)
    t_first, c_first = first[0]
    return {
        "events": n, "bytes_each": len(messages[0][1]), "publish_seconds": round(publish_seconds, 3),
        "consumer_processes": members,
        "seconds_from_spawn": round(t_done - t_start, 3),
        "events_per_s_from_spawn": n / (t_done - t_start),
        "startup_seconds": round(t_first - t_start, 3),
        "steady_events_per_s": (n - c_first) / (t_done - t_first) if t_done > t_first else None,
        "cpu_cores": cpu,
    }


async def start_group_at(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commits `group`'s offsets on `topic` at `offsets` (partition -> offset), as if the group had
    consumed everything before them."""
    # As a member of the group (the broker refuses commits from outside it), alone in it, and leaving
    # it cleanly before the service's consumer joins.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_records=1)
    await consumer.start()
    try:
        consumer.subscribe([topic])
        partitions = [TopicPartition(topic, p) for p in offsets]
        deadline = time.monotonic() + 60
        while set(consumer.assignment()) != set(partitions):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{group}: assigned {consumer.assignment()}, the phase's events are on {partitions}")
            await consumer.getmany(timeout_ms=200)
        await consumer.commit({tp: offsets[tp.partition] for tp in partitions})
        for tp in partitions:
            if await consumer.committed(tp) != offsets[tp.partition]:
                raise RuntimeError(f"{group}: offset of {tp} not committed")
    finally:
        await consumer.stop()


# ---------------------------------------------------------------------------------------------------
# Report


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def render(r: dict[str, Any]) -> str:
    b, p = r["baselines"], r["product"]
    copy, prod, bare = b["asyncpg_copy"], b["aiokafka_produce"], b["fastapi_bare"]
    bi, sp, rl, co, cc = p["batch_ingest"], p["single_post"], p["relay"], p["consumer"], p["curation_consumer"]
    t = r["targets"]
    lines = [
        f"## Ingest benchmark — {r['machine']['nproc']} cores, Python {r['machine']['python']}, {r['finished_at']}",
        "",
        "| Figure | Value | Baseline (same run) | Ratio | Target |",
        "|---|---:|---:|---:|---|",
        f"| Raw asyncpg COPY ({copy['rows']:,} rows, {copy['rows_per_copy']:,}/COPY) | "
        f"{fmt(copy['rows_per_s'])} rows/s | — | — | — |",
        f"| Raw aiokafka produce ({prod['messages']:,} × {prod['bytes_each']} B, "
        f"gather/{prod['messages_per_gather']:,}) | "
        f"{fmt(prod['msgs_per_s'])} msgs/s | — | — | — |",
        f"| Raw aiokafka produce, the same in record batches per partition (batch API) | "
        f"{fmt(prod['record_batches']['msgs_per_s'])} msgs/s | — | — | — |",
        f"| Bare FastAPI POST /echo ({bare['requests']:,} req, c={bare['concurrency']}) | "
        f"{fmt(bare['rps'])} req/s (p50 {fmt(bare['p50_ms'], 1)} / p99 {fmt(bare['p99_ms'], 1)} ms) | — | — | — |",
        f"| Batch ingest, committed + published ({bi['items']:,} items, {bi['batches']}×{bi['items_per_batch']:,}, "
        f"c={bi['concurrency']}) | {fmt(bi['published_items_per_s'])} feedback/s | "
        f"{fmt(prod['msgs_per_s'])} msgs/s (raw produce) | {t['batch_vs_produce']['ratio']:.2f}× | "
        f"≥ 0.5× **{t['batch_vs_produce']['verdict']}** |",
        f"| *Supplementary:* batch ingest beside raw produce in record batches (the relay's own pattern) | "
        f"{fmt(bi['published_items_per_s'])} feedback/s | {fmt(prod['record_batches']['msgs_per_s'])} msgs/s | "
        f"{bi['published_items_per_s'] / prod['record_batches']['msgs_per_s']:.2f}× | (informational) |",
        f"| Batch ingest, committed only (last HTTP response) | {fmt(bi['committed_items_per_s'])} feedback/s | "
        f"{fmt(copy['rows_per_s'])} rows/s (raw COPY) | {bi['committed_items_per_s'] / copy['rows_per_s']:.2f}× | — |",
        f"| Single POST /api/feedback ({sp['requests']:,} req, c={sp['concurrency']}) | {fmt(sp['rps'])} req/s | "
        f"{fmt(bare['rps'])} req/s (bare FastAPI) | {t['single_vs_bare']['ratio']:.2f}× | "
        f"≥ 0.5× **{t['single_vs_bare']['verdict']}** |",
        f"| Single POST latency p50 / p99 | {fmt(sp['p50_ms'], 1)} / {fmt(sp['p99_ms'], 1)} ms | "
        f"{fmt(bare['p50_ms'], 1)} / {fmt(bare['p99_ms'], 1)} ms | — | — |",
        f"| *Supplementary:* single POST with the minimal raw-socket client | {fmt(sp['minimal_client']['rps'])} req/s "
        f"(p50 {fmt(sp['minimal_client']['p50_ms'], 1)} / p99 {fmt(sp['minimal_client']['p99_ms'], 1)} ms) | "
        f"{fmt(bare['minimal_client']['rps'])} req/s (bare FastAPI, same client) | "
        f"{sp['minimal_client']['rps'] / bare['minimal_client']['rps']:.2f}× | (informational) |",
        f"| Outbox relay, steady ({rl['events']:,} events queued) | {fmt(rl['steady_events_per_s'])} events/s | "
        f"{fmt(prod['msgs_per_s'])} msgs/s (raw produce) | "
        f"{(rl['steady_events_per_s'] or 0) / prod['msgs_per_s']:.2f}× | — |",
        f"| Outbox relay, from process spawn (start-up {rl['startup_seconds']:.1f} s) | "
        f"{fmt(rl['events_per_s_from_spawn'])} events/s | — | — | — |",
        *(f"| {title}, steady ({c['events']:,} events queued, {c['consumer_processes']} process"
          f"{'es' if c['consumer_processes'] > 1 else ''}) | {fmt(c['steady_events_per_s'])} events/s | "
          f"{fmt(copy['rows_per_s'])} rows/s (raw COPY) | "
          f"{(c['steady_events_per_s'] or 0) / copy['rows_per_s']:.2f}× | "
          f"≥ {CONSUMER_TARGET:,}/s **{t[key]['verdict']}** |"
          for title, c, key in (("Feedback consumer (FeedbackSubmitted → stored)", co, "consumer_events_per_s"),
                                ("Curation projection consumer (FeedbackReceived → projected)", cc,
                                 "curation_consumer_events_per_s"))),
        *(f"| {title}, from process spawn (start-up {c['startup_seconds']:.1f} s) | "
          f"{fmt(c['events_per_s_from_spawn'])} events/s | — | — | — |"
          for title, c in (("Feedback consumer", co), ("Curation projection consumer", cc))),
        "",
        "CPU in cores busy (cpu-seconds / wall-second) per component during each measured phase:",
        "",
        "| Phase | " + " | ".join(r["cpu_groups"]) + " |",
        "|---|" + "---:|" * len(r["cpu_groups"]),
    ]
    for name, res in (("bare FastAPI", bare), ("bare FastAPI, minimal client", bare["minimal_client"]),
                      ("batch ingest", bi), ("single POST", sp), ("single POST, minimal client", sp["minimal_client"]),
                      ("relay", rl), ("feedback consumer", co), ("curation consumer", cc)):
        cpu = res.get("cpu_cores", {})
        lines.append(f"| {name} | " + " | ".join(fmt(cpu.get(g), 2) for g in r["cpu_groups"]) + " |")
    lines += [
        "",
        f"Batch ingest outbox backlog at the last HTTP response: {bi['backlog_at_last_response']:,}; "
        f"batch latency p50 {fmt(bi['batch_p50_ms'])} ms / p99 {fmt(bi['batch_p99_ms'])} ms. "
        f"Load average at start: {r['machine']['loadavg_at_start']}.",
    ]
    busy = max(res.get("cpu_cores", {}).get("other", 0.0) for res in (bare, bi, sp, rl, co, cc))
    if busy > 0.25:
        lines.append(
            f"\n**Warning:** other processes used up to {busy:.2f} cores during a phase: the figures are "
            "depressed by that load; rerun on a quiet machine."
        )
    return "\n".join(lines)


def verdict(value: float, target: float = 0.5) -> str:
    return "PASS" if value >= target else "BELOW"


# ---------------------------------------------------------------------------------------------------


async def run(batches: int, singles: int, *, relay_events: int, consumer_events: int, raw_rows: int,
              raw_messages: int, message_bytes: int) -> dict[str, Any]:
    from rlhf.stack import Stack, migrate_all
    from services.feedback.main import SPEC
    from shared import auth
    from shared.db import make_engine
    from shared.infra import ensure_topics, free_port

    loadavg = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="rlhf-bench-"))
    stack = Stack(
        tmp,
        database_url=os.environ.get("DATABASE_URL") or None,
        kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        kafka_port=free_port(),
        gateway_port=free_port(),
        extra_env={"RLHF_CONSUMER_SESSION_TIMEOUT_MS": "6000", "RLHF_CONSUMER_HEARTBEAT_INTERVAL_MS": "1000"},
    )
    services = Services(stack, tmp / "logs")
    meter = CpuMeter()
    results: dict[str, Any] = {}
    try:
        log(f"starting infrastructure in {tmp}")
        stack.start_infrastructure()
        url, bootstrap = stack.database_url, stack.kafka_bootstrap
        await migrate_all(url)
        await ensure_topics(bootstrap, SPEC.topics)

        pg_pid = stack.postgres.get_pid() if stack.postgres else None
        broker_pid = stack.broker.process.pid if stack.broker and stack.broker.process else None
        meter.add("bench client", lambda: [psutil.Process()])
        meter.add("bare uvicorn", lambda: [])
        meter.add("service", lambda: [])
        meter.add("postgres", lambda: _tree(pg_pid), reaped=True)
        meter.add("tansu", lambda: _tree(broker_pid))

        engine = make_engine(url, pool_size=1)
        org = f"bench-{uuid.uuid4().hex[:8]}"
        try:
            key = await auth.create_key(engine, organization=org, role=auth.Role.curator, name="bench")
        finally:
            await engine.dispose()
        headers = {"authorization": f"Bearer {key}"}

        from shared.db import async_url  # the embedded server's URL, as asyncpg takes it

        dsn = async_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)

        log(f"raw asyncpg COPY: {raw_rows:,} rows")
        copy = await raw_copy(dsn, raw_rows)
        log(f"  {copy['rows_per_s']:,.0f} rows/s")
        log(f"raw aiokafka produce: {raw_messages:,} × {message_bytes} B")
        produce = await raw_produce(bootstrap, raw_messages, message_bytes)
        log(f"  {produce['msgs_per_s']:,.0f} msgs/s (record batches: {produce['record_batches']['msgs_per_s']:,.0f})")
        log(f"bare FastAPI endpoint: {singles:,} requests, concurrency {SINGLE_CONCURRENCY}")
        bare = await bare_endpoint(singles, SINGLE_CONCURRENCY, tmp / "logs", meter)
        log(f"  {bare['rps']:,.0f} req/s")

        db = Db(await asyncpg.connect(dsn))
        try:
            # The processes `rlhf up` runs: the relay in its own when the service asks for it.
            if importlib.import_module(SERVICE_MODULE).SPEC.relay_process:
                full, port, _ = services.start("api", "consumer", name="feedback-full")
                own_relay, _, _ = services.start("relay", name="feedback-relay")
            else:
                full, port, _ = services.start("api", "relay", "consumer", name="feedback-full")
                own_relay = None
            meter.add("service", lambda: [p for proc in (full, own_relay) if proc for p in _tree(proc.pid)])
            base = f"http://127.0.0.1:{port}"
            try:
                log(f"batch ingest: {batches} × {BATCH_SIZE:,} items, concurrency {BATCH_CONCURRENCY}")
                batch = await batch_ingest(base, headers, db, batches, meter)
                log(f"  committed {batch['committed_items_per_s']:,.0f}/s, "
                    f"committed+published {batch['published_items_per_s']:,.0f}/s")
                log(f"single POST: {singles:,} requests, concurrency {SINGLE_CONCURRENCY}")
                single = await single_posts(base, headers, singles, meter)
                log(f"  {single['rps']:,.0f} req/s, p50 {single['p50_ms']:.1f} ms, p99 {single['p99_ms']:.1f} ms")
                await poll_until(db.drained, 120, "single POST backlog drained")
            finally:
                services.stop(full)
                if own_relay:
                    services.stop(own_relay)
                meter.add("service", lambda: [])

            log(f"relay: {relay_events:,} events through an api-only process, then a relay-only process")
            relay = await relay_phase(services, headers, db, relay_events, meter)
            log(f"  steady {relay['steady_events_per_s']:,.0f} events/s (start-up {relay['startup_seconds']:.1f}s)")
            meter.add("service", lambda: [])

            log(f"consumer: {consumer_events:,} FeedbackSubmitted queued, then its consumer-only processes")
            consumer = await consumer_phase(services, bootstrap, db, consumer_events, meter)
            log(f"  steady {consumer['steady_events_per_s']:,.0f} events/s "
                f"(start-up {consumer['startup_seconds']:.1f}s)")
            meter.add("service", lambda: [])
            log(f"curation consumer: {consumer_events:,} FeedbackReceived queued, then its consumer-only processes")
            projection = await consumer_phase(services, bootstrap, db, consumer_events, meter, CURATION_CONSUMER)
            log(f"  steady {projection['steady_events_per_s']:,.0f} events/s "
                f"(start-up {projection['startup_seconds']:.1f}s)")
        finally:
            await db.conn.close()

        envelope_sizes = await _envelope_size(dsn)
        b_ratio = batch["published_items_per_s"] / produce["msgs_per_s"]
        s_ratio = single["rps"] / bare["rps"]
        results = {
            "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {
                "nproc": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                "cpu": _cpu_model(), "loadavg_at_start": [round(x, 2) for x in loadavg],
                "infrastructure": "embedded PostgreSQL + Tansu" if stack.postgres and stack.broker else "external",
            },
            "code": _git(),
            "parameters": {"batches": batches, "singles": singles, "relay_events": relay_events,
                           "consumer_events": consumer_events, "raw_rows": raw_rows, "raw_messages": raw_messages,
                           "message_bytes": message_bytes, "outbox_envelope_bytes": envelope_sizes},
            "baselines": {"asyncpg_copy": copy, "aiokafka_produce": produce, "fastapi_bare": bare},
            "product": {"batch_ingest": batch, "single_post": single, "relay": relay, "consumer": consumer,
                        "curation_consumer": projection},
            "targets": {
                "batch_vs_produce": {"ratio": b_ratio, "target": 0.5, "verdict": verdict(b_ratio)},
                "single_vs_bare": {"ratio": s_ratio, "target": 0.5, "verdict": verdict(s_ratio)},
                "consumer_events_per_s": {"value": consumer["steady_events_per_s"], "target": CONSUMER_TARGET,
                                          "verdict": verdict(consumer["steady_events_per_s"] or 0, CONSUMER_TARGET)},
                "curation_consumer_events_per_s": {
                    "value": projection["steady_events_per_s"], "target": CONSUMER_TARGET,
                    "verdict": verdict(projection["steady_events_per_s"] or 0, CONSUMER_TARGET)},
            },
            "cpu_groups": [*meter.groups, "other"],
        }
        return results
    finally:
        services.stop_all()
        stack.discard()


async def _envelope_size(dsn: str) -> int | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT avg(octet_length(envelope))::int FROM (SELECT envelope FROM feedback.outbox LIMIT 1000) s"
        )
    except Exception:
        return None
    finally:
        await conn.close()


def _git() -> dict[str, Any]:
    """The code measured: HEAD and the files that differed from it (read-only git commands)."""
    root = Path(__file__).parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
        return {"head": head, "modified": [line[3:] for line in dirty if line.strip()]}
    except (OSError, subprocess.SubprocessError):
        return {}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(batches: int = 80, singles: int = 2000, *, relay_events: int = 100_000, consumer_events: int = 100_000,
         raw_rows: int = 200_000, raw_messages: int = 200_000, message_bytes: int = 600) -> dict[str, Any]:
    results = asyncio.run(
        run(batches, singles, relay_events=relay_events, consumer_events=consumer_events, raw_rows=raw_rows,
            raw_messages=raw_messages, message_bytes=message_bytes)
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(render(results), flush=True)
    print(f"\n(JSON: {RESULTS})", flush=True)
    return results


if __name__ == "__main__":
    main()
