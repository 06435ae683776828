"""What the curation service does, one function per purpose. Functions taking a UnitOfWork run
inside the transaction their caller (api.py or consumers.py) opened; none commits by itself. The
export and validation run on their own connection: a read-only snapshot streamed by a cursor."""

import asyncio
import bisect
import re
import uuid
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.curation import domain, formats, repository
from services.curation.export import (
    CHUNK_ROWS,
    PARALLEL_MIN_ROWS,
    STRIPE_ROWS,
    ExportWriter,
    Shaping,
    Stripe,
    on_snapshot,
    prefetched,
    shape,
    shaped_stripes,
    warm_up_workers,
    write_manifest,
)
from services.curation.models import DatasetExport, PreferencePair, TrainingDataset
from services.curation.pii import Masker
from shared.consumer import Delivery
from shared.db import Database, UnitOfWork
from shared.events import DatasetExported, FeedbackReceived, FeedbackReviewed
from shared.failpoints import failpoint

DEFAULT_FORMAT = {"instruction_tuning": "openai_sft", "preference_pairs": "jsonl", "dpo": "jsonl"}


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Datasets


async def create_dataset(uow: UnitOfWork, organization: str, fields: dict[str, Any]) -> TrainingDataset:
    if fields.get("feedback_ids"):
        domain.check_member_kind(fields["dataset_type"], pairs=False)
    if fields.get("export_format"):
        _check_format(fields["export_format"], fields["dataset_type"])
    fields["feedback_ids"] = list(dict.fromkeys(fields.get("feedback_ids") or []))
    now = _now()
    dataset = await repository.add_dataset(
        uow.session, dict(fields, id=uuid.uuid4(), organization=organization, status="draft", created_at=now,
                          updated_at=now)
    )
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
    uow: UnitOfWork, organization: str, dataset_id: uuid.UUID, changes: dict[str, Any]
) -> TrainingDataset:
    dataset = await load_dataset(uow, organization, dataset_id)
    if dataset.status == "archived":
        raise domain.Conflict("an archived dataset cannot be changed")
    members = _new_members(dataset, changes)
    if changes.get("export_format"):
        _check_format(changes["export_format"], dataset.dataset_type)
    for name in ("name", "description", "system_prompt", "validation_ratio", "split_seed", "export_format",
                 "auto_train"):
        if name in changes:
            setattr(dataset, name, changes[name])
    if members is not None and members != list(dataset.feedback_ids):
        dataset.feedback_ids = members
        await content_changed(uow, dataset)
    elif {"system_prompt", "validation_ratio", "split_seed"} & changes.keys():
        dataset.content_version += 1  # what an export writes depends on these
    if changes.get("status"):
        domain.check_transition(dataset.status, changes["status"], sample_count=dataset.sample_count)
        dataset.status = changes["status"]
    dataset.updated_at = _now()
    return dataset


def _new_members(dataset: TrainingDataset, changes: dict[str, Any]) -> list[uuid.UUID] | None:
    keys = ("feedback_ids", "add_feedback_ids", "remove_feedback_ids")
    if not any(changes.get(k) is not None for k in keys):
        return None
    domain.check_member_kind(dataset.dataset_type, pairs=False)
    members = list(changes["feedback_ids"]) if changes.get("feedback_ids") is not None else list(dataset.feedback_ids)
    members += changes.get("add_feedback_ids") or []
    removed = set(changes.get("remove_feedback_ids") or [])
    return [m for m in dict.fromkeys(members) if m not in removed]


async def archive_dataset(uow: UnitOfWork, organization: str, dataset_id: uuid.UUID) -> TrainingDataset:
    dataset = await load_dataset(uow, organization, dataset_id)
    domain.check_transition(dataset.status, "archived", sample_count=dataset.sample_count)
    if dataset.status == "archived":
        raise domain.Conflict("the dataset is already archived")
    dataset.status = "archived"
    dataset.updated_at = _now()
    return dataset


