"""What the experiments service does, one function per purpose. Each runs inside the unit of work its
caller opened (api.py, chat.py's flusher, or the shared consumer); none commits or publishes."""

import secrets
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.experiments import domain, repository
from services.experiments.models import Experiment
from shared.consumer import Delivery
from shared.db import UnitOfWork
from shared.errors import Conflict, Invalid, NotFound
from shared.events import (
    DeploymentRequested,
    ExperimentConcluded,
    ExperimentPaused,
    ExperimentStarted,
    FeedbackReceived,
    ModelArchived,
    ModelDeployed,
    ModelRegistered,
    ModelRolledBack,
    OutcomeRecorded,
    ResponseServed,
)

UNMATCHED_OUTCOMES = Counter("rlhf_experiments_unmatched_outcomes_total",
                             "reported outcomes naming an unknown response or a unit in no live experiment (ignored)")
UNMATCHED_FEEDBACK = Counter("rlhf_experiments_unmatched_feedback_total",
                             "feedback naming a response this service did not serve in an experiment (ignored)")


def _now() -> datetime:
    return datetime.now(UTC)


class ExperimentNotFound(NotFound):
    def __init__(self, experiment_id: Any):
        super().__init__(f"no experiment {experiment_id}")


# ---- the service's view of the registry ---------------------------------------------------------

async def record_registered(uow: UnitOfWork, deliveries: Sequence[Delivery[ModelRegistered]]) -> None:
    for d in deliveries:
        e = d.event
        await repository.add_version(uow.session, d.envelope.organization, {
            "id": e.model_version_id, "name": e.name, "version": e.model_version, "model_id": e.model_id,
            "serving": e.serving, "status": e.status})


async def record_deployed(uow: UnitOfWork, deliveries: Sequence[Delivery[ModelDeployed]]) -> None:
    """The name's traffic moves to the deployed version (the one before it is deprecated)."""
    for d in deliveries:
        e = d.event
        await repository.make_live(uow.session, d.envelope.organization, {
            "id": e.model_version_id, "name": e.name, "version": e.model_version, "model_id": e.model_id,
            "serving": e.serving}, e.deployed_at)


async def record_rolled_back(uow: UnitOfWork, deliveries: Sequence[Delivery[ModelRolledBack]]) -> None:
    """The name's traffic went back to an earlier version."""
    for d in deliveries:
        e = d.event
        await repository.make_live(uow.session, d.envelope.organization, {
            "id": e.model_version_id, "name": e.name, "version": e.model_version, "model_id": e.model_id,
            "serving": e.serving}, e.rolled_back_at)


async def record_archived(uow: UnitOfWork, deliveries: Sequence[Delivery[ModelArchived]]) -> None:
    for d in deliveries:
        await repository.set_version_status(uow.session, d.envelope.organization, d.event.model_version_id, "archived")


# ---- experiments -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class NewExperiment:
    name: str
    control_model_id: uuid.UUID
    treatment_model_id: uuid.UUID
    traffic_split: float
    success_metrics: list[dict[str, Any]]
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    min_sample_size: int = 0
    sequential: bool = True
    end_date: datetime | None = None
    start: bool = True


def design_of(row: Experiment) -> domain.Design:
    return domain.Design(
        traffic_split=row.traffic_split,
        success_metrics=tuple(domain.SuccessMetric(m["name"], m.get("min_effect"), m.get("kind"),
                                                   m.get("higher_is_better")) for m in row.success_metrics),
        guardrails=tuple(domain.Guardrail(g["metric"], g.get("max_degradation", 0.0), g.get("kind"),
                                          g.get("higher_is_better"), g.get("max_value")) for g in row.guardrails),
        min_sample_size=row.min_sample_size, sequential=row.sequential)


def _event_fields(row: Experiment) -> dict[str, Any]:
    return {"experiment_id": row.id, "name": row.name, "model_name": row.model_name,
            "control_model_id": row.control_model_id, "treatment_model_id": row.treatment_model_id,
            "traffic_split": row.traffic_split}


