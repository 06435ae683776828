"""Local LoRA fine-tuning with TRL on this machine: each job runs `services.training.worker` in its
own process (its own session, so it outlives a restart of the service), in a job directory that
holds its spec, its training file and the JSON-lines event log the poller reads from an offset.

A worker is started at most once per job: the service takes an exclusive lock on the job
directory's `worker.lock` and hands it to the worker, which holds it for as long as it lives. A
submit retried after a crash (the worker started, the service died before storing that) finds the
lock held, or the worker's traces when it has already ended, and adopts that run."""

import asyncio
import fcntl
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from services.training import domain, worker
from services.training.providers.base import (
    JobSpec,
    MetricPoint,
    ProviderError,
    Snapshot,
    Submission,
    check_range,
    reject_unknown,
)
from services.training.settings import TrainingSettings
from shared.local_models import local_base_model, model_to_load
from shared.objectstore import object_store_from_url
from shared.settings import get_settings

DEFAULTS: dict[str, Any] = {
    "n_epochs": 1, "batch_size": 4, "learning_rate": 2e-4, "logging_steps": 1, "max_length": 512,
    "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "max_steps": None, "beta": 0.1,
}
SFT_KEYS = set(DEFAULTS) - {"beta"}
PID_FILE = "worker.pid"
LOCK_FILE = "worker.lock"  # held by the job's worker for its whole life


class HuggingFaceProvider:
    name = "huggingface"
    local = True

    def models(self, settings: TrainingSettings) -> None:
        return None

    def check_model(self, base_model: str, settings: TrainingSettings) -> str:
        # Nothing is downloaded at run time, and no path of the client's choosing is read: a directory under
        # the models directory (stored by its name) or a Hugging Face model id in the local cache.
        try:
            return local_base_model(base_model, get_settings().models_dir())
        except ValueError as exc:
            raise domain.InvalidLaunch("base_model", f"huggingface base_model: {exc}") from None

    def normalize_hyperparameters(self, method: str, given: dict[str, Any]) -> dict[str, Any]:
        reject_unknown(given, set(DEFAULTS) if method == "dpo" else SFT_KEYS, f"huggingface {method}")
        check_range(given, "n_epochs", 1, 50, integer=True)
        check_range(given, "batch_size", 1, 256, integer=True)
        check_range(given, "learning_rate", 0, 1, integer=False, low_open=True)
        check_range(given, "logging_steps", 1, 10_000, integer=True)
        check_range(given, "max_length", 8, 32_768, integer=True)
        check_range(given, "lora_r", 1, 256, integer=True)
        check_range(given, "lora_alpha", 1, 1024, integer=True)
        check_range(given, "lora_dropout", 0, 0.9, integer=False)
        check_range(given, "max_steps", 1, 1_000_000, integer=True)
        check_range(given, "beta", 0, 2, integer=False, low_open=True)
        merged = {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
        return {k: v for k, v in merged.items() if method == "dpo" or k != "beta"}

    def epochs(self, hyperparameters: dict[str, Any], examples: int) -> int:
        return int(hyperparameters.get("n_epochs", 1))

    def check_credentials(self, settings: TrainingSettings) -> None:
        # nothing to reach, but the training libraries must be installed (the `train` extra)
        if missing := missing_packages():
            raise domain.MissingCredentials(
                f"local training needs the train extra (missing: {', '.join(missing)}): "
                "pip install 'betabase-rlhf[train]'"
            )

    async def submit(self, job: JobSpec, settings: TrainingSettings) -> Submission:
        await asyncio.to_thread(_start_once, settings.workdir() / job.job_id, job, settings)
        return Submission(job.job_id, "spawned", domain.QUEUED)

    async def poll(self, provider_job_id: str, cursor: dict[str, Any], settings: TrainingSettings) -> Snapshot:
        job_dir = settings.workdir() / provider_job_id
        return await asyncio.to_thread(_read_events, job_dir, cursor)

    async def cancel(self, provider_job_id: str, settings: TrainingSettings) -> None:
        process = _worker(settings.workdir() / provider_job_id)
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGTERM)  # the worker and anything it started
            except ProcessLookupError:
                pass


TRAIN_PACKAGES = ("torch", "transformers", "trl", "peft", "datasets")


def missing_packages(packages: tuple[str, ...] = TRAIN_PACKAGES) -> list[str]:
    """Which of the local trainer's libraries this install lacks (looked up, not imported)."""
    return [name for name in packages if importlib.util.find_spec(name) is None]


