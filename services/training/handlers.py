"""What the training service does, one function per purpose. Each runs inside a unit of work that
its caller (api.py, consumers.py or monitor.py) opened; none commits or publishes by itself.
Calls to providers happen outside these transactions (monitor.py), except cancel, which must
reach the provider before the job is marked cancelled."""

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.training import domain, repository
from services.training.models import DatasetVersion, FineTuningJob
from services.training.providers import get_provider
from services.training.providers.base import JobSpec, ProviderError, Snapshot, Submission
from services.training.settings import TrainingSettings
from shared.consumer import Delivery
from shared.db import UnitOfWork
from shared.events import DatasetExported, ExportRef, JobCompleted, JobFailed, JobProgressed, JobStarted
from shared.objectstore import ObjectNotFound, object_store_from_url
from shared.observability import get_logger
from shared.settings import get_settings

AUTO_TRAIN_ACTOR = "auto-train"
log = get_logger(__name__)


@dataclass(frozen=True)
class LaunchRequest:
    dataset_id: uuid.UUID
    export_version: int | None
    provider: str
    base_model: str
    method: str
    hyperparameters: dict[str, Any]
    suffix: str | None = None
    model_name: str | None = None  # what the registry registers the model as (default: the dataset's name)


@dataclass(frozen=True)
class Plan:
    """A launch checked against everything but the budget, with its cost estimate."""

    request: LaunchRequest
    dataset: DatasetVersion
    hyperparameters: dict[str, Any]
    estimate: domain.CostEstimate


# ---- launching -------------------------------------------------------------------------------

async def plan_launch(uow_or_session, organization: str, request: LaunchRequest, settings: TrainingSettings) -> Plan:
    """Every check a provider would make, before anything is sent: 4xx errors name the problem."""
    session = getattr(uow_or_session, "session", uow_or_session)
    provider = get_provider(request.provider)
    dataset = await repository.get_dataset(session, organization, request.dataset_id, request.export_version)
    if dataset is None:
        raise domain.DatasetNotFound(request.dataset_id, request.export_version)
    domain.check_format(request.provider, request.method, dataset.format)
    stored = provider.check_model(request.base_model, settings)
    if stored is not None and stored != request.base_model:
        request = replace(request, base_model=stored)  # e.g. a local model by its name, not its path
    hyperparameters = provider.normalize_hyperparameters(request.method, request.hyperparameters)
    provider.check_credentials(settings)
    examples, tokens = await asyncio.to_thread(_count_tokens, dataset.url)
    price = _price(request.provider, request.base_model, settings)
    epochs = provider.epochs(hyperparameters, examples)
    return Plan(request, dataset, hyperparameters, domain.estimate_cost(examples, tokens, epochs, price))


def _count_tokens(url: str) -> tuple[int, int]:
    try:
        with object_store_from_url(get_settings().object_store_url()).open(url) as src:
            return domain.estimate_file_tokens(src.read().splitlines())
    except (ObjectNotFound, ValueError) as exc:
        raise domain.InvalidLaunch("dataset", f"the dataset's training file cannot be read: {exc}") from exc


async def budget_left(uow: UnitOfWork, organization: str, *, lock: bool) -> tuple[float | None, float]:
    budget = await repository.budget(uow.session, organization, for_update=lock)
    spent = await repository.month_spend(uow.session, organization, domain.month_start())
    return (float(budget.monthly_limit) if budget else None), spent


async def launch_job(
    uow: UnitOfWork,
    organization: str,
    request: LaunchRequest,
    settings: TrainingSettings,
    *,
    actor: str,
    correlation_id: str | None = None,
) -> FineTuningJob:
    """Checks and stores a job as pending; the monitor submits it to the provider."""
    plan = await plan_launch(uow, organization, request, settings)
    request = plan.request  # as the provider stores it (a local model by its name)
    limit, spent = await budget_left(uow, organization, lock=True)  # the lock serialises concurrent launches
    domain.check_budget(plan.estimate.cost, limit, spent)
    now = datetime.now(UTC)
    job = FineTuningJob(
        id=uuid.uuid4(), organization=organization, dataset_id=plan.dataset.dataset_id,
        export_version=plan.dataset.export_version, dataset_format=plan.dataset.format,
        training_url=plan.dataset.url, validation_url=plan.dataset.validation_url,
        provider=request.provider, base_model=request.base_model, method=request.method,
        hyperparameters=plan.hyperparameters, suffix=request.suffix, status=domain.PENDING,
        model_name=request.model_name or plan.dataset.name, export_ref=_export_ref(plan.dataset),
        provider_cursor={}, training_metrics={}, estimated_tokens=plan.estimate.tokens_per_epoch,
        epochs=plan.estimate.epochs, cost_estimate=Decimal(str(plan.estimate.cost)),
        auto_launched=actor == AUTO_TRAIN_ACTOR, created_by=actor, created_at=now, updated_at=now,
    )
    await repository.add_job(uow.session, job)
    repository.add_event(uow.session, job.id, "status", f"launched by {actor}; waiting to be sent to {job.provider}",
                         status=domain.PENDING, cost_estimate=plan.estimate.cost)
    repository.audit(uow.session, organization, actor, "launch", job.id, provider=job.provider,
                     base_model=job.base_model, method=job.method, dataset_id=str(job.dataset_id),
                     export_version=job.export_version, cost_estimate=plan.estimate.cost,
                     correlation_id=correlation_id)
    return job


