"""Restarts and replicas of the training service, with real processes killed by SIGKILL.

A killed service picks its jobs up again from the database: the OpenAI job runs to the end, each
of JobStarted / JobCompleted goes out once, no JobProgressed repeats a step, and OpenAI is asked to
create the job once — even when the crash falls between OpenAI accepting the job and our storing
its id. Two monitors running at once submit each pending job once. A retried local submit finds
the worker the first attempt started.

Each test gets its own database and broker (so the session's training service cannot do the work
the killed one left behind); the processes run the consumer, relay and monitor roles (the session
stack owns the HTTP port). The OpenAI stand-in is the session's, shared with those processes.
"""

import asyncio
import os
import subprocess
import sys
import uuid

import psutil
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from services.training.main import SPEC
from services.training.models import FineTuningJob, JobMetric, outbox, outbox_pending
from services.training.providers import get_provider
from services.training.providers.base import JobSpec
from services.training.settings import TrainingSettings
from shared.db import Database
from shared.events import JobCompleted, JobFailed, JobProgressed, JobStarted
from shared.infra import ensure_topics
from shared.service import migrate
from tests.support import KafkaProbe, envelope_of, eventually, isolated_infrastructure, of_org
from tests.training.conftest import export_dataset, record_export

pytestmark = pytest.mark.asyncio

MODEL = "gpt-4o-mini-2024-07-18"
JOB_TOPICS = [JobStarted.topic(), JobProgressed.topic(), JobCompleted.topic(), JobFailed.topic()]
SERVICE_ROLES = ("consumer", "relay", "background")


@pytest_asyncio.fixture
async def isolated(migrated):
    """A fresh database (training schema migrated) and a fresh broker (topics made) for one test."""
    async with isolated_infrastructure(migrated.database_url, "training_restart") as (url, broker):
        await ensure_topics(broker.bootstrap, SPEC.topics)
        db = Database(url, schema=SPEC.schema, producer="tests", pool_size=3)
        await migrate(SPEC, db)
        probe = KafkaProbe(broker.bootstrap)
        processes: list[subprocess.Popen] = []
        yield {"url": url, "bootstrap": broker.bootstrap, "db": db, "kafka": probe, "processes": processes}
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(30)
        await probe.close()
        await db.dispose()


def start_training(env: dict, roles=SERVICE_ROLES, **extra: str) -> subprocess.Popen:
    inherited = {k: v for k, v in os.environ.items() if k != "RLHF_FAILPOINTS"}
    full = {**inherited, "DATABASE_URL": env["url"], "KAFKA_BOOTSTRAP_SERVERS": env["bootstrap"],
            "RLHF_LOG_LEVEL": "WARNING", **extra}
    args = [sys.executable, "-m", "services.training.main", *(a for r in roles for a in ("--role", r))]
    process = subprocess.Popen(args, env=full)
    env["processes"].append(process)
    return process


async def wait_exit(process: subprocess.Popen, timeout: float = 120) -> int:
    return await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)


async def the_job(db: Database, organization: str) -> FineTuningJob | None:
    async with db.read() as session:
        stmt = select(FineTuningJob).where(FineTuningJob.organization == organization)
        return (await session.execute(stmt)).scalar_one_or_none()


async def stored_steps(db: Database, job_id: uuid.UUID) -> list[int]:
    async with db.read() as session:
        stmt = select(JobMetric.step).where(JobMetric.job_id == job_id).order_by(JobMetric.step)
        return list((await session.execute(stmt)).scalars())


async def outbox_drained(db: Database, organization: str) -> bool:
    async with db.read() as session:
        stmt = select(func.count()).select_from(outbox.join(outbox_pending, outbox_pending.c.id == outbox.c.id)).where(
            outbox.c.organization == organization)
        return (await session.execute(stmt)).scalar_one() == 0


async def job_in(db: Database, organization: str, statuses: set[str]) -> FineTuningJob | None:
    job = await the_job(db, organization)
    return job if job is not None and job.status in statuses else None