def _started(row: Experiment, actor: str) -> ExperimentStarted:
    return ExperimentStarted(**_event_fields(row), success_metrics=row.success_metrics, guardrails=row.guardrails,
                             started_by=actor, started_at=row.start_date or _now())


async def create(uow: UnitOfWork, organization: str, command: NewExperiment, *, actor: str,
                 correlation_id: str | None = None) -> Experiment:
    row = Experiment(
        id=uuid.uuid4(), organization=organization, name=command.name, control_model_id=command.control_model_id,
        treatment_model_id=command.treatment_model_id, traffic_split=command.traffic_split,
        success_metrics=command.success_metrics, guardrails=command.guardrails,
        min_sample_size=command.min_sample_size, sequential=command.sequential, end_date=command.end_date,
        seed=secrets.token_hex(8), created_by=actor, status="running" if command.start else "draft",
        created_at=_now(), updated_at=_now())
    domain.check_design(design_of(row))
    found = await repository.versions(uow.session, organization, [command.control_model_id,
                                                                  command.treatment_model_id])

    def as_dict(v):
        return {"name": v.name, "status": v.status} if v else None

    row.model_name = domain.check_versions(as_dict(found.get(command.control_model_id)),
                                           as_dict(found.get(command.treatment_model_id)),
                                           command.control_model_id, command.treatment_model_id)
    if command.start:
        await _refuse_second_live(uow.session, organization, row.model_name)
        row.start_date = _now()
    await repository.add_experiment(uow.session, row)
    if command.start:
        uow.emit(_started(row, actor), organization=organization, correlation_id=correlation_id)
    return row


async def _refuse_second_live(session: AsyncSession, organization: str, model_name: str) -> None:
    live = await repository.live_experiment(session, organization, model_name)
    if live is not None:
        raise Conflict(f"experiment {live.id} is already running on {model_name}", field="control_model_id")


async def _locked(uow: UnitOfWork, organization: str, experiment_id: uuid.UUID) -> Experiment:
    row = await repository.get_experiment(uow.session, organization, experiment_id, for_update=True)
    if row is None:
        raise ExperimentNotFound(experiment_id)
    return row


async def results_of(session: AsyncSession, row: Experiment) -> dict[str, Any]:
    data = await repository.variant_data(session, row.id)
    return domain.analyse(design_of(row), data[domain.CONTROL], data[domain.TREATMENT])


async def change_status(uow: UnitOfWork, organization: str, experiment_id: uuid.UUID, action: str, *, actor: str,
                        reason: str | None = None, correlation_id: str | None = None) -> Experiment:
    """start, pause, resume, complete or cancel. Ending an experiment stores its results and winner
    and announces them (ExperimentConcluded)."""
    row = await _locked(uow, organization, experiment_id)
    target = domain.move(row.status, action)
    if action == "start":  # a paused experiment resuming is already the name's live one
        await _refuse_second_live(uow.session, organization, row.model_name)
    row.status, row.updated_at, row.status_reason = target, _now(), reason
    if action == "start":
        row.start_date = _now()
        uow.emit(_started(row, actor), organization=organization, correlation_id=correlation_id)
    elif action == "pause":
        uow.emit(ExperimentPaused(**_event_fields(row), reason=reason or "paused by hand", paused_by=actor,
                                  paused_at=row.updated_at), organization=organization, correlation_id=correlation_id)
    elif target in ("completed", "cancelled"):
        await _conclude(uow, row, actor=actor, correlation_id=correlation_id)
    try:
        await uow.session.flush()
    except IntegrityError as exc:  # a concurrent start on the same name
        raise Conflict(f"another experiment is already running on {row.model_name}") from exc
    return row


async def _conclude(uow: UnitOfWork, row: Experiment, *, actor: str, correlation_id: str | None) -> None:
    results = await results_of(uow.session, row)
    recommendation = results["recommendation"]
    row.results, row.winner = results, recommendation["winner"]
    row.end_date = min(row.end_date, _now()) if row.end_date else _now()
    uow.emit(ExperimentConcluded(**_event_fields(row), status=row.status, winner=row.winner,
                                 reason=recommendation["reason"], results=results,
                                 winner_model_id=_winner_version(row), concluded_by=actor, concluded_at=_now()),
             organization=row.organization, correlation_id=correlation_id)