async def record_exported_datasets(uow: UnitOfWork, deliveries: Sequence[Delivery[DatasetExported]]) -> None:
    """DatasetExported: remember the version; launch a job when it carries an auto-train policy."""
    settings = _settings()
    for delivery in deliveries:
        event = delivery.event
        organization = delivery.envelope.organization
        await repository.upsert_dataset(uow.session, dict(
            organization=organization, dataset_id=event.dataset_id, export_version=event.export_version,
            name=event.name, dataset_type=event.dataset_type, format=event.format, url=event.url,
            sha256=event.sha256, validation_url=event.validation_url, counts=event.counts,
            auto_train=event.auto_train, validation_sha256=event.validation_sha256, manifest_url=event.manifest_url,
        ))
        if event.auto_train:
            await _auto_launch(uow, organization, event, settings, delivery.envelope.correlation_id)


async def _auto_launch(uow: UnitOfWork, organization: str, event: DatasetExported, settings: TrainingSettings,
                       correlation_id: str) -> None:
    policy = event.auto_train or {}
    try:
        request = LaunchRequest(
            dataset_id=event.dataset_id, export_version=event.export_version,
            provider=str(policy.get("provider", "")), base_model=str(policy.get("base_model", "")),
            method=str(policy.get("method", "sft")), hyperparameters=dict(policy.get("hyperparameters") or {}),
            suffix=policy.get("suffix"), model_name=policy.get("model_name"),
        )
        await launch_job(uow, organization, request, settings, actor=AUTO_TRAIN_ACTOR, correlation_id=correlation_id)
    except (domain.InvalidLaunch, domain.BudgetExceeded, domain.MissingCredentials) as exc:
        # The dataset is still recorded; the refusal is kept where an admin looks for it.
        repository.audit(uow.session, organization, AUTO_TRAIN_ACTOR, "auto_train_refused", None,
                         dataset_id=str(event.dataset_id), export_version=event.export_version, reason=str(exc))
        log.warning("auto-train refused", dataset_id=str(event.dataset_id), reason=str(exc))


# ---- cancel and budget ------------------------------------------------------------------------

async def cancel_job(uow: UnitOfWork, organization: str, job_id: uuid.UUID, settings: TrainingSettings, *,
                     actor: str, correlation_id: str | None = None) -> FineTuningJob:
    job = await repository.get_job(uow.session, organization, job_id, for_update=True)
    if job is None:
        raise domain.JobNotFound(job_id)
    domain.transition(job.status, domain.CANCELLED)
    if job.job_id:
        try:
            await get_provider(job.provider).cancel(job.job_id, settings)
        except ProviderError as exc:
            if exc.transient:
                raise
            raise domain.IllegalTransition(f"{job.provider} would not cancel the job: {exc}") from exc
    _finish(uow, job, domain.CANCELLED, error=f"cancelled by {actor}", correlation_id=correlation_id)
    repository.audit(uow.session, organization, actor, "cancel", job.id, provider=job.provider,
                     provider_job_id=job.job_id, correlation_id=correlation_id)
    return job


async def set_budget(uow: UnitOfWork, organization: str, monthly_limit: Decimal, *, actor: str) -> None:
    await repository.set_budget(uow.session, organization, monthly_limit, actor)
    repository.audit(uow.session, organization, actor, "set_budget", None, monthly_limit=float(monthly_limit))


# ---- the monitor's effects ---------------------------------------------------------------------

def job_spec(job: FineTuningJob) -> JobSpec:
    return JobSpec(
        job_id=str(job.id), organization=job.organization, base_model=job.base_model, method=job.method,
        hyperparameters=dict(job.hyperparameters), training_url=job.training_url,
        validation_url=job.validation_url, suffix=job.suffix,
    )


