"""What the curation service does, one function per purpose, each run inside the unit of work its
caller (api.py, or the consumer for the projection) opened; none commits by itself.

Validation and export also read the dataset's examples on a connection of their own (`_snapshot`):
one read-only snapshot, streamed by a cursor or shared with worker processes (export_engine.py),
which the caller's transaction could not be (its session is the ORM's, and it must stay free to
record the result). Nothing is written there; what they change is written in the caller's unit of
work once the pass is over.
"""

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.curation import domain, export_engine, repository
from services.curation.export import ExportWriter, Published
from services.curation.models import DatasetExport, PreferencePair, TrainingDataset
from shared.consumer import Delivery
from shared.db import Database, UnitOfWork
from shared.events import DatasetExported, FeedbackReceived, FeedbackReviewed
from shared.failpoints import failpoint
from shared.pii import Masker
from shared.tags import normalize_tag


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Datasets


async def create_dataset(uow: UnitOfWork, organization: str, command: domain.CreateDataset) -> TrainingDataset:
    if command.feedback_ids:
        domain.check_member_kind(command.dataset_type, pairs=False)
    if command.export_format:
        domain.check_format(command.export_format, command.dataset_type)
    now = _now()
    dataset = await repository.add_dataset(uow.session, dict(
        asdict(command), feedback_ids=list(dict.fromkeys(command.feedback_ids)), id=uuid.uuid4(),
        organization=organization, status="draft", created_at=now, updated_at=now,
    ))
    dataset.sample_count = await repository.count_samples(uow.session, dataset)
    return dataset


async def load_dataset(uow: UnitOfWork, organization: str, dataset_id: uuid.UUID) -> TrainingDataset:
    dataset = await repository.get_dataset(uow.session, organization, dataset_id, for_update=True)
    if dataset is None:
        raise domain.NotFound("dataset", dataset_id)
    return dataset


async def content_changed(uow: UnitOfWork, dataset: TrainingDataset) -> None:
    """After members change: sample_count recounted, version bumped, ready/exported back to curating."""
    dataset.status = domain.status_after_content_change(dataset.status)
    dataset.content_version += 1
    dataset.updated_at = _now()
    await uow.session.flush()
    dataset.sample_count = await repository.count_samples(uow.session, dataset)


async def update_dataset(
    uow: UnitOfWork, organization: str, dataset_id: uuid.UUID, change: domain.ChangeDataset
) -> TrainingDataset:
    dataset = await load_dataset(uow, organization, dataset_id)
    domain.check_changeable(dataset.status)
    members = domain.new_members(dataset.dataset_type, list(dataset.feedback_ids), change)
    if change.export_format:
        domain.check_format(change.export_format, dataset.dataset_type)
    for name, value in change.settings().items():
        setattr(dataset, name, value)
    if members is not None and members != list(dataset.feedback_ids):
        dataset.feedback_ids = members
        await content_changed(uow, dataset)
    elif domain.SPLIT_SETTINGS & change.given:
        dataset.content_version += 1  # what an export writes depends on these
    if change.status:
        domain.check_transition(dataset.status, change.status, sample_count=dataset.sample_count)
        dataset.status = change.status
    dataset.updated_at = _now()
    return dataset


async def archive_dataset(uow: UnitOfWork, organization: str, dataset_id: uuid.UUID) -> TrainingDataset:
    dataset = await load_dataset(uow, organization, dataset_id)
    domain.check_archivable(dataset.status, dataset.sample_count)
    dataset.status = "archived"
    dataset.updated_at = _now()
    return dataset


# ---------------------------------------------------------------------------------------------
# Preference pairs


async def _pair_dataset(uow: UnitOfWork, organization: str, dataset_id: uuid.UUID) -> TrainingDataset:
    dataset = await repository.get_dataset(uow.session, organization, dataset_id, for_update=True)
    if dataset is None:
        raise domain.Invalid("dataset_id", f"no dataset {dataset_id} in your organization")
    domain.check_member_kind(dataset.dataset_type, pairs=True)
    domain.check_changeable(dataset.status)
    return dataset


async def create_pair(uow: UnitOfWork, organization: str, command: domain.CreatePair) -> PreferencePair:
    dataset = await _pair_dataset(uow, organization, command.dataset_id)
    now = _now()
    pair = await repository.add_pair(uow.session, dict(
        asdict(command), id=uuid.uuid4(), organization=organization, strategy="manual", created_at=now, updated_at=now,
    ))
    await content_changed(uow, dataset)
    return pair


async def _load_pair(uow: UnitOfWork, organization: str, pair_id: uuid.UUID) -> tuple[PreferencePair, TrainingDataset]:
    pair = await repository.get_pair(uow.session, organization, pair_id, for_update=True)
    if pair is None:
        raise domain.NotFound("preference pair", pair_id)
    dataset = await load_dataset(uow, organization, pair.dataset_id)
    domain.check_changeable(dataset.status)
    return pair, dataset