def _winner_version(row: Experiment) -> uuid.UUID | None:
    return {domain.CONTROL: row.control_model_id, domain.TREATMENT: row.treatment_model_id}.get(row.winner or "")


async def extend(uow: UnitOfWork, organization: str, experiment_id: uuid.UUID, *, end_date: datetime | None,
                 min_sample_size: int | None) -> Experiment:
    row = await _locked(uow, organization, experiment_id)
    if row.status not in ("draft", "running", "paused"):
        raise domain.IllegalMove(f"cannot extend an experiment that is {row.status}")
    if end_date is not None:
        if end_date <= _now() or (row.end_date and end_date <= row.end_date):
            raise Invalid("end_date", "the new end must be later than now and than the current end")
        row.end_date = end_date
    if min_sample_size is not None:
        row.min_sample_size = min_sample_size
    row.updated_at = _now()
    return row


async def full_deploy(uow: UnitOfWork, organization: str, experiment_id: uuid.UUID, *, actor: str,
                      variant: str | None = None, reason: str | None = None,
                      correlation_id: str | None = None) -> Experiment:
    """Concludes the experiment (if still live) and asks the registry to deploy the winner, or the
    `variant` an admin names over an inconclusive result (recorded in the request's reason)."""
    row = await _locked(uow, organization, experiment_id)
    if row.deploy_requested_at is not None:
        raise Conflict(f"experiment {row.id}'s deployment was already requested")
    if row.status in ("running", "paused"):
        row.status, row.updated_at = "completed", _now()
        await _conclude(uow, row, actor=actor, correlation_id=correlation_id)
    elif row.status != "completed":
        raise domain.IllegalMove(f"cannot deploy from an experiment that is {row.status}")
    chosen = variant or row.winner
    if chosen not in domain.VARIANTS:
        raise Conflict(f"the result is {row.winner}: {row.results['recommendation']['reason']}; "
                       "name the variant to deploy to override it", field="variant")
    version_id = row.control_model_id if chosen == domain.CONTROL else row.treatment_model_id
    note = f"experiment {row.name}: {chosen}"
    if chosen != row.winner:
        note += f" (override: the result was {row.winner})"
    uow.emit(DeploymentRequested(model_version_id=version_id, requested_by=actor,
                                 reason=f"{note}; {reason}" if reason else note, source_experiment_id=str(row.id)),
             organization=organization, correlation_id=correlation_id)
    row.deploy_requested_at = _now()
    return row


# ---- routing and outcomes ------------------------------------------------------------------------

@dataclass(frozen=True)
class Served:
    """An answer the router served (or failed to): written with others in one batch."""

    organization: str
    event: ResponseServed
    error: bool = False
    record_exposure: bool = True


async def record_served(uow: UnitOfWork, batch: Sequence[Served]) -> None:
    """A batch of served answers: first exposures, which experiment served each response, the router's
    own outcomes (latency, cost, errors), ResponseServed announcements; then the guardrails."""
    exposures, served_rows = [], []
    tallies: dict[tuple[uuid.UUID, str, str], domain.Tally] = defaultdict(domain.Tally)
    latencies: dict[tuple[uuid.UUID, str, int], int] = defaultdict(int)
    for s in batch:
        e = s.event
        if not s.error:
            uow.emit(e, organization=s.organization)
        if e.experiment_id is None or e.variant is None:
            continue
        exposures.append((e.experiment_id, e.unit, e.variant))
        if not s.error:
            served_rows.append({"response_id": e.response_id, "organization": s.organization,
                                "experiment_id": e.experiment_id, "variant": e.variant, "served_at": e.served_at})
        for o in domain.served_outcomes(e.latency_ms, e.estimated_cost, s.error):
            tallies[(e.experiment_id, e.variant, o.metric)].add(o.value)
        if not s.error:
            latencies[(e.experiment_id, e.variant, domain.latency_bucket(e.latency_ms))] += 1
    await repository.record_exposures(uow.session, exposures)
    await repository.add_served(uow.session, served_rows)
    await repository.add_outcomes(uow.session, dict(tallies))
    await repository.add_latencies(uow.session, dict(latencies))
    await check_guardrails(uow, {k[0] for k in tallies})


