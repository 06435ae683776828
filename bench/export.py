"""Dataset export benchmark (issue 3): the curation service's export next to a raw baseline
measured in the same run, plus bulk pair creation.

    python -m bench.export [--pairs 1000000] [--feedback 100000]

  * raw baseline: an asyncpg server-side cursor over the pairs, each row as an openai_dpo line with
    orjson, written to a file — what the machine can do with no product logic. It runs before and
    after the export (this machine's speed drifts by a third between runs): the mean is the baseline;
  * product: `handlers.export_dataset` (the row rules tallied while writing, duplicate and
    near-duplicate searches, de-duplication, split, PII screen and masking, sha256, atomic write to a
    local object store, the version committed with DatasetExported in the outbox) to openai_dpo,
    shaped by the export's worker processes (one per CPU). It runs twice in one process: first as
    the first export of a fresh service (the workers start during it), then as any later export;
  * each of the two measurements runs in its own fresh process, so that its peak RSS is its own
    (the export's is the service process's plus its workers');
  * bulk pair creation: `handlers.bulk_create_pairs` with all three strategies over a projection of
    N feedback items.

Data is loaded with COPY, then VACUUM ANALYZE (what autovacuum does after a bulk load). The text is
synthetic: English-like sentences, about a third with digits, 1% with an email address and 0.5%
with a phone number, so the masking does real work. Texts and ids come from seeded generators, so
the export's files are the same in every run: their sha256 is printed, to check that a change to
the code changed no file. With no DATABASE_URL an embedded PostgreSQL is
started in a temporary directory and removed at the end.
Figures go to stdout and bench/results/export-latest.json.
"""

import argparse
import asyncio
import hashlib
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

RESULTS = Path(__file__).parent / "results" / "export-latest.json"
ORG = "bench-org"
WORDS = ("deploy service cluster staging release pipeline logs metrics dashboard alert restart worker queue cache "
         "database replica backup token rotate secret config network latency error timeout retry build version "
         "rollback traffic canary owner team ticket runbook incident status panel grafana kubernetes node").split()


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words)).capitalize()
    roll = rng.random()
    if roll < 0.01:
        text += f" Contact {rng.choice(WORDS)}.{rng.randint(1, 999)}@example.com for access."
    elif roll < 0.015:
        text += f" Call +1 415-555-{rng.randint(1000, 9999)}."
    elif roll < 0.33:
        text += f" It took {rng.randint(2, 900)} seconds on node {rng.randint(1, 64)}."
    return text + "."


async def load_pairs(conn: asyncpg.Connection, dataset_id: uuid.UUID, n: int) -> None:
    rng = random.Random(1)
    ids = random.Random(3)  # ids of their own: the same every run (sources.jsonl names them), the texts unchanged
    now = datetime.now(UTC)
    await conn.execute(
        """INSERT INTO curation.training_datasets (id, organization, name, dataset_type, status, sample_count,
                                                    validation_ratio, created_at, updated_at)
           VALUES ($1, $2, 'bench', 'dpo', 'ready', $3, 0.05, $4, $4)""", dataset_id, ORG, n, now)
    columns = ["id", "organization", "dataset_id", "query", "chosen_response", "rejected_response",
               "preference_strength", "strategy", "created_at", "updated_at"]
    batch = 50_000
    for start in range(0, n, batch):
        records = [
            (uuid.UUID(int=ids.getrandbits(128), version=4), ORG, dataset_id, sentence(rng, 12)[:-1] + f" #{i}?",
             sentence(rng, 40), sentence(rng, 14), 0.8, "manual", now, now)
            for i in range(start, min(n, start + batch))
        ]
        await conn.copy_records_to_table("preference_pairs", schema_name="curation", columns=columns,
                                         records=records)
    # What autovacuum does on its own after a bulk load (PostgreSQL 13+ vacuums insert-only tables):
    # statistics, and the visibility map that lets the duplicate search read only the index.
    await conn.execute("VACUUM ANALYZE curation.preference_pairs")


