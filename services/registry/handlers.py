"""What the registry does, one function per purpose. Each runs inside the unit of work its caller
opened (api.py or the shared consumer); none commits or publishes by itself.

Every change to a name's versions first takes that name's advisory lock (repository.lock_name),
so registrations, deploys, rollbacks and archives of one name happen one at a time; the partial
unique index on the deployed status is the backstop should anything bypass it."""

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.registry import domain, repository
from services.registry.models import ModelVersion
from shared.consumer import Delivery
from shared.db import UnitOfWork
from shared.downloads import export_links, in_store, stored_url
from shared.errors import Conflict, DomainError, Invalid
from shared.events import (
    DeploymentRefused,
    DeploymentRequested,
    JobCompleted,
    ModelArchived,
    ModelDeployed,
    ModelRegistered,
    ModelRolledBack,
)
from shared.objectstore import ObjectNotFound, default_store
from shared.paging import InvalidCursor

SERVICE = "registry"
MAX_NAME = 200


def _now() -> datetime:
    return datetime.now(UTC)


def _registered(version: ModelVersion) -> ModelRegistered:
    return ModelRegistered(
        model_version_id=version.id, name=version.name, model_version=version.version, model_id=version.model_id,
        base_model=version.base_model, status=version.status, serving=version.serving,
        fine_tuning_job_id=version.fine_tuning_job_id, performance_metrics=version.performance_metrics,
        registered_by=version.registered_by, registered_at=version.created_at,
    )


async def _new_version(uow: UnitOfWork, organization: str, name: str, base_model: str,
                       version: domain.Version | None) -> domain.Version:
    """The version number a new registration gets (the rules), or checks the one asked for is free."""
    await repository.lock_name(uow.session, organization, name)
    if version is None:
        latest = await repository.latest(uow.session, organization, name)
        current = domain.Version(latest.major, latest.minor, latest.patch) if latest else None
        return domain.next_version(current, latest.base_model if latest else None, base_model)
    if await repository.version_taken(uow.session, organization, name, str(version)):
        raise Conflict(f"{name} {version} is already registered", field="version")
    return version


async def _insert(uow: UnitOfWork, organization: str, values: dict[str, Any], version: domain.Version,
                  actor: str, correlation_id: str | None) -> ModelVersion:
    now = _now()
    row = ModelVersion(id=uuid.uuid4(), organization=organization, version=str(version), major=version.major,
                       minor=version.minor, patch=version.patch, status=domain.TESTING, registered_by=actor,
                       created_at=now, updated_at=now, **values)
    await repository.add(uow.session, row)
    repository.record(uow.session, row, "register", None, domain.TESTING, actor)
    uow.emit(_registered(row), organization=organization, correlation_id=correlation_id)
    return row


# ---- registration --------------------------------------------------------------------------------

async def register_completed_job(uow: UnitOfWork, deliveries: Sequence[Delivery[JobCompleted]]) -> None:
    """JobCompleted: the job's model becomes a version in `testing`, once per job."""
    for delivery in deliveries:
        event = delivery.event
        organization = delivery.envelope.organization
        if await repository.by_job(uow.session, organization, event.job_id) is not None:
            continue  # the same job reported twice (a replayed event with a new id) is one version
        name = (event.model_name or (event.export.name if event.export else None) or "model").strip()[:MAX_NAME]
        version = await _new_version(uow, organization, name, event.base_model, None)
        if await repository.by_job(uow.session, organization, event.job_id) is not None:
            continue  # another replica registered it while we waited for the name's lock
        values = dict(
            name=name, model_id=event.resulting_model_id, base_model=event.base_model,
            fine_tuning_job_id=event.job_id,
            serving=domain.serving_from_job(event.provider, event.base_model, event.resulting_model_id),
            performance_metrics={"evaluation": event.evaluation, "final_metrics": event.final_metrics},
            deployment_config={}, lineage=_job_lineage(event),
        )
        await _insert(uow, organization, values, version, f"job:{event.job_id}", delivery.envelope.correlation_id)