async def job_events(kafka: KafkaProbe, db: Database, organization: str) -> dict[str, list[dict]]:
    """The job events of one organization by topic, each event once: the relay delivers at least
    once (the same event id again after a crash, which consumers drop), so duplicates of the
    product's making are events with different ids. Read once the job is over and the outbox
    drained: nothing more can come, so every event the product made is there."""
    await kafka.collect(JOB_TOPICS, lambda rs: any(r.topic == JobCompleted.topic() for r in rs),
                        match=of_org(organization), timeout=180)
    await eventually(lambda: outbox_drained(db, organization))
    records = await kafka.read_all(JOB_TOPICS, match=of_org(organization))
    by_topic: dict[str, dict[str, dict]] = {t: {} for t in JOB_TOPICS}
    for record in records:
        envelope = envelope_of(record)
        by_topic[record.topic][envelope["event_id"]] = envelope["payload"]
    return {topic: list(events.values()) for topic, events in by_topic.items()}


def assert_each_event_once(events: dict[str, list[dict]], job_id: uuid.UUID, total_steps: int) -> None:
    assert [e["job_id"] for e in events[JobStarted.topic()]] == [str(job_id)]
    assert [e["job_id"] for e in events[JobCompleted.topic()]] == [str(job_id)]
    assert events[JobFailed.topic()] == []
    progressed = [(e["status"], e["step"], repr(sorted(e["metrics"].items()))) for e in events[JobProgressed.topic()]]
    assert progressed, "the job reported no progress"
    assert len(progressed) == len(set(progressed)), f"a JobProgressed was repeated: {progressed}"
    steps = [step for _, step, _ in progressed if step is not None]
    assert steps == sorted(steps) and all(0 < s <= total_steps for s in steps)


@pytest.mark.parametrize("kill", ["sigkill_while_training", "failpoint_after_poll_before_commit"])
async def test_service_killed_mid_job_finishes_it_after_restart_without_duplicates(isolated, openai_fake, kill):
    db, kafka, org = isolated["db"], isolated["kafka"], f"restart-{uuid.uuid4().hex[:8]}"
    epochs = 3
    policy = {"provider": "openai", "base_model": MODEL, "method": "sft", "hyperparameters": {"n_epochs": epochs}}
    # Six polls: validating -> queued -> running -> steps 1, 2, 3 stored; the 6th (step 4) is lost.
    failpoints = {"RLHF_FAILPOINTS": "training.monitor.after_poll@6"} if kill.startswith("failpoint") else {}
    first = start_training(isolated, **failpoints)
    await kafka.send_event(export_dataset(org, "openai_sft", auto_train=policy), org)

    if kill == "sigkill_while_training":
        job = await eventually(lambda: job_in(db, org, {"training"}), timeout=120)
        await eventually(lambda: _has_steps(db, job.id, 3), timeout=120)
        first.kill()
    assert await wait_exit(first) == -9
    job = await the_job(db, org)
    remote = openai_fake.job_for(str(job.id))
    assert job.status == "training" and remote.status == "running" and remote.step < remote.total_steps
    if kill.startswith("failpoint"):
        assert remote.step > max(await stored_steps(db, job.id))  # the provider moved on; we lost what we saw

    start_training(isolated)
    events = await job_events(kafka, db, org)

    assert_each_event_once(events, job.id, remote.total_steps)
    done = await the_job(db, org)
    assert done.status == "completed" and done.job_id == remote.id
    assert await stored_steps(db, job.id) == list(range(1, epochs * 4 + 1))  # every step, each once
    assert openai_fake.creates_for(str(job.id)) == 1 and len(openai_fake.jobs_for(str(job.id))) == 1
    assert openai_fake.violations == []


async def test_crash_after_openai_accepted_the_job_adopts_it_on_restart(isolated, openai_fake):
    db, kafka, org = isolated["db"], isolated["kafka"], f"adopt-{uuid.uuid4().hex[:8]}"
    policy = {"provider": "openai", "base_model": MODEL, "method": "sft", "hyperparameters": {"n_epochs": 1}}
    first = start_training(isolated, RLHF_FAILPOINTS="training.monitor.after_submit")
    await kafka.send_event(export_dataset(org, "openai_sft", auto_train=policy), org)
    assert await wait_exit(first) == -9

    job = await the_job(db, org)
    assert job.status == "pending" and job.job_id is None  # we never stored the OpenAI job's id...
    created = openai_fake.jobs_for(str(job.id))
    assert len(created) == 1  # ...but OpenAI has the job

    start_training(isolated)
    events = await job_events(kafka, db, org)

    assert_each_event_once(events, job.id, created[0].total_steps)
    done = await the_job(db, org)
    assert done.status == "completed" and done.job_id == created[0].id  # the job OpenAI already had
    assert events[JobStarted.topic()][0]["provider_job_id"] == created[0].id
    assert openai_fake.creates_for(str(job.id)) == 1 and len(openai_fake.jobs_for(str(job.id))) == 1
    assert openai_fake.violations == []