async def load_feedback(conn: asyncpg.Connection, n: int) -> None:
    """A projection of n feedback items: per query, a correction, a thumbs up and down, two ratings."""
    rng = random.Random(2)
    now = datetime.now(UTC)
    columns = ["feedback_id", "organization", "query", "response", "feedback_type", "rating", "value_correction",
               "status", "created_at"]
    records = []
    for i in range(n):
        group = random.Random(i // 5)
        query = f"How do I {group.choice(WORDS)} the {group.choice(WORDS)} {i // 5}?"
        kind = ("correction", "thumbs_up", "thumbs_down", "rating", "rating")[i % 5]
        rating = float(rng.randint(1, 5)) if kind == "rating" else None
        correction = sentence(rng, 30) if kind == "correction" else None
        records.append((uuid.uuid4(), ORG, query, sentence(rng, 25), kind, rating, correction, "pending", now))
    await conn.copy_records_to_table("feedback_projection", schema_name="curation", columns=columns,
                                     records=records)


async def raw_baseline(url: str, dataset_id: uuid.UUID, out: Path) -> dict:
    conn = await asyncpg.connect(url)
    start = time.perf_counter()
    rows = 0
    with out.open("wb") as f:
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor(
                "SELECT query, chosen_response, rejected_response FROM curation.preference_pairs "
                "WHERE organization = $1 AND dataset_id = $2", ORG, dataset_id)
            while chunk := await cursor.fetch(5000):
                f.write(b"".join(orjson.dumps({
                    "input": {"messages": [{"role": "user", "content": r[0]}]},
                    "preferred_output": [{"role": "assistant", "content": r[1]}],
                    "non_preferred_output": [{"role": "assistant", "content": r[2]}],
                }) + b"\n" for r in chunk))
                rows += len(chunk)
    elapsed = time.perf_counter() - start
    await conn.close()
    return {"rows": rows, "seconds": elapsed}


async def product_export(url: str, dataset_id: uuid.UUID, store_dir: Path) -> dict:
    from services.curation import handlers
    from services.curation.domain import ExportDataset
    from shared.db import Database
    from shared.objectstore import LocalObjectStore

    db = Database(url, schema="curation", producer="curation", pool_size=2)
    store = LocalObjectStore(store_dir)
    start = time.perf_counter()
    async with db.unit_of_work() as uow:  # as api.py runs it: the version is committed when this ends
        export = await handlers.export_dataset(uow, db, store, ORG, ExportDataset(dataset_id, "openai_dpo"),
                                               actor="bench", correlation_id=None)
    elapsed = time.perf_counter() - start
    await db.dispose()
    return {"rows": export.counts["total"], "seconds": elapsed, "masked": export.masked, "sha256": export.sha256,
            "files": files_sha256(store_dir / f"datasets/{ORG}/{dataset_id}/v{export.version}")}


def files_sha256(folder: Path) -> dict[str, str]:
    """The sha256 of each file an export wrote but its manifest (which holds the time it was written):
    the same data must give the same files, whatever the code's shape."""
    digests = {}
    for path in sorted(folder.iterdir()):
        if path.name != "manifest.json":
            with path.open("rb") as f:
                digests[path.name] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


async def bulk_pairs(url: str) -> dict:
    from services.curation import handlers
    from services.curation.domain import CreateDataset, PairFeedback
    from shared.db import Database

    db = Database(url, schema="curation", producer="curation", pool_size=2)
    async with db.unit_of_work() as uow:
        dataset_id = (await handlers.create_dataset(uow, ORG, CreateDataset("bulk", "preference_pairs"))).id
    start = time.perf_counter()
    async with db.unit_of_work() as uow:
        created, count = await handlers.bulk_create_pairs(uow, ORG, PairFeedback(
            dataset_id, strategies=["correction", "thumbs", "rating"], max_pairs_per_query=10, min_rating_gap=1))
    elapsed = time.perf_counter() - start
    await db.dispose()
    return {"created": created, "pairs": count, "seconds": elapsed}


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's own high-water mark (VmHWM). getrusage's ru_maxrss would include the parent's
    peak, which Linux carries over across exec."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker(kind: str, url: str, dataset_id: str, path: str) -> None:
    """Runs one measured job in this (fresh) process and prints its figures: time, peak RSS and CPU of
    this process and, for the export, of its worker processes. The export runs twice: first as the
    first export of a freshly started service (its worker processes start during it), then again, as
    every later export of a running service does, with the workers up."""
    def run(job):
        if not os.environ.get("RLHF_BENCH_PROFILE"):
            return asyncio.run(job)
        import cProfile  # where the time goes, for whoever tunes the export

        with cProfile.Profile() as profile:
            result = asyncio.run(job)
        profile.dump_stats(os.environ["RLHF_BENCH_PROFILE"] + f".{kind}")
        return result

    if kind == "raw":
        result = run(raw_baseline(url, uuid.UUID(dataset_id), Path(path)))
    else:
        from services.curation import export_engine

        result = run(product_export(url, uuid.UUID(dataset_id), Path(path)))
        result["warm"] = run(product_export(url, uuid.UUID(dataset_id), Path(path)))
        workers = list(export_engine._pool._processes) if export_engine._pool else []
        result["worker_cpu_s"] = [cpu_seconds(pid) for pid in workers]
        result["worker_peak_rss_mb"] = [peak_rss_mb(pid) for pid in workers]
    result["peak_rss_mb"] = peak_rss_mb()
    result["cpu_s"] = cpu_seconds()
    result["total_peak_rss_mb"] = result["peak_rss_mb"] + sum(result.get("worker_peak_rss_mb", []))
    print(orjson.dumps(result).decode(), flush=True)


def run_worker(kind: str, url: str, dataset_id: uuid.UUID, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.export", "--worker", kind, url, str(dataset_id), str(path)],
                         check=True, stdout=subprocess.PIPE, text=True)
    return orjson.loads(out.stdout.strip().splitlines()[-1])


async def prepare(url: str, pairs: int, feedback: int) -> uuid.UUID:
    from rlhf.stack import migrate_all

    await migrate_all(url)
    conn = await asyncpg.connect(url)
    dataset_id = uuid.uuid4()
    t = time.perf_counter()
    await load_pairs(conn, dataset_id, pairs)
    log(f"loaded {pairs:,} pairs in {time.perf_counter() - t:.1f}s (COPY)")
    await load_feedback(conn, feedback)
    log(f"loaded {feedback:,} feedback items")
    await conn.close()
    return dataset_id


def main(pairs: int = 1_000_000, feedback: int = 100_000) -> dict:
    from shared.infra import start_postgres

    tmp = Path(tempfile.mkdtemp(prefix="rlhf-bench-export-"))
    server = None
    try:
        url = os.environ.get("DATABASE_URL")
        if not url:
            server = start_postgres(tmp)
            url = server.get_uri()
        dataset_id = asyncio.run(prepare(url, pairs, feedback))
        # the raw baseline runs before and after the export (the machine's speed drifts): its mean is the baseline
        log("raw baseline…")
        raw_before = run_worker("raw", url, dataset_id, tmp / "raw.jsonl")
        log("product export…")
        product = run_worker("export", url, dataset_id, tmp / "objects")
        log("raw baseline again…")
        raw_after = run_worker("raw", url, dataset_id, tmp / "raw.jsonl")
        raw = dict(raw_before, seconds=(raw_before["seconds"] + raw_after["seconds"]) / 2,
                   runs=[raw_before, raw_after])
        log("bulk pair creation…")
        bulk = asyncio.run(bulk_pairs(url))
        results = {
            "when": datetime.now(UTC).isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "pairs": pairs, "feedback": feedback,
            "raw": dict(raw, pairs_per_s=raw["rows"] / raw["seconds"]),
            "export": dict(product, pairs_per_s=product["rows"] / product["seconds"]),
            "export_warm": dict(product["warm"], pairs_per_s=product["warm"]["rows"] / product["warm"]["seconds"]),
            "bulk": dict(bulk, pairs_per_s=bulk["pairs"] / bulk["seconds"]),
        }
        results["export_vs_raw"] = results["export"]["pairs_per_s"] / results["raw"]["pairs_per_s"]
        results["export_warm_vs_raw"] = results["export_warm"]["pairs_per_s"] / results["raw"]["pairs_per_s"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(render(results))
    return results


def render(r: dict) -> str:
    raw_runs = " and ".join(f"{x['rows'] / x['seconds']:,.0f}" for x in r["raw"].get("runs", [r["raw"]]))
    return "\n".join([
        f"export of {r['pairs']:,} pairs to openai_dpo ({r['machine']})",
        f"  raw baseline (asyncpg cursor + orjson):  {r['raw']['pairs_per_s']:>10,.0f} pairs/s  "
        f"peak RSS {r['raw']['peak_rss_mb']:.0f} MB  (mean time of runs at {raw_runs} pairs/s)",
        f"  curation export, first in a fresh service: {r['export']['pairs_per_s']:>8,.0f} pairs/s  "
        f"({r['export_vs_raw']:.2f}x baseline)",
        f"  curation export, workers already up:       {r['export_warm']['pairs_per_s']:>8,.0f} pairs/s  "
        f"({r['export_warm_vs_raw']:.2f}x baseline)",
        f"  peak RSS: service process {r['export']['peak_rss_mb']:.0f} MB + workers "
        f"{' + '.join(f'{m:.0f}' for m in r['export']['worker_peak_rss_mb'])} MB = "
        f"{r['export']['total_peak_rss_mb']:.0f} MB",
        f"  masked: {r['export']['masked']}",
        *(f"  {name}: sha256 {digest}" for name, digest in r["export"]["files"].items()),
        f"bulk pair creation from {r['feedback']:,} feedback items: {r['bulk']['pairs']:,} pairs in "
        f"{r['bulk']['seconds']:.2f}s = {r['bulk']['pairs_per_s']:,.0f} pairs/s  {r['bulk']['created']}",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--feedback", type=int, default=100_000)
    parser.add_argument("--worker", nargs=4, metavar=("KIND", "URL", "DATASET", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
    else:
        main(args.pairs, args.feedback)