def _check_format(fmt: str, dataset_type: str) -> None:
    try:
        formats.check_format(fmt, dataset_type)
    except formats.UnsupportedFormat as exc:
        raise domain.Invalid("format", str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# Preference pairs


async def _pair_dataset(uow: UnitOfWork, organization: str, dataset_id: uuid.UUID) -> TrainingDataset:
    dataset = await repository.get_dataset(uow.session, organization, dataset_id, for_update=True)
    if dataset is None:
        raise domain.Invalid("dataset_id", f"no dataset {dataset_id} in your organization")
    domain.check_member_kind(dataset.dataset_type, pairs=True)
    return dataset


async def create_pair(uow: UnitOfWork, organization: str, fields: dict[str, Any]) -> PreferencePair:
    dataset = await _pair_dataset(uow, organization, fields["dataset_id"])
    domain.status_after_content_change(dataset.status)
    now = _now()
    pair = await repository.add_pair(
        uow.session, dict(fields, id=uuid.uuid4(), organization=organization, strategy="manual", created_at=now,
                          updated_at=now)
    )
    await content_changed(uow, dataset)
    return pair


async def _load_pair(uow: UnitOfWork, organization: str, pair_id: uuid.UUID) -> tuple[PreferencePair, TrainingDataset]:
    pair = await repository.get_pair(uow.session, organization, pair_id, for_update=True)
    if pair is None:
        raise domain.NotFound("preference pair", pair_id)
    dataset = await load_dataset(uow, organization, pair.dataset_id)
    domain.status_after_content_change(dataset.status)  # refuses changes to an archived dataset
    return pair, dataset


async def update_pair(
    uow: UnitOfWork, organization: str, pair_id: uuid.UUID, changes: dict[str, Any]
) -> PreferencePair:
    pair, dataset = await _load_pair(uow, organization, pair_id)
    for name, value in changes.items():
        if value is None and name in ("query", "chosen_response", "rejected_response", "preference_strength",
                                      "context_documents"):
            raise domain.Invalid(name, f"{name} cannot be cleared")
        setattr(pair, name, value)
    pair.updated_at = _now()
    await content_changed(uow, dataset)
    return pair


async def delete_pair(uow: UnitOfWork, organization: str, pair_id: uuid.UUID) -> None:
    pair, dataset = await _load_pair(uow, organization, pair_id)
    await repository.delete_pair(uow.session, pair)
    await content_changed(uow, dataset)


async def bulk_create_pairs(uow: UnitOfWork, organization: str, body: dict[str, Any]) -> tuple[dict[str, int], int]:
    """Pairs from feedback by each named strategy; returns (created per strategy, the dataset's sample_count)."""
    dataset = await _pair_dataset(uow, organization, body["dataset_id"])
    domain.status_after_content_change(dataset.status)
    scope = repository.FeedbackScope(
        feedback_ids=body.get("feedback_ids"), tags=body.get("tags"), created_from=body.get("created_from"),
        created_to=body.get("created_to"), approved_only=body.get("approved_only", False),
    )
    created = {}
    for strategy in dict.fromkeys(body["strategies"]):
        created[strategy] = await repository.create_pairs_by_strategy(
            uow.session, organization, dataset.id, strategy, scope, cap=body["max_pairs_per_query"],
            min_rating_gap=body["min_rating_gap"], rating_span=domain.RATING_SPAN,
            annotator=body.get("annotator_email"),
        )
    if sum(created.values()):
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
        model_id=e.model_id, created_at=e.created_at, tags=list(e.tags), status="pending",
    )


async def project_received_feedback(uow: UnitOfWork, deliveries: Sequence[Delivery[FeedbackReceived]]) -> None:
    """FeedbackReceived → the projection's content columns (idempotent: an upsert, once per event)."""
    rows = {r["feedback_id"]: r for r in map(_received_row, deliveries)}  # last one wins within a batch
    await repository.upsert_received(uow.session, list(rows.values()))
    for organization in {r["organization"] for r in rows.values()}:
        ids = [r["feedback_id"] for r in rows.values() if r["organization"] == organization]
        await repository.recount_instruction_datasets(uow.session, organization, ids)