async def record_exposures(uow: UnitOfWork, rows: Sequence[tuple[uuid.UUID, str, str]]) -> None:
    await repository.record_exposures(uow.session, rows)


async def record_feedback_outcomes(uow: UnitOfWork, deliveries: Sequence[Delivery[FeedbackReceived]]) -> None:
    """Feedback on answers this service served in an experiment becomes outcomes of their variant;
    feedback on anything else is counted and ignored."""
    by_org: dict[str, list[FeedbackReceived]] = defaultdict(list)
    for d in deliveries:
        if d.event.response_id:
            by_org[d.envelope.organization].append(d.event)
        else:
            UNMATCHED_FEEDBACK.inc()
    tallies: dict[tuple[uuid.UUID, str, str], domain.Tally] = defaultdict(domain.Tally)
    for organization, events in by_org.items():
        known = await repository.served(uow.session, organization, {e.response_id for e in events})
        for e in events:
            served = known.get(e.response_id)
            if served is None:
                UNMATCHED_FEEDBACK.inc()
                continue
            for o in domain.feedback_outcomes(e.feedback_type, e.feedback_value):
                tally = tallies[(served.experiment_id, served.variant, o.metric)]
                if domain.metric(o.metric).kind == "rating":
                    tally.add_rating(int(o.value))
                else:
                    tally.add(o.value)
    await repository.add_outcomes(uow.session, dict(tallies))
    await check_guardrails(uow, {k[0] for k in tallies})


async def record_reported_outcomes(uow: UnitOfWork, deliveries: Sequence[Delivery[OutcomeRecorded]]) -> None:
    """Outcomes other services measured, for the variant that served the response, or for every live
    experiment the unit was exposed to; outcomes for unknown responses or units are counted and ignored."""
    tallies: dict[tuple[uuid.UUID, str, str], domain.Tally] = defaultdict(domain.Tally)
    for d in deliveries:
        e, organization = d.event, d.envelope.organization
        outcome = domain.reported_outcome(e.metric, e.value)
        targets: list[tuple[uuid.UUID, str]] = []
        if outcome is not None and e.response_id:
            served = (await repository.served(uow.session, organization, [e.response_id])).get(e.response_id)
            targets = [(served.experiment_id, served.variant)] if served else []
        elif outcome is not None and e.unit:
            targets = await repository.live_exposures(uow.session, organization, e.unit, e.experiment_id)
        if not targets:
            UNMATCHED_OUTCOMES.inc()
            continue
        for experiment_id, variant in targets:
            tally = tallies[(experiment_id, variant, outcome.metric)]
            if outcome.metric == "rating":
                tally.add_rating(int(outcome.value))
            else:
                tally.add(outcome.value)
    await repository.add_outcomes(uow.session, dict(tallies))
    await check_guardrails(uow, {k[0] for k in tallies})


async def check_guardrails(uow: UnitOfWork, experiment_ids: set[uuid.UUID]) -> None:
    """A running experiment whose guardrail is breached (with the sequential test's confidence) is
    paused, sending all its traffic to control; ExperimentPaused names the guardrail."""
    if not experiment_ids:
        return
    for row in await repository.experiments_by_id(uow.session, experiment_ids, for_update=True):
        if row.status != "running" or not row.guardrails:
            continue
        results = await results_of(uow.session, row)
        breached = [g for g in results["guardrails"] if g["breached"]]
        if not breached:
            continue
        g = breached[0]
        reason = g.get("reason") or (f"guardrail {g['metric']} breached: treatment worse by {g['difference']:.4g} "
                                     f"(limit {g['max_degradation']})")
        row.status, row.status_reason, row.results, row.updated_at = "paused", reason, results, _now()
        uow.emit(ExperimentPaused(**_event_fields(row), reason=reason, guardrail=g["metric"], paused_by="guardrail",
                                  paused_at=row.updated_at), organization=row.organization)