async def record_submission(uow: UnitOfWork, job_id: uuid.UUID, submission: Submission) -> bool:
    """The provider accepted the job. Returns False when the job was cancelled meanwhile."""
    job = await repository.lock_job(uow.session, job_id)
    if job is not None and job.job_id == submission.provider_job_id:
        return True  # an adopted job some earlier attempt already stored: it is ours, never cancel it here
    if job is None or job.status != domain.PENDING:
        return False
    now = datetime.now(UTC)
    job.job_id, job.provider_status = submission.provider_job_id, submission.provider_status
    job.status = domain.transition(job.status, submission.status)
    job.started_at = job.updated_at = now
    job.next_attempt_at = None
    repository.add_event(uow.session, job.id, "status", f"sent to {job.provider} as {submission.provider_job_id}",
                         status=job.status, provider_status=submission.provider_status)
    uow.emit(JobStarted(**_job_fields(job), method=job.method, provider_job_id=job.job_id,
                        cost_estimate=float(job.cost_estimate), export=_export_event_ref(job)),
             organization=job.organization, correlation_id=str(job.id))
    return True


async def record_provider_error(uow: UnitOfWork, job_id: uuid.UUID, error: ProviderError,
                                settings: TrainingSettings) -> None:
    """Transient: try again later with backoff (the job fails after too many tries). Otherwise: fail the job."""
    job = await repository.lock_job(uow.session, job_id)
    if job is None or job.status in domain.TERMINAL:
        return
    job.submit_attempts += 1
    if error.transient and job.submit_attempts < settings.rlhf_training_max_submit_attempts:
        delay = min(300.0, settings.rlhf_training_poll_interval * 2 ** job.submit_attempts)
        job.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
        repository.add_event(uow.session, job.id, "retry", f"{error}; trying again in {delay:.0f}s")
        return
    _finish(uow, job, domain.FAILED, error=str(error), correlation_id=str(job.id))


async def record_snapshot(uow: UnitOfWork, job_id: uuid.UUID, snapshot: Snapshot, settings: TrainingSettings) -> None:
    """What one poll saw: new metric points, provider messages, a status change, the new cursor —
    all in one transaction with the events they cause, so a restart neither loses nor repeats any."""
    job = await repository.lock_job(uow.session, job_id)
    if job is None or job.status not in domain.ACTIVE:
        return
    now = datetime.now(UTC)
    new_steps = await repository.add_metrics(
        uow.session, job.id, [{"step": p.step, "epoch": p.epoch, "metrics": p.values} for p in snapshot.points]
    )
    fresh = [p for p in snapshot.points if p.step in new_steps]
    _update_summary(job, fresh, snapshot)
    for message in snapshot.messages:
        repository.add_event(uow.session, job.id, "provider", message)
    job.provider_cursor, job.provider_status = snapshot.cursor, snapshot.provider_status
    job.submit_attempts, job.next_attempt_at, job.updated_at = 0, None, now
    if snapshot.trained_tokens:
        job.trained_tokens = snapshot.trained_tokens
    target = snapshot.status
    if target in domain.TERMINAL and domain.can_transition(job.status, target):
        if target == domain.COMPLETED:
            _complete(uow, job, snapshot, settings)
        else:
            _finish(uow, job, target, error=snapshot.error or f"{job.provider} reports the job {target}",
                    correlation_id=str(job.id))
        return
    status_changed = target != job.status and domain.can_transition(job.status, target)
    if status_changed:
        job.status = target
        repository.add_event(uow.session, job.id, "status", f"{job.provider} reports {snapshot.provider_status}",
                             status=target)
    interval = timedelta(seconds=settings.rlhf_training_progress_interval)
    if status_changed or (fresh and (job.last_progress_at is None or now - job.last_progress_at >= interval)):
        job.last_progress_at = now
        summary = job.training_metrics
        uow.emit(JobProgressed(**_job_fields(job), status=job.status, progress=summary.get("progress"),
                               epoch=summary.get("epoch"), step=summary.get("step"),
                               metrics=summary.get("latest", {})),
                 organization=job.organization, correlation_id=str(job.id))


def _update_summary(job: FineTuningJob, fresh: list, snapshot: Snapshot) -> None:
    summary = dict(job.training_metrics or {})
    if snapshot.total_steps:
        summary["total_steps"] = snapshot.total_steps
    if fresh:
        last = max(fresh, key=lambda p: p.step)
        summary["step"] = last.step
        summary["latest"] = {k: float(v) for k, v in last.values.items()}
        # Providers report validation metrics every few steps only: the last value of each key.
        seen = dict(summary.get("last_seen", {}))
        for point in sorted(fresh, key=lambda p: p.step):
            seen.update({k: float(v) for k, v in point.values.items()})
        summary["last_seen"] = seen
        if last.epoch is not None:
            summary["epoch"] = last.epoch
    if snapshot.epoch is not None:
        summary["epoch"] = snapshot.epoch
    progress = domain.progress_percent(summary.get("step"), summary.get("total_steps"))
    if progress is not None:
        summary["progress"] = progress
    job.training_metrics = summary