def _job_lineage(event: JobCompleted) -> dict[str, Any]:
    return {
        "job": {"id": str(event.job_id), "provider": event.provider, "provider_job_id": event.provider_job_id,
                "base_model": event.base_model, "method": event.method, "hyperparameters": event.hyperparameters,
                "cost_estimate": event.cost_estimate, "actual_cost": event.actual_cost,
                "completed_at": event.completed_at.isoformat()},
        "dataset_id": str(event.dataset_id) if event.dataset_id else None,
        "export_version": event.export_version,
        "export": event.export.model_dump(mode="json") if event.export else None,
    }


@dataclass(frozen=True)
class Registration:
    name: str
    model_id: str
    base_model: str
    serving: dict[str, Any]
    version: str | None = None
    performance_metrics: dict[str, Any] = field(default_factory=dict)
    deployment_config: dict[str, Any] = field(default_factory=dict)
    description: str | None = None


def _serving_given(serving: dict[str, Any]) -> dict[str, Any]:
    """`serving` as given over HTTP, checked; a local adapter named as answers name it (`store:<key>`) is
    stored as its storage URL, which the services use. A file:// URL must lie in the object store."""
    adapter = serving.get("adapter_url") if serving.get("kind") == "local" else None
    if isinstance(adapter, str):
        try:
            url = stored_url(adapter)
        except ValueError as exc:
            raise Invalid("serving.adapter_url", f"serving.adapter_url: {exc}") from None
        if url.startswith("file:") and not in_store(url):
            raise Invalid("serving.adapter_url",
                          "serving.adapter_url must name an object of the object store (store:<key>) or s3://...")
        serving = {**serving, "adapter_url": url}
    return domain.check_serving(serving)


async def register_by_hand(uow: UnitOfWork, organization: str, request: Registration, *, actor: str,
                           correlation_id: str | None) -> ModelVersion:
    """A version registered over HTTP, e.g. the model serving production today."""
    serving = _serving_given(request.serving)
    _no_evaluation_by_hand(request.performance_metrics)
    wanted = domain.parse_version(request.version) if request.version else None
    version = await _new_version(uow, organization, request.name, request.base_model, wanted)
    values = dict(name=request.name, model_id=request.model_id, base_model=request.base_model, serving=serving,
                  performance_metrics=request.performance_metrics, deployment_config=request.deployment_config,
                  description=request.description, lineage={})
    return await _insert(uow, organization, values, version, actor, correlation_id)


def _no_evaluation_by_hand(metrics: dict[str, Any]) -> None:
    if "evaluation" in metrics:
        raise Invalid("performance_metrics.evaluation",
                      "the evaluation is the training service's to report; it cannot be set by hand")


@dataclass(frozen=True)
class Changes:
    version: str | None = None
    bump: str | None = None
    serving: dict[str, Any] | None = None
    deployment_config: dict[str, Any] | None = None
    performance_metrics: dict[str, Any] | None = None
    description: str | None = None


