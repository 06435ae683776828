"""How fast the Curate UI's panels are usable with a lot of data: 100,000 feedback items and
100,000 preference pairs in one organization, the whole stack running as `rlhf up` runs it, and
Debian's Chromium (Playwright) timing each panel from navigation (a full page load, signed in)
until its first screen shows data. Figures go to docs/benchmarks.md; nothing is asserted.

    .venv/bin/python -m bench.ui [--items 100000] [--runs 5]
"""

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "services" / "gateway" / "static"
BATCH = 1000
SERVICES = ("feedback", "curation", "training", "registry", "experiments", "accounts")
# What "usable" means on each panel: its first rows (or its editor) are on screen.
PANELS = {
    "feedback": "table tbody tr",
    "datasets": "table tbody tr",
    "pairs": ".pair-row",
    "fine-tuning": "table tbody tr, .empty",  # no jobs here: the (empty) table and the budget
    "models": ".model-name tbody tr, .empty",  # no versions here: the (empty) registry
    "experiments": "table tbody tr, .empty",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def item(i: int) -> dict:
    return {"query": f"How do I configure service {i} for deployment region {i % 17}?",
            "response": f"Set the region flag on service {i}.", "feedback_type": "correction",
            "feedback_value": {"correction": f"Open Settings > Regions for service {i}, then pick region {i % 17}."},
            "session_id": f"s-{i // 20}", "tags": [f"topic-{i % 9}"]}


async def seed(client: httpx.AsyncClient, headers: dict, n: int) -> list[str]:
    ids: list[str] = []
    sem = asyncio.Semaphore(4)

    async def post(start: int):
        async with sem:
            body = {"items": [item(i) for i in range(start, min(n, start + BATCH))]}
            r = await client.post("/api/feedback/batch", json=body, headers=headers, timeout=120)
            r.raise_for_status()
            return r.json()["ids"]

    for chunk in await asyncio.gather(*(post(s) for s in range(0, n, BATCH))):
        ids.extend(chunk)
    return ids


async def prepare(gateway: str, headers: dict, n: int) -> dict:
    timings = {}
    async with httpx.AsyncClient(base_url=gateway, timeout=600) as client:
        start = time.perf_counter()
        ids = await seed(client, headers, n)
        timings["feedback_ingest_s"] = time.perf_counter() - start
        log(f"{len(ids):,} feedback items in {timings['feedback_ingest_s']:.1f} s")
        start = time.perf_counter()
        for i in range(0, n // 2, BATCH):  # half approved
            r = await client.post("/api/feedback/review", json={"ids": ids[i:i + BATCH], "action": "approve"},
                                  headers=headers)
            r.raise_for_status()
        timings["approve_half_s"] = time.perf_counter() - start
        dataset = (await client.post("/api/training-datasets", headers=headers, json={
            "name": "Regions support (100k)", "dataset_type": "dpo"})).json()
        for name in ("Billing Q4", "Jira triage v2", "Knowledge base"):
            await client.post("/api/training-datasets", headers=headers, json={"name": name, "dataset_type": "dpo"})
        start = time.perf_counter()
        made = 0
        while made < n:  # curation sees the feedback through Kafka: mine again until all is there
            r = await client.post("/api/preference-pairs/bulk", headers=headers, json={
                "dataset_id": dataset["id"], "strategies": ["correction"]})
            r.raise_for_status()
            made = r.json()["sample_count"]
            if made < n:
                await asyncio.sleep(2)
        timings["pairs_mined_s"] = time.perf_counter() - start
        log(f"{made:,} pairs in {timings['pairs_mined_s']:.1f} s (waiting for curation's projection included)")
    return timings


async def measure(gateway: str, token: str, runs: int, chromium: str) -> dict[str, list[float]]:
    from playwright.async_api import async_playwright

    from tests.ui.conftest import CHROMIUM_ARGS

    results: dict[str, list[float]] = {p: [] for p in PANELS}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = await (await browser.new_context(viewport={"width": 1440, "height": 900}, base_url=gateway)).new_page()
        await page.goto("/")
        await page.get_by_label("API key").fill(token)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("navigation", name="Curate").wait_for()
        for _ in range(runs):
            for panel, selector in PANELS.items():
                await page.goto("about:blank")
                start = time.perf_counter()
                await page.goto(f"/#/{panel}")
                await page.locator(selector).first.wait_for(timeout=30_000)
                results[panel].append(time.perf_counter() - start)
        await browser.close()
    return results


def bundle_sizes() -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted((STATIC / "assets").iterdir())}


async def run(n: int, runs: int) -> None:
    from rlhf.stack import Stack, migrate_all
    from shared import auth
    from shared.db import make_engine
    from shared.infra import free_port

    chromium = shutil.which("chromium")
    if not chromium or not (STATIC / "index.html").is_file():
        raise SystemExit("needs Debian's chromium (apt-get install chromium) and the built UI (make ui)")
    data = Path(tempfile.mkdtemp(prefix="rlhf-bench-ui-"))
    stack = Stack(data, kafka_port=free_port(), gateway_port=free_port(),
                  service_ports={name: free_port() for name in SERVICES},
                  extra_env={"RLHF_GATEWAY_RATE_LIMIT": "0"})
    try:
        stack.start_infrastructure()
        await migrate_all(stack.database_url)
        stack.start_services()
        engine = make_engine(stack.database_url, pool_size=1)
        org = f"bench-ui-{uuid.uuid4().hex[:6]}"
        token = await auth.create_key(engine, organization=org, role=auth.Role.curator)
        await engine.dispose()
        headers = {"Authorization": f"Bearer {token}"}
        timings = await prepare(stack.gateway_url, headers, n)
        results = await measure(stack.gateway_url, token, runs, chromium)
    finally:
        stack.stop()
    print(f"\n{n:,} feedback items and {n:,} pairs; {runs} full page loads per panel (seconds):")
    for panel, times in results.items():
        print(f"  {panel:<12} median {statistics.median(times):.3f}  min {min(times):.3f}  max {max(times):.3f}")
    print("setup:", {k: round(v, 1) for k, v in timings.items()})
    print("bundle:", bundle_sizes())
    print("load average:", os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.items, args.runs))


if __name__ == "__main__":
    main()
