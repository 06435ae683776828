"""How long `rlhf up` takes to be ready: from the command's start to the gateway's /healthz
answering 200 (every service behind it answering its own), on a fresh data directory (PostgreSQL's
initdb included) and on restarts of the same one. Nothing is asserted; figures go to
docs/benchmarks.md (issue 14's target: ready in < 15 s).

    python -m bench.startup [--restarts 3]

While it waits, the gateway's answers are tallied (connection refused, 503, 200): a client that
starts with the stack sees "not ready" answers, never a 502. At the moment /healthz says 200, one
authenticated route of every service is asked through the gateway, which must answer 200.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from shared.infra import free_port

ROOT = Path(__file__).resolve().parents[1]
# One authenticated GET per service, through the gateway.
ROUTES = ("/api/feedback/stats", "/api/training-datasets", "/api/fine-tuning/jobs", "/api/models",
          "/api/experiments", "/api/keys")
KEY = re.compile(r"^\s+(rlhf_\S+)\s*$", re.M)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def start_once(data_dir: Path, key: str | None) -> tuple[dict, str | None]:
    port, services_port, kafka_port = free_port(), free_port() + 100, free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env["RLHF_DATA_DIR"] = str(data_dir)
    out = data_dir.parent / f"up-{time.time_ns()}.log"
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "rlhf.cli", "up", "--port", str(port), "--services-port", str(services_port),
         "--kafka-port", str(kafka_port)],
        env=env, stdout=open(out, "w"), stderr=subprocess.STDOUT, cwd=ROOT,
    )
    answers: dict[str, int] = {}
    ready = None
    try:
        while time.perf_counter() - started < 300:
            if process.poll() is not None:
                raise RuntimeError(f"rlhf up exited with {process.returncode}: {out.read_text()[-2000:]}")
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
                answers[str(status)] = answers.get(str(status), 0) + 1
            except httpx.TransportError as exc:
                answers[type(exc).__name__] = answers.get(type(exc).__name__, 0) + 1
                status = None
            if status == 200:
                ready = time.perf_counter() - started
                break
            time.sleep(0.05)
        if ready is None:
            raise TimeoutError("not ready in 300 s")
        while key is None:  # printed once `rlhf up` has seen every service answer, a moment after the gateway
            found = KEY.search(out.read_text())
            key = found.group(1) if found else None
            if key is None:
                if process.poll() is not None or time.perf_counter() - started > 300:
                    raise RuntimeError(f"no admin key printed: {out.read_text()[-2000:]}")
                time.sleep(0.1)
        routes = {}
        for route in ROUTES:
            routes[route] = httpx.get(f"http://127.0.0.1:{port}{route}", timeout=10,
                                      headers={"Authorization": f"Bearer {key}"}).status_code
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    return {"ready_s": round(ready, 2), "gateway_answers_while_waiting": answers, "routes_at_ready": routes}, key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rlhf-startup-"))
    load = os.getloadavg()
    runs, key = [], None
    for i in range(args.restarts + 1):
        result, key = start_once(work / "data", key)
        result["run"] = "fresh data directory" if i == 0 else f"restart {i}"
        log(f"{result['run']}: ready in {result['ready_s']} s; answers while waiting "
            f"{result['gateway_answers_while_waiting']}; routes {set(result['routes_at_ready'].values())}")
        runs.append(result)
    shutil.rmtree(work, ignore_errors=True)  # `rlhf up` has stopped, its PostgreSQL with it
    print(f"rlhf up, ready (gateway /healthz 200, every service answering) — load average before {load}, "
          f"after {os.getloadavg()}")
    for r in runs:
        print(f"  {r['run']:<22} {r['ready_s']:>6.2f} s  gateway answers while waiting: "
              f"{r['gateway_answers_while_waiting']}  routes at ready: {r['routes_at_ready']}")


if __name__ == "__main__":
    main()