async def test_two_monitors_submit_each_pending_job_once(isolated, openai_fake):
    db, org = isolated["db"], f"replicas-{uuid.uuid4().hex[:8]}"
    policy = {"provider": "openai", "base_model": MODEL, "method": "sft", "hyperparameters": {"n_epochs": 1}}
    for _ in range(6):
        await record_export(db, org, export_dataset(org, "openai_sft", auto_train=policy))
    async with db.read() as session:
        job_ids = list((await session.execute(select(FineTuningJob.id).where(
            FineTuningJob.organization == org, FineTuningJob.status == "pending"))).scalars())
    assert len(job_ids) == 6

    replicas = [start_training(isolated, roles=("background",)) for _ in range(2)]
    statuses = await eventually(lambda: _all_ended(db, org), timeout=180)

    assert statuses == {str(j): "completed" for j in job_ids}
    for job_id in job_ids:
        assert openai_fake.creates_for(str(job_id)) == 1, f"job {job_id} was created at OpenAI more than once"
        assert len(openai_fake.jobs_for(str(job_id))) == 1
    async with db.read() as session:
        started = (await session.execute(
            select(outbox.c.correlation_id, func.count()).where(outbox.c.topic == JobStarted.topic())
            .group_by(outbox.c.correlation_id))).all()
    assert sorted(started) == sorted((str(j), 1) for j in job_ids)  # one JobStarted per job
    assert all(r.poll() is None for r in replicas)  # both monitors were up throughout
    assert openai_fake.violations == []


async def test_local_submit_retried_after_a_crash_never_starts_a_second_worker(tmp_path, tiny_model):
    """The monitor retries a submit whose result it never stored: the local provider must find the
    worker the first attempt started (running, or ended) instead of starting another."""
    provider = get_provider("huggingface")
    settings = TrainingSettings(rlhf_training_workdir=tmp_path, rlhf_training_max_local_workers=4)
    hp = provider.normalize_hyperparameters("dpo", {"n_epochs": 50, "max_length": 64})
    event = export_dataset("local-restart", "trl_dpo")
    spec = JobSpec(job_id=str(uuid.uuid4()), organization="local-restart", base_model=str(tiny_model), method="dpo",
                   hyperparameters=hp, training_url=event.url, validation_url=None, suffix=None)
    job_dir = tmp_path / spec.job_id

    first = await provider.submit(spec, settings)
    pid_line = (job_dir / "worker.pid").read_text()
    try:
        retried = await provider.submit(spec, settings)  # the worker is running
        assert retried.provider_job_id == first.provider_job_id
        assert (job_dir / "worker.pid").read_text() == pid_line and _workers_for(job_dir) == 1
    finally:
        for worker in _workers(job_dir):  # whatever this test started must not train on after it
            worker.terminate()

    await eventually(lambda: _no_workers_for(job_dir), timeout=60)
    await provider.submit(spec, settings)  # the worker has ended: its outcome is in the job directory
    assert (job_dir / "worker.pid").read_text() == pid_line and _workers_for(job_dir) == 0
    snapshot = await provider.poll(first.provider_job_id, {}, settings)
    assert snapshot.status == "failed" and "exited without a result" in snapshot.error


async def _no_workers_for(job_dir) -> bool:
    return _workers_for(job_dir) == 0


def _workers_for(job_dir) -> int:
    return len(_workers(job_dir))


def _workers(job_dir) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if "services.training.worker" in (p.info["cmdline"] or []) and str(job_dir) in p.info["cmdline"]]


async def _has_steps(db: Database, job_id: uuid.UUID, n: int) -> bool:
    return len(await stored_steps(db, job_id)) >= n


async def _all_ended(db: Database, organization: str) -> dict[str, str] | None:
    async with db.read() as session:
        stmt = select(FineTuningJob.id, FineTuningJob.status).where(FineTuningJob.organization == organization)
        statuses = {str(job_id): status for job_id, status in (await session.execute(stmt)).all()}
    return statuses if all(s in ("completed", "failed", "cancelled") for s in statuses.values()) else None