async def update(uow: UnitOfWork, organization: str, model_version_id: uuid.UUID, changes: Changes, *,
                 actor: str) -> ModelVersion:
    """PATCH: descriptive fields, and a patch bump of the version number."""
    row = await _locked(uow, organization, model_version_id)
    if row.status == domain.ARCHIVED:
        raise Conflict(f"{row.name} {row.version} is archived and cannot be changed")
    if row.status == domain.DEPLOYED and (changes.serving is not None or changes.deployment_config is not None):
        # Routers were told how to call it by ModelDeployed; they would not hear of a change made here.
        raise Conflict(f"{row.name} {row.version} is deployed: register and deploy a new version to change "
                       "how it is called or configured")
    if changes.version or changes.bump:
        current = domain.Version(row.major, row.minor, row.patch)
        if changes.version:
            wanted = domain.parse_version(changes.version)
        else:
            latest_patch = await repository.highest_patch(uow.session, row)
            wanted = domain.Version(row.major, row.minor, latest_patch + 1)
        domain.check_patch_bump(current, wanted)
        if await repository.version_taken(uow.session, organization, row.name, str(wanted)):
            raise Conflict(f"{row.name} {wanted} is already registered", field="version")
        old = row.version
        row.version, row.major, row.minor, row.patch = str(wanted), wanted.major, wanted.minor, wanted.patch
        repository.record(uow.session, row, "patch", row.status, row.status, actor, previous=old)
    if changes.serving is not None:
        row.serving = _serving_given(changes.serving)
    if changes.deployment_config is not None:
        row.deployment_config = changes.deployment_config
    if changes.performance_metrics is not None:
        _no_evaluation_by_hand(changes.performance_metrics)
        row.performance_metrics = {**row.performance_metrics, **changes.performance_metrics}
    if changes.description is not None:
        row.description = changes.description
    row.updated_at = _now()
    await uow.session.flush()
    return row


async def _locked(uow: UnitOfWork, organization: str, model_version_id: uuid.UUID) -> ModelVersion:
    """The version, with its name's lock taken first (always name lock, then row locks: no deadlocks)."""
    name = await repository.name_of(uow.session, organization, model_version_id)
    if name is None:
        raise domain.ModelNotFound(model_version_id)
    await repository.lock_name(uow.session, organization, name)
    row = await repository.get(uow.session, organization, model_version_id, for_update=True)
    if row is None:
        raise domain.ModelNotFound(model_version_id)
    return row


# ---- deploy, rollback, archive ---------------------------------------------------------------------

async def current_policy(session, organization: str) -> domain.Policy:
    row = await repository.policy(session, organization)
    if row is None:
        return domain.Policy()
    return domain.Policy(
        require_evaluation=row.require_evaluation, min_preference_accuracy=row.min_preference_accuracy,
        min_reward_margin=row.min_reward_margin, max_eval_loss=row.max_eval_loss,
        min_token_accuracy=row.min_token_accuracy, max_leak_findings=row.max_leak_findings,
    )


async def set_policy(uow: UnitOfWork, organization: str, values: dict[str, Any], *, actor: str) -> domain.Policy:
    await repository.set_policy(uow.session, organization, values, actor)
    return await current_policy(uow.session, organization)


@dataclass(frozen=True)
class DeployRequest:
    actor: str
    reason: str | None = None
    force: bool = False
    deployment_config: dict[str, Any] | None = None
    experiment_id: str | None = None


async def deploy(uow: UnitOfWork, organization: str, model_version_id: uuid.UUID, request: DeployRequest, *,
                 correlation_id: str | None) -> ModelVersion:
    """The version takes its name's traffic; the one deployed before becomes deprecated."""
    if request.force and not (request.reason or "").strip():
        raise Invalid("reason", "a forced deploy needs a reason (it is recorded in the history)")
    target = await _locked(uow, organization, model_version_id)
    domain.check_deployable(target.name, target.version, target.status)
    reasons = domain.gate(target.performance_metrics.get("evaluation"), await current_policy(uow.session, organization))
    if reasons and not request.force:
        raise domain.GateRefused(reasons)
    now = _now()
    current = await repository.deployed(uow.session, organization, target.name)
    if current is not None:
        current.status, current.updated_at = domain.DEPRECATED, now
        repository.record(uow.session, current, "deprecate", domain.DEPLOYED, domain.DEPRECATED, request.actor,
                          reason=f"replaced by {target.version}", experiment_id=request.experiment_id)
        await uow.session.flush()  # the slot is free before the new version takes it (unique index)
    from_status = target.status
    target.status, target.deployed_at, target.updated_at = domain.DEPLOYED, now, now
    if request.deployment_config is not None:
        target.deployment_config = request.deployment_config
    await uow.session.flush()
    overridden = {"overridden_gate": reasons} if reasons else {}
    repository.record(uow.session, target, "deploy", from_status, domain.DEPLOYED, request.actor,
                      reason=request.reason, experiment_id=request.experiment_id, forced=bool(reasons),
                      previous_version_id=current.id if current else None, **overridden)
    uow.emit(ModelDeployed(
        model_version_id=target.id, name=target.name, model_version=target.version, model_id=target.model_id,
        serving=target.serving, deployment_config=target.deployment_config,
        previous_version_id=current.id if current else None, previous_version=current.version if current else None,
        deployed_by=request.actor, reason=request.reason, forced=bool(reasons),
        source_experiment_id=request.experiment_id, deployed_at=now,
    ), organization=organization, correlation_id=correlation_id)
    return target