async def project_reviewed_feedback(uow: UnitOfWork, deliveries: Sequence[Delivery[FeedbackReviewed]]) -> None:
    """FeedbackReviewed → the projection's review state; member counts of instruction datasets follow."""
    latest: dict[uuid.UUID, dict[str, Any]] = {}
    for d in deliveries:
        e = d.event
        row = dict(feedback_id=e.feedback_id, organization=d.envelope.organization, status=e.status,
                   review_correction=e.correction, tags=list(e.tags), reviewed_at=e.reviewed_at)
        if e.feedback_id not in latest or latest[e.feedback_id]["reviewed_at"] <= e.reviewed_at:
            latest[e.feedback_id] = row
    await repository.upsert_reviewed(uow.session, list(latest.values()))
    for organization in {r["organization"] for r in latest.values()}:
        ids = [r["feedback_id"] for r in latest.values() if r["organization"] == organization]
        await repository.recount_instruction_datasets(uow.session, organization, ids)


# ---------------------------------------------------------------------------------------------
# Validation


def _members_arg(dataset_type: str, dataset_id: uuid.UUID, feedback_ids: list) -> Any:
    return list(feedback_ids) if dataset_type == "instruction_tuning" else dataset_id


_PARAM = re.compile(r"\$(\d+)")


async def _fetch(conn, sql: str, args: list, *, one: bool = False):
    """asyncpg wants exactly the parameters a statement uses: pass the first N of the common list."""
    used = max((int(n) for n in _PARAM.findall(sql)), default=0)
    return await (conn.fetchrow if one else conn.fetch)(sql, *args[:used])


@dataclass
class Pass:
    """What one pass over a dataset's examples found: the rule results and the counts."""

    results: list[domain.RuleResult]
    counts: dict[str, int]
    writer: ExportWriter


async def examples_pass(conn, snapshot: dict, fmt: str, ratio: float, seed: int, store, prefix: str,
                        masker: Masker, *, dsn: str | None = None) -> Pass:
    """Validation and export are one pass over the examples, in export order, on one snapshot. Two
    small queries find the groups of exact and near duplicates; the examples are shaped (export.py)
    in the service's process, or for a large pair dataset given `dsn`, in worker processes reading
    stripes of the same snapshot while those queries run. Given a store the writer writes the files,
    publishing nothing: the caller decides from the results whether to finish or abort them."""
    dataset_type = snapshot["dataset_type"]
    members = _members_arg(dataset_type, snapshot["id"], snapshot["feedback_ids"])
    args = [snapshot["organization"], members, seed, int(ratio * repository.SPLIT_BUCKETS)]
    rules = formats.RULES[fmt]
    system_bytes = len((snapshot["system_prompt"] or "").encode())
    shaping = Shaping(fmt, snapshot["system_prompt"], rules.max_tokens_per_example * formats.BYTES_PER_TOKEN
                      - system_bytes if rules.max_tokens_per_example else None, dry_run=store is None)
    parallel = (dsn is not None and store is not None and dataset_type != "instruction_tuning"
                and snapshot["sample_count"] >= PARALLEL_MIN_ROWS)
    near_sql = repository.near_duplicate_groups_sql(dataset_type)
    near_search: asyncio.Future | None = None
    if parallel:
        warm_up_workers()  # the worker processes start while the duplicates are looked for
        snapshot_id = await conn.fetchval("SELECT pg_export_snapshot()")
        # the two duplicate searches at once: this connection finds the exact duplicates (the workers
        # need them), a second one on the same snapshot the near duplicates (only the report does)
        near_search = asyncio.ensure_future(_fetch_on_snapshot(dsn, snapshot_id, near_sql, args))
    writer = ExportWriter(store, shaping, prefix, masker)
    try:
        groups = await _fetch(conn, repository.duplicate_groups_sql(dataset_type), args)
        dropped = {(i, o) for g in groups for i, o in zip(g["ids"][1:], g["ords"][1:], strict=True)}  # all but first
        if parallel:
            stripes = await _stripes(conn, dsn, snapshot_id, dataset_type, args, shaping, snapshot["sample_count"],
                                     dropped)
            async for shaped in shaped_stripes(stripes):
                await asyncio.to_thread(writer.add, shaped)
                failpoint("curation.export.after_chunk")
            near = await near_search
        else:
            near = await _fetch(conn, near_sql, args)
            skip = {i for i, _ in dropped}
            cursor = await conn.cursor(repository.export_sql(dataset_type, fmt), *args)
            async for chunk in prefetched(lambda: cursor.fetch(CHUNK_ROWS)):
                await asyncio.to_thread(lambda rows: writer.add(shape(rows, shaping, skip)), chunk)
                failpoint("curation.export.after_chunk")
    except BaseException as exc:
        if near_search is not None:
            near_search.cancel()
        await asyncio.to_thread(writer.abort, exc)
        raise
    groups = [g["ids"] for g in groups]
    prompts = dict(await conn.fetch(repository.example_prompts_sql(dataset_type), snapshot["organization"], members,
                                    [ids[0] for ids in groups[:3]]))
    train_rows, validation_rows = writer.rows["train"], writer.rows["validation"]
    duplicates = [{"ids": ids, "prompt": prompts.get(ids[0], "")} for ids in groups]
    results = _rule_results(fmt, writer, duplicates, near, dry_run=store is None)
    counts = {"total": train_rows + validation_rows + sum(len(ids) - 1 for ids in groups),
              "distinct": train_rows + validation_rows, "train": train_rows, "validation": validation_rows}
    return Pass(results, counts, writer)