def _complete(uow: UnitOfWork, job: FineTuningJob, snapshot: Snapshot, settings: TrainingSettings) -> None:
    now = datetime.now(UTC)
    price = _price(job.provider, job.base_model, settings)
    trained = job.trained_tokens or job.estimated_tokens * job.epochs  # Bedrock reports no token count
    job.trained_tokens = trained
    seconds = snapshot.final_metrics.get("train_seconds")
    if get_provider(job.provider).local and isinstance(seconds, int | float):  # the machine time it took
        device = "gpu" if snapshot.final_metrics.get("on_gpu") else "cpu"
        job.actual_cost = Decimal(str(domain.cost_of_hours(seconds / 3600, settings.local_hour_price(device))))
    else:
        job.actual_cost = Decimal(str(domain.cost_of_tokens(trained, price)))
    job.status, job.completed_at, job.updated_at = domain.COMPLETED, now, now
    job.resulting_model_id = snapshot.resulting_model_id or job.job_id
    final = {**job.training_metrics.get("latest", {}), **snapshot.final_metrics}
    job.training_metrics = {**job.training_metrics, "final": final, "progress": 100.0}
    # Local runs evaluate themselves; a provider's evaluation is what it measured on the validation file.
    job.evaluation = snapshot.evaluation or domain.provider_evaluation(
        job.provider, {**job.training_metrics.get("last_seen", {}), **final}, job.validation_url is not None)
    repository.add_event(uow.session, job.id, "status", f"completed: {job.resulting_model_id}", status=job.status,
                         actual_cost=float(job.actual_cost), evaluation=job.evaluation)
    uow.emit(JobCompleted(**_job_fields(job), resulting_model_id=job.resulting_model_id, final_metrics=final,
                          actual_cost=float(job.actual_cost), completed_at=now, method=job.method,
                          hyperparameters=dict(job.hyperparameters), cost_estimate=float(job.cost_estimate),
                          provider_job_id=job.job_id, export=_export_event_ref(job), evaluation=job.evaluation),
             organization=job.organization, correlation_id=str(job.id))


def _finish(uow: UnitOfWork, job: FineTuningJob, status: str, *, error: str, correlation_id: str | None) -> None:
    """Failed or cancelled: the job ends without a model; downstream hears JobFailed either way."""
    now = datetime.now(UTC)
    job.status = domain.transition(job.status, status)
    job.error_message = error[:4000]
    job.completed_at = job.updated_at = now
    repository.add_event(uow.session, job.id, "status", f"{status}: {error}", status=status)
    uow.emit(JobFailed(**_job_fields(job), error=job.error_message, failed_at=now,
                       cancelled=status == domain.CANCELLED),
             organization=job.organization, correlation_id=correlation_id or str(job.id))


def _price(provider: str, base_model: str, settings: TrainingSettings) -> float:
    """Per million trained tokens: the provider's price of the model; for a local run, the machine's hourly
    price over the tokens it trains in an hour (the estimate; a finished run costs the hours it took)."""
    if get_provider(provider).local:
        return settings.local_price_per_million()
    return settings.prices().get(base_model, 0.0)


def _job_fields(job: FineTuningJob) -> dict[str, Any]:
    return dict(job_id=job.id, dataset_id=job.dataset_id, provider=job.provider, base_model=job.base_model,
                export_version=job.export_version, model_name=job.model_name)


def _export_ref(dataset: DatasetVersion) -> dict[str, Any]:
    """The export a job trains on, as DatasetExported described it (kept on the job for its events)."""
    return ExportRef(
        dataset_id=dataset.dataset_id, name=dataset.name, export_version=dataset.export_version,
        format=dataset.format, sha256=dataset.sha256, counts=dict(dataset.counts or {}), url=dataset.url,
        validation_url=dataset.validation_url, manifest_url=dataset.manifest_url,
    ).model_dump(mode="json")


def _export_event_ref(job: FineTuningJob) -> ExportRef | None:
    return ExportRef.model_validate(job.export_ref) if job.export_ref else None


def _settings() -> TrainingSettings:
    from services.training.settings import get_training_settings

    return get_training_settings()
