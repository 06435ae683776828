"""The job monitor, a background role of the service process: sends pending jobs to their
provider and polls active ones. Every provider call happens outside a transaction; what it
returns is applied in one unit of work with the events it causes (handlers.record_*). All state
lives in the database (the provider's cursor included), so a restarted monitor carries on where
the last one committed, without repeating an event.

Several monitors may run (replicas of the service): each provider call for a job is made while
holding the job's advisory lock (repository.job_claim), and the job is read again under it, so a
job is submitted once and polled by one monitor at a time. A crash after the provider accepted a
job but before we stored its id is covered by the providers: they find the job they already
started for our id and adopt it instead of starting a second one."""

import asyncio
import uuid
from datetime import UTC, datetime

from services.training import domain, handlers, repository
from services.training.providers import get_provider
from services.training.providers.base import ProviderError
from services.training.settings import TrainingSettings, get_training_settings
from shared.db import Database
from shared.failpoints import failpoint
from shared.observability import get_logger
from shared.settings import Settings

log = get_logger(__name__)


async def run_monitor(db: Database, settings: Settings) -> None:
    training = get_training_settings()
    log.info("training monitor started", poll_interval=training.rlhf_training_poll_interval)
    while True:
        try:
            await monitor_once(db, training)
        except Exception:  # the database may be away for a moment: never let the loop die
            log.exception("monitor pass failed; trying again")
        await asyncio.sleep(training.rlhf_training_poll_interval)


async def monitor_once(db: Database, settings: TrainingSettings) -> None:
    now = datetime.now(UTC)
    async with db.read() as session:
        pending = await repository.jobs_to_submit(session, now)
        active = await repository.jobs_to_poll(session, now)
    for job_id in pending:
        await submit(db, job_id, settings)
    # Each poll holds two connections (its claim, then a transaction): bound them well below the pool.
    slots = asyncio.Semaphore(settings.rlhf_training_monitor_concurrency)

    async def bounded(job_id: uuid.UUID) -> None:
        async with slots:
            await poll(db, job_id, settings)

    await asyncio.gather(*(bounded(job_id) for job_id in active))


async def submit(db: Database, job_id: uuid.UUID, settings: TrainingSettings) -> None:
    async with repository.job_claim(db.engine, job_id) as claimed:
        if claimed:  # otherwise another monitor is on it right now
            await _submit_claimed(db, job_id, settings)


async def _submit_claimed(db: Database, job_id: uuid.UUID, settings: TrainingSettings) -> None:
    async with db.read() as session:
        job = await repository.lock_job(session, job_id)
        if job is None or job.status != domain.PENDING:
            return
        spec, provider = handlers.job_spec(job), get_provider(job.provider)
    try:
        submission = await provider.submit(spec, settings)
    except ProviderError as exc:
        log.warning("submit failed", job_id=str(job_id), error=str(exc), transient=exc.transient)
        async with db.unit_of_work() as uow:
            await handlers.record_provider_error(uow, job_id, exc, settings)
        return
    failpoint("training.monitor.after_submit")  # the provider has the job; we have not stored its id yet
    async with db.unit_of_work() as uow:
        accepted = await handlers.record_submission(uow, job_id, submission)
    if not accepted:  # cancelled while it was being sent: stop it at the provider too
        await _cancel_quietly(provider, submission.provider_job_id, settings)


async def poll(db: Database, job_id: uuid.UUID, settings: TrainingSettings) -> None:
    async with repository.job_claim(db.engine, job_id) as claimed:
        if claimed:
            await _poll_claimed(db, job_id, settings)


async def _poll_claimed(db: Database, job_id: uuid.UUID, settings: TrainingSettings) -> None:
    async with db.read() as session:
        job = await repository.lock_job(session, job_id)
        if job is None or job.status not in domain.ACTIVE or not job.job_id:
            return
        provider, provider_job_id, cursor = get_provider(job.provider), job.job_id, dict(job.provider_cursor)
    try:
        snapshot = await provider.poll(provider_job_id, cursor, settings)
    except ProviderError as exc:
        log.warning("poll failed", job_id=str(job_id), error=str(exc), transient=exc.transient)
        async with db.unit_of_work() as uow:
            await handlers.record_provider_error(uow, job_id, exc, settings)
        return
    failpoint("training.monitor.after_poll")  # the provider has moved on; the cursor is not stored yet
    async with db.unit_of_work() as uow:
        await handlers.record_snapshot(uow, job_id, snapshot, settings)


async def _cancel_quietly(provider, provider_job_id: str, settings: TrainingSettings) -> None:
    try:
        await provider.cancel(provider_job_id, settings)
    except ProviderError as exc:
        log.warning("could not cancel a job sent after it was cancelled", provider_job_id=provider_job_id,
                    error=str(exc))