def _start_once(job_dir: Path, job: JobSpec, settings: TrainingSettings) -> None:
    """Starts the job's worker unless one is running or has run (then the poller follows that one)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    lock = _take_lock(job_dir)
    if lock is None:  # a worker started by an earlier attempt is still running
        return
    try:
        if (job_dir / PID_FILE).exists() or (job_dir / worker.EVENTS_FILE).exists():
            return  # a worker ran and ended: its event log has the outcome
        if _running_workers(settings) >= settings.rlhf_training_max_local_workers:
            raise ProviderError("all local training slots are busy", transient=True)
        _prepare(job_dir, job, settings)
        _spawn(job_dir, lock)
    finally:
        os.close(lock)  # the worker keeps its own copy of the lock


def _take_lock(job_dir: Path) -> int | None:
    """A descriptor holding the job directory's exclusive lock, or None when someone holds it."""
    fd = os.open(job_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _lock_held(job_dir: Path) -> bool:
    if not (job_dir / LOCK_FILE).exists():
        return False
    fd = _take_lock(job_dir)
    if fd is None:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return False


def _prepare(job_dir: Path, job: JobSpec, settings: TrainingSettings) -> None:
    store_url = get_settings().object_store_url()
    store = object_store_from_url(store_url)
    with store.open(job.training_url) as src:
        (job_dir / "train.jsonl").write_bytes(src.read())
    if job.validation_url:
        with store.open(job.validation_url) as src:
            (job_dir / "validation.jsonl").write_bytes(src.read())
    spec = {
        "job_id": job.job_id,
        "method": job.method,
        "base_model": model_to_load(job.base_model, get_settings().models_dir()),
        "training_file": "train.jsonl",
        "validation_file": "validation.jsonl" if job.validation_url else None,
        "hyperparameters": job.hyperparameters,
        "object_store_url": store_url,
        "adapter_key": f"adapters/{job.organization}/{job.job_id}",
        "leak_check": {"sample": settings.rlhf_training_leak_sample,
                       "min_chars": settings.rlhf_training_leak_min_chars,
                       "max_new_tokens": settings.rlhf_training_leak_max_new_tokens},
    }
    (job_dir / worker.SPEC_FILE).write_text(json.dumps(spec))


def _spawn(job_dir: Path, lock: int) -> None:
    """Starts the worker in its own session, so it outlives a restart of the service. It inherits
    the locked descriptor (flock locks belong to the open file, shared across fork), so the lock is
    held exactly as long as the worker lives."""
    with (job_dir / "worker.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.training.worker", str(job_dir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=os.getcwd(), pass_fds=(lock,),
            env={**os.environ, "HF_HUB_OFFLINE": "1"},  # a Hugging Face id loads from the cache, or not at all
        )
    (job_dir / PID_FILE).write_text(f"{process.pid} {psutil.Process(process.pid).create_time()}")


def _worker(job_dir: Path) -> psutil.Process | None:
    """The job's worker process if it is still alive (pid and start time both match)."""
    try:
        pid, created = (job_dir / PID_FILE).read_text().split()
        process = psutil.Process(int(pid))
        if abs(process.create_time() - float(created)) > 1 or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
        return None


def _running_workers(settings: TrainingSettings) -> int:
    root = settings.workdir()
    if not root.exists():
        return 0
    return sum(1 for d in root.iterdir() if d.is_dir() and _worker(d) is not None and not _finished(d))


def _finished(job_dir: Path) -> bool:
    path = job_dir / worker.EVENTS_FILE
    return path.exists() and any(
        json.loads(line).get("type") in ("completed", "failed") for line in path.read_text().splitlines() if line
    )


def _read_events(job_dir: Path, cursor: dict[str, Any]) -> Snapshot:
    path = job_dir / worker.EVENTS_FILE
    offset = int(cursor.get("offset", 0))
    snapshot = Snapshot(provider_status="spawned", status=domain.QUEUED, cursor=dict(cursor))
    if cursor.get("started"):
        snapshot.provider_status, snapshot.status = "running", domain.TRAINING
    data = path.read_bytes()[offset:] if path.exists() else b""
    complete = data[: data.rfind(b"\n") + 1]  # a line still being written is read next time
    for line in complete.decode().splitlines():
        if line.strip():
            _apply(json.loads(line), snapshot)
    snapshot.cursor["offset"] = offset + len(complete)
    if snapshot.status not in domain.TERMINAL and _worker(job_dir) is None and not _lock_held(job_dir):
        # Read once more: the worker may have written its last line just before exiting.
        if not _finished(job_dir):
            snapshot.provider_status, snapshot.status = "exited", domain.FAILED
            snapshot.error = "the training worker exited without a result; see worker.log in its job directory"
    return snapshot


def _apply(event: dict[str, Any], snapshot: Snapshot) -> None:
    kind = event.get("type")
    if kind == "started":
        snapshot.cursor["started"] = True
        snapshot.provider_status, snapshot.status = "running", domain.TRAINING
    elif kind == "metrics":
        snapshot.points.append(MetricPoint(step=int(event["step"]), values=event["metrics"], epoch=event.get("epoch")))
        snapshot.total_steps = event.get("max_steps")
        snapshot.epoch = event.get("epoch")
    elif kind == "completed":
        snapshot.provider_status, snapshot.status = "completed", domain.COMPLETED
        snapshot.resulting_model_id = event["adapter_url"]
        snapshot.final_metrics = {k: float(v) for k, v in event.get("final_metrics", {}).items()}
        snapshot.evaluation = event.get("evaluation")
    elif kind == "failed":
        snapshot.provider_status, snapshot.status = "failed", domain.FAILED
        snapshot.error = event.get("error") or "training failed"


PROVIDER = HuggingFaceProvider()