async def update_pair(
    uow: UnitOfWork, organization: str, pair_id: uuid.UUID, change: domain.ChangePair
) -> PreferencePair:
    pair, dataset = await _load_pair(uow, organization, pair_id)
    for name, value in change.changes().items():
        setattr(pair, name, value)
    pair.updated_at = _now()
    await content_changed(uow, dataset)
    return pair


async def delete_pair(uow: UnitOfWork, organization: str, pair_id: uuid.UUID) -> None:
    pair, dataset = await _load_pair(uow, organization, pair_id)
    await repository.delete_pair(uow.session, pair)
    await content_changed(uow, dataset)


def _feedback_scope(command: domain.PairFeedback) -> repository.FeedbackScope:
    return repository.FeedbackScope(
        feedback_ids=command.feedback_ids, tags=[normalize_tag(t) for t in command.tags] if command.tags else None,
        created_from=command.created_from, created_to=command.created_to, approved_only=command.approved_only,
    )


async def bulk_create_pairs(
    uow: UnitOfWork, organization: str, command: domain.PairFeedback, *, dry_run: bool = False
) -> tuple[dict[str, int], int]:
    """Pairs from feedback by each named strategy; returns (created per strategy, the dataset's
    sample_count). With `dry_run`, what each strategy would add now, with the same checks, written
    nowhere (the caller's unit of work then has nothing to commit)."""
    dataset = await _pair_dataset(uow, organization, command.dataset_id)
    scope = _feedback_scope(command)
    created = {}
    for strategy in dict.fromkeys(command.strategies):
        created[strategy] = await repository.pairs_by_strategy(
            uow.session, organization, dataset.id, strategy, scope, cap=command.max_pairs_per_query,
            min_rating_gap=command.min_rating_gap, rating_span=domain.RATING_SPAN, annotator=command.annotator_email,
            dry_run=dry_run,
        )
    if sum(created.values()) and not dry_run:
        await content_changed(uow, dataset)
    return created, dataset.sample_count


# ---------------------------------------------------------------------------------------------
# The feedback projection (consumers)


def _received_row(d: Delivery[FeedbackReceived]) -> dict[str, Any]:
    e = d.event
    rating = e.feedback_value.get("rating") if e.feedback_type == "rating" else None
    correction = e.feedback_value.get("correction") if e.feedback_type == "correction" else None
    return dict(
        feedback_id=e.feedback_id, organization=d.envelope.organization, query=e.query, response=e.response,
        feedback_type=e.feedback_type, rating=rating, value_correction=correction, session_id=e.session_id,
        model_id=e.model_id, created_at=e.created_at, tags=e.tags,
    )


async def _recount(uow: UnitOfWork, rows: Iterable[dict[str, Any]]) -> None:
    """Member counts of instruction datasets follow the review state of their feedback."""
    by_org: dict[str, list[uuid.UUID]] = defaultdict(list)
    for row in rows:
        by_org[row["organization"]].append(row["feedback_id"])
    for organization, ids in by_org.items():
        await repository.recount_instruction_datasets(uow.session, organization, ids)


async def project_received_feedback(uow: UnitOfWork, deliveries: Sequence[Delivery[FeedbackReceived]]) -> None:
    """FeedbackReceived → the projection's content columns (idempotent: an upsert, once per event)."""
    rows = {d.event.feedback_id: _received_row(d) for d in deliveries}  # last one wins within a batch
    await repository.upsert_received(uow.session, list(rows.values()))
    await _recount(uow, rows.values())


async def project_reviewed_feedback(uow: UnitOfWork, deliveries: Sequence[Delivery[FeedbackReviewed]]) -> None:
    """FeedbackReviewed → the projection's review state; member counts of instruction datasets follow."""
    latest: dict[uuid.UUID, dict[str, Any]] = {}
    for d in deliveries:
        e = d.event
        row = dict(feedback_id=e.feedback_id, organization=d.envelope.organization, status=e.status,
                   review_correction=e.correction, tags=e.tags, reviewed_at=e.reviewed_at)
        if e.feedback_id not in latest or latest[e.feedback_id]["reviewed_at"] <= e.reviewed_at:
            latest[e.feedback_id] = row
    await repository.upsert_reviewed(uow.session, list(latest.values()))
    await _recount(uow, latest.values())


# ---------------------------------------------------------------------------------------------
# Validation and export


async def validate_dataset(uow: UnitOfWork, db: Database, organization: str, dataset_id: uuid.UUID,
                           fmt: str | None) -> dict:
    """Runs every rule (for `fmt`, or the dataset's export format) and stores the report and score."""
    async with _snapshot(db, organization, dataset_id) as (conn, dataset):
        plan = domain.plan_validation(dataset, fmt)
        found = await _examples_pass(conn, db.dsn, plan, ExportWriter(plan, Masker()))
    report = domain.report(plan, found, at=_now())
    dataset = await load_dataset(uow, organization, dataset_id)
    dataset.validation_report, dataset.quality_score = report, report["quality_score"]
    return report