async def rollback(uow: UnitOfWork, organization: str, model_version_id: uuid.UUID, *, actor: str,
                   reason: str | None, correlation_id: str | None) -> ModelVersion:
    """The name of `model_version_id` goes back to the version deployed before its current one."""
    named = await _locked(uow, organization, model_version_id)
    current = await repository.deployed(uow.session, organization, named.name)
    if current is None:
        raise Conflict(f"no version of {named.name} is deployed; there is nothing to roll back")
    went_live = await repository.last_went_live(uow.session, organization, current.id)
    previous_id = went_live.previous_version_id if went_live else None
    if previous_id is None:
        raise Conflict(f"no version of {named.name} was deployed before {current.version}; nothing to roll back to")
    previous = await repository.get(uow.session, organization, previous_id, for_update=True)
    if previous is None or previous.status == domain.ARCHIVED:
        which = previous.version if previous else str(previous_id)
        raise Conflict(f"{named.name} {which}, deployed before {current.version}, is archived; "
                       "deploy a version instead")
    # The version before `previous` (when it went live) is where a further rollback goes.
    previous_live = await repository.last_went_live(uow.session, organization, previous.id)
    now = _now()
    current.status, current.updated_at = domain.DEPRECATED, now
    repository.record(uow.session, current, "rollback", domain.DEPLOYED, domain.DEPRECATED, actor, reason=reason)
    await uow.session.flush()
    from_status = previous.status
    previous.status, previous.deployed_at, previous.updated_at = domain.DEPLOYED, now, now
    await uow.session.flush()
    repository.record(uow.session, previous, "rollback", from_status, domain.DEPLOYED, actor, reason=reason,
                      previous_version_id=previous_live.previous_version_id if previous_live else None,
                      rolled_back_from=str(current.id))
    uow.emit(ModelRolledBack(
        model_version_id=previous.id, name=previous.name, model_version=previous.version, model_id=previous.model_id,
        serving=previous.serving, deployment_config=previous.deployment_config, rolled_back_from_id=current.id,
        rolled_back_from_version=current.version, rolled_back_by=actor, reason=reason, rolled_back_at=now,
    ), organization=organization, correlation_id=correlation_id)
    return previous


async def archive(uow: UnitOfWork, organization: str, model_version_id: uuid.UUID, *, actor: str,
                  reason: str | None, correlation_id: str | None) -> ModelVersion:
    row = await _locked(uow, organization, model_version_id)
    domain.check_archivable(row.name, row.version, row.status)
    now = _now()
    from_status = row.status
    row.status, row.updated_at = domain.ARCHIVED, now
    repository.record(uow.session, row, "archive", from_status, domain.ARCHIVED, actor, reason=reason)
    uow.emit(ModelArchived(model_version_id=row.id, name=row.name, model_version=row.version, archived_by=actor,
                           reason=reason, archived_at=now), organization=organization, correlation_id=correlation_id)
    return row