def _rule_results(fmt: str, writer: ExportWriter, duplicates: list[dict], near: list, *,
                  dry_run: bool) -> list[domain.RuleResult]:
    """The quality report's rules, from what the pass counted and the duplicate searches found."""
    rules, tally = formats.RULES[fmt], writer.tally
    train_rows, validation_rows = writer.rows["train"], writer.rows["validation"]
    distinct = train_rows + validation_rows
    results = [
        domain.RuleResult("empty_field", "error", tally.counts["empty_field"],
                          "prompt, chosen or rejected is empty or only whitespace", tally.examples["empty_field"]),
        domain.RuleResult("chosen_equals_rejected", "error", tally.counts["chosen_equals_rejected"],
                          "the chosen answer is the rejected one", tally.examples["chosen_equals_rejected"]),
        domain.RuleResult("exact_duplicate", "warning", sum(len(d["ids"]) - 1 for d in duplicates),
                          "identical examples; each is exported once", duplicates[:3]),
        domain.RuleResult("near_duplicate", "warning", sum(g["distinct_examples"] - 1 for g in near),
                          "examples equal up to case, spacing and punctuation",
                          [{"ids": g["ids"], "prompt": g["prompt"]} for g in near[:3]]),
        # the side of the split is a function of the prompt key: no prompt can be on both sides
        domain.RuleResult("split_overlap", "error", 0, "prompts found in both the train and validation splits", []),
        domain.RuleResult("too_long", "error", tally.counts["too_long"],
                          f"over {rules.max_tokens_per_example} estimated tokens (UTF-8 bytes / "
                          f"{formats.BYTES_PER_TOKEN}) per example for {rules.provider}", tally.examples["too_long"]),
        domain.RuleResult("min_samples", "error", int(distinct < rules.min_examples),
                          f"{rules.provider} needs at least {rules.min_examples} examples; there are {distinct}", []),
    ]
    if rules.max_train_examples:
        over = train_rows > rules.max_train_examples or validation_rows > (rules.max_validation_examples or 0)
        results.append(domain.RuleResult(
            "max_samples", "error", int(over),
            f"{rules.provider} takes at most {rules.max_train_examples} training and {rules.max_validation_examples} "
            f"validation examples; the split gives {train_rows} and {validation_rows}", [],
        ))
    if dry_run:
        results.append(domain.RuleResult("provider_schema", "error", writer.line_failure_count,
                                          f"lines the {fmt} format's rules reject", writer.line_failures))
    return results


async def _fetch_on_snapshot(dsn: str, snapshot_id: str, sql: str, args: list) -> list:
    """A query on a connection of its own, seeing the export's snapshot."""
    conn = await asyncpg.connect(dsn)
    try:
        async with on_snapshot(conn, snapshot_id, repository.EXPORT_SETTINGS):
            return await _fetch(conn, sql, args)
    finally:
        await conn.close()