async def export_dataset(uow: UnitOfWork, db: Database, store, organization: str, command: domain.ExportDataset, *,
                         actor: str, correlation_id: str | None) -> DatasetExport:
    """An export: the examples validated, de-duplicated, split and masked while they are written (one
    pass over one snapshot); the files published only if every blocking rule passes; the version
    recorded and DatasetExported announced when the caller commits. One export per dataset at a time:
    the lock is the caller's transaction's, so it lasts until the version is committed."""
    if not await repository.try_lock_export(uow.session, command.dataset_id):
        raise domain.Conflict("an export of this dataset is already running")
    async with _snapshot(db, organization, command.dataset_id) as (conn, dataset):
        plan = domain.plan_export(dataset, command)
        writer = ExportWriter(plan, Masker(), store)
        found = await _examples_pass(conn, db.dsn, plan, writer)  # de-duplicated, split, masked, written
    report = domain.report(plan, found, at=_now())  # validated
    if not report["passed"]:
        refused = domain.ValidationFailed(report)
        await asyncio.to_thread(writer.abort, refused)  # no file appears
        raise refused
    published = await asyncio.to_thread(writer.publish, report, duplicates_dropped=found.duplicates_dropped,
                                        created_at=_now())  # every file whole, then the manifest
    return await _record_export(uow, plan, published, report, actor=actor, correlation_id=correlation_id)


@asynccontextmanager
async def _snapshot(db: Database, organization: str, dataset_id: uuid.UUID) -> AsyncIterator[tuple[Any, dict]]:
    """The dataset as a read-only snapshot shows it, and that snapshot's connection: the pool's asyncpg
    connection itself, for cursors and COPY-speed fetches without the ORM."""
    async with db.engine.connect() as sa_conn:
        conn: asyncpg.Connection = (await sa_conn.get_raw_connection()).driver_connection
        async with repository.read_only_snapshot(conn):
            dataset = await repository.dataset_row(conn, organization, dataset_id)
            if dataset is None:
                raise domain.NotFound("dataset", dataset_id)
            yield conn, dataset


async def _examples_pass(conn: asyncpg.Connection, dsn: str, plan: domain.ExportPlan,
                         writer: ExportWriter) -> domain.Findings:
    """Validation and export are one pass over the examples, in export order: each chunk shaped
    (export.shape: exact duplicates dropped, the split, PII masked, the row rules tallied) and handed
    to the writer. The writer publishes nothing: the caller decides from what was found whether to."""
    queries = repository.ExampleQueries(plan)
    try:
        async with export_engine.examples(conn, dsn, queries, plan) as examples:
            async for shaped in examples.shaped_chunks():
                await asyncio.to_thread(writer.add, shaped)
                failpoint("curation.export.after_chunk")
            near = await examples.near_duplicate_groups()
    except BaseException as exc:
        await asyncio.to_thread(writer.abort, exc)
        raise
    groups = [g["ids"] for g in examples.duplicate_groups]
    prompts = await queries.example_prompts(conn, [ids[0] for ids in groups[:3]])
    return domain.Findings(
        rule_counts=writer.tally.counts, rule_examples=writer.tally.examples, rows=writer.rows,
        duplicates=[{"ids": ids, "prompt": prompts.get(ids[0], "")} for ids in groups], near_duplicates=near,
        line_failure_count=writer.line_failure_count, line_failures=writer.line_failures,
    )


async def _record_export(uow: UnitOfWork, plan: domain.ExportPlan, published: Published, report: dict, *, actor: str,
                         correlation_id: str | None) -> DatasetExport:
    """The export version and the dataset's new state, with DatasetExported in the outbox."""
    dataset = await load_dataset(uow, plan.organization, plan.dataset_id)
    domain.check_recordable(dataset.status)
    counts = {"train": published.rows("train"), "validation": published.rows("validation")}
    counts["total"] = counts["train"] + counts["validation"]
    export = await repository.add_export(uow.session, dict(
        dataset_id=dataset.id, version=plan.version, organization=dataset.organization, format=plan.fmt,
        url=published.url("train") or "", sha256=published.sha256("train") or "",
        validation_url=published.url("validation"), validation_sha256=published.sha256("validation"),
        manifest_url=published.manifest_url, counts=counts, masked=published.masked,
        content_version=plan.content_version, created_by=actor,
    ))
    dataset.export_version, dataset.export_format, dataset.export_url = plan.version, plan.fmt, export.url
    dataset.validation_report, dataset.quality_score = report, report["quality_score"]
    dataset.status, dataset.updated_at = "exported", _now()
    uow.emit(
        DatasetExported(
            dataset_id=dataset.id, name=dataset.name, dataset_type=dataset.dataset_type, export_version=plan.version,
            format=plan.fmt, url=export.url, sha256=export.sha256, validation_url=export.validation_url,
            validation_sha256=export.validation_sha256, manifest_url=published.manifest_url, counts=counts,
            auto_train=dataset.auto_train,
        ),
        organization=dataset.organization,
        correlation_id=correlation_id,
    )
    return export