async def deploy_requested(uow: UnitOfWork, deliveries: Sequence[Delivery[DeploymentRequested]]) -> None:
    """DeploymentRequested: the same checks as an HTTP deploy (no override by event); a refusal is
    answered with DeploymentRefused saying why."""
    for delivery in deliveries:
        event = delivery.event
        organization, correlation_id = delivery.envelope.organization, delivery.envelope.correlation_id
        request = DeployRequest(actor=event.requested_by, reason=event.reason, experiment_id=event.source_experiment_id,
                                deployment_config=event.deployment_config or None)
        try:
            async with uow.session.begin_nested():  # a refusal leaves nothing of the attempt behind
                await deploy(uow, organization, event.model_version_id, request, correlation_id=correlation_id)
        except DomainError as exc:
            uow.emit(DeploymentRefused(
                model_version_id=event.model_version_id, request_event_id=delivery.envelope.event_id, code=exc.code,
                reason=exc.message, source_experiment_id=event.source_experiment_id, refused_at=_now(),
            ), organization=organization, correlation_id=correlation_id)


# ---- lineage ---------------------------------------------------------------------------------------

def sources_url(export: dict[str, Any]) -> str | None:
    """`sources.jsonl` sits beside the export's manifest (curation's layout, announced in DatasetExported)."""
    manifest = export.get("manifest_url")
    return manifest.rsplit("/", 1)[0] + "/sources.jsonl" if manifest else None


def read_sources(url: str, offset: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """Up to `limit` entries of a sources.jsonl from byte `offset` (the start of a line), and the
    byte offset of the next page (None at the end): a page costs its own lines, not the file's."""
    entries: list[dict[str, Any]] = []
    with default_store().open(url) as src:
        if offset:
            _skip(src, offset - 1)
            if src.read(1) != b"\n":
                raise InvalidCursor("cursor is not one this API returned")
        position = offset
        for line in src:
            if len(entries) == limit:
                return entries, position
            position += len(line)
            if line.strip():
                entries.append(json.loads(line))
    return entries, None


def _skip(src, count: int) -> None:
    if getattr(src, "seekable", lambda: False)():
        src.seek(count)
        return
    while count > 0:  # a stream (S3): read past, without parsing
        chunk = src.read(min(count, 1 << 20))
        if not chunk:
            return
        count -= len(chunk)


async def lineage(session, organization: str, model_version_id: uuid.UUID, *, limit: int,
                  offset: int) -> dict[str, Any]:
    row = await repository.get(session, organization, model_version_id)
    if row is None:
        raise domain.ModelNotFound(model_version_id)
    stored = row.lineage or {}
    export = stored.get("export")
    result: dict[str, Any] = {
        "model_version": {"id": row.id, "name": row.name, "version": row.version, "model_id": row.model_id,
                          "base_model": row.base_model, "status": row.status},
        "job": stored.get("job"), "dataset": None, "pairs": [], "feedback_ids": [], "next_cursor": None,
    }
    if not export:
        return result
    url = sources_url(export)
    result["dataset"] = {k: export.get(k) for k in ("dataset_id", "name", "export_version", "format", "sha256",
                                                    "counts")}
    if export.get("dataset_id") is not None and export.get("export_version") is not None:  # the API's download URLs
        result["dataset"].update(export_links(export["dataset_id"], export["export_version"],
                                              validation=bool(export.get("validation_url"))))
    if url is None:
        return result
    try:
        entries, next_offset = await asyncio.to_thread(read_sources, url, offset, limit)
    except ObjectNotFound:
        result["dataset"]["sources_missing"] = True
        return result
    result["pairs"] = [{"id": e.get("id"), "split": e.get("split"), "feedback_ids": e.get("feedback_ids") or []}
                       for e in entries]
    result["feedback_ids"] = list(dict.fromkeys(f for e in result["pairs"] for f in e["feedback_ids"]))
    result["next_cursor"] = str(next_offset) if next_offset is not None else None
    return result