async def _stripes(conn, dsn: str, snapshot_id: str, dataset_type: str, args: list, shaping: Shaping, estimate: int,
                   dropped: set[tuple[str, int]]) -> list[Stripe]:
    """The worker tasks of a parallel export: ranges of the order key holding about STRIPE_ROWS
    examples each, all read on the snapshot the export's transaction exported, each with the
    duplicates it drops."""
    bounds = await _fetch(conn, repository.order_range_sql(dataset_type), args, one=True)
    lo, hi = bounds["lo"], bounds["hi"]
    if lo is None:
        return []
    width = max(1, (hi - lo + 1) * STRIPE_ROWS // max(estimate, 1))
    sql = repository.export_sql(dataset_type, shaping.fmt, stripe=True)
    by_order = sorted((o, i) for i, o in dropped)
    stripes = []
    for start in range(lo, hi + 1, width):
        first, last = bisect.bisect_left(by_order, (start,)), bisect.bisect_left(by_order, (start + width,))
        stripes.append(Stripe(dsn, snapshot_id, sql, (*args, start, start + width), shaping,
                              frozenset(i for _, i in by_order[first:last]), repository.EXPORT_SETTINGS))
    return stripes


async def _snapshot(conn, organization: str, dataset_id: uuid.UUID) -> dict:
    row = await conn.fetchrow(
        'SELECT * FROM "curation".training_datasets WHERE organization = $1 AND id = $2', organization, dataset_id
    )
    if row is None:
        raise domain.NotFound("dataset", dataset_id)
    return dict(row)


@asynccontextmanager
async def _raw_connection(db: Database):
    """The pool's asyncpg connection itself: cursors and COPY-speed fetches without the ORM."""
    async with db.engine.connect() as sa_conn:
        yield (await sa_conn.get_raw_connection()).driver_connection


@asynccontextmanager
async def _one_snapshot(conn):
    """A read-only repeatable-read transaction (one snapshot), planned for reading a dataset."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(repository.EXPORT_SETTINGS)
        yield


async def validate_dataset(db: Database, organization: str, dataset_id: uuid.UUID, fmt: str | None) -> dict:
    """Runs every rule (for `fmt`, or the dataset's export format) and stores the report and score."""
    async with _raw_connection(db) as conn, _one_snapshot(conn):
        snapshot = await _snapshot(conn, organization, dataset_id)
        fmt = fmt or snapshot["export_format"] or DEFAULT_FORMAT[snapshot["dataset_type"]]
        _check_format(fmt, snapshot["dataset_type"])
        found = await examples_pass(conn, snapshot, fmt, snapshot["validation_ratio"], snapshot["split_seed"],
                                    None, "", Masker())
    rules = formats.RULES[fmt]
    report = domain.report(fmt=fmt, provider=rules.provider, total=snapshot["sample_count"], results=found.results,
                           min_examples=rules.min_examples, at=_now())
    async with db.unit_of_work() as uow:
        dataset = await load_dataset(uow, organization, dataset_id)
        dataset.validation_report, dataset.quality_score = report, report["quality_score"]
    return report


# ---------------------------------------------------------------------------------------------
# Export


async def export_dataset(
    db: Database, store, organization: str, dataset_id: uuid.UUID, body: dict[str, Any], *, actor: str,
    correlation_id: str | None,
) -> DatasetExport:
    """Validates while writing the files (one pass), publishes them only if every blocking rule
    passes, then commits the version and DatasetExported in one transaction. One export per dataset
    at a time (an advisory lock); the data is read from one snapshot."""
    fmt = body["format"]
    async with _raw_connection(db) as conn:
        lock = f"curation.export:{dataset_id}"
        if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", lock):
            raise domain.Conflict("an export of this dataset is already running")
        try:
            async with _one_snapshot(conn):
                snapshot = await _snapshot(conn, organization, dataset_id)
                _check_format(fmt, snapshot["dataset_type"])
                domain.check_exportable(snapshot["status"], snapshot["sample_count"])
                ratio = body.get("validation_ratio")
                ratio = snapshot["validation_ratio"] if ratio is None else ratio
                seed = snapshot["split_seed"] if body.get("split_seed") is None else body["split_seed"]
                version = snapshot["export_version"] + 1
                prefix = export_prefix(organization, dataset_id, version)
                masker = Masker()
                found = await examples_pass(conn, snapshot, fmt, ratio, seed, store, prefix, masker, dsn=db.dsn)
            rules = formats.RULES[fmt]
            report = domain.report(fmt=fmt, provider=rules.provider, total=found.counts["total"],
                                   results=found.results, min_examples=rules.min_examples, at=_now())
            if not report["passed"]:
                exc = domain.ValidationFailed(report)
                await asyncio.to_thread(found.writer.abort, exc)
                raise exc
            written, manifest_url = await _finish_files(store, snapshot, fmt, version, prefix, ratio, seed, report,
                                                        found, masker)
            async with db.unit_of_work() as uow:
                return await _commit_export(uow, store, snapshot, fmt, version, written, manifest_url, masker,
                                            report, actor=actor, correlation_id=correlation_id)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock)


def export_prefix(organization: str, dataset_id: uuid.UUID, version: int) -> str:
    return f"datasets/{organization}/{dataset_id}/v{version}"


async def _finish_files(store, snapshot: dict, fmt: str, version: int, prefix: str, ratio: float, seed: int,
                        report: dict, found: Pass, masker: Masker) -> tuple[dict, str]:
    """Publishes the pass's files (each appears whole, at once), then the manifest beside them."""
    try:
        written = await asyncio.to_thread(found.writer.finish)
    except BaseException as exc:
        await asyncio.to_thread(found.writer.abort, exc)
        raise
    counts = found.counts
    for split in ("train", "validation"):
        if split in written:
            written[split]["url"] = store.url(written[split]["key"])
    written["sources"]["url"] = store.url(written["sources"]["key"])
    train_rows = written.get("train", {}).get("rows", 0)
    validation_rows = written.get("validation", {}).get("rows", 0)
    manifest = {
        "dataset_id": str(snapshot["id"]),
        "name": snapshot["name"],
        "dataset_type": snapshot["dataset_type"],
        "organization": snapshot["organization"],
        "export_version": version,
        "dataset_version": snapshot["content_version"],
        "format": fmt,
        "created_at": _now().isoformat(),
        "counts": {"train": train_rows, "validation": validation_rows, "total": train_rows + validation_rows,
                   "duplicates_dropped": counts["total"] - counts["distinct"]},
        "split": {"validation_ratio": ratio, "seed": seed,
                  "method": "hash of the prompt's lower-cased letters and digits, so a prompt stays on one side"},
        "files": written,
        "masking": masker.summary(),
        "masked": dict(sorted(masker.counts.items())),
        "system_prompt": bool(snapshot["system_prompt"]),
        "source_ids": dict(written["sources"], entries=(
            "one per exported example, in export order: its split, id and feedback ids; the n-th entry of a "
            "split describes line n of that split's file")),
        "token_estimate": formats.TOKEN_ESTIMATE,
        "validation": report,
    }
    manifest_url = await asyncio.to_thread(write_manifest, store, f"{prefix}/manifest.json", manifest)
    return written, manifest_url


async def _commit_export(uow: UnitOfWork, store, snapshot: dict, fmt: str, version: int, written: dict,
                         manifest_url: str, masker: Masker, report: dict, *, actor: str,
                         correlation_id: str | None) -> DatasetExport:
    dataset = await load_dataset(uow, snapshot["organization"], snapshot["id"])
    if dataset.status == "archived":
        raise domain.Conflict("the dataset was archived during the export")
    train, validation = written.get("train"), written.get("validation")
    counts = {"train": train["rows"] if train else 0, "validation": validation["rows"] if validation else 0}
    counts["total"] = counts["train"] + counts["validation"]
    export = await repository.add_export(uow.session, dict(
        dataset_id=dataset.id, version=version, organization=dataset.organization, format=fmt,
        url=train["url"] if train else "", sha256=train["sha256"] if train else "",
        validation_url=validation["url"] if validation else None,
        validation_sha256=validation["sha256"] if validation else None, manifest_url=manifest_url, counts=counts,
        masked=dict(sorted(masker.counts.items())), content_version=snapshot["content_version"], created_by=actor,
    ))
    dataset.export_version, dataset.export_format, dataset.export_url = version, fmt, export.url
    dataset.validation_report, dataset.quality_score = report, report["quality_score"]
    dataset.status, dataset.updated_at = "exported", _now()
    uow.emit(
        DatasetExported(
            dataset_id=dataset.id, name=dataset.name, dataset_type=dataset.dataset_type, export_version=version,
            format=fmt, url=export.url, sha256=export.sha256, validation_url=export.validation_url,
            validation_sha256=export.validation_sha256, manifest_url=manifest_url, counts=counts,
            auto_train=dataset.auto_train,
        ),
        organization=dataset.organization,
        correlation_id=correlation_id,
    )
    return export
