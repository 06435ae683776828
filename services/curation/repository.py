"""All of the curation service's SQL. Every query is scoped to one organization.

Most of it runs in a unit of work's session (SQLAlchemy). Validation and export read a dataset's
examples on plain asyncpg connections instead (ExampleQueries): a read-only snapshot streamed by a
cursor or read in stripes by worker processes, at the speed of the driver."""

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import and_, delete, func, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.curation import formats
from services.curation.domain import ExportPlan
from services.curation.models import SCHEMA, DatasetExport, FeedbackView, PreferencePair, TrainingDataset
from shared.bulk import execute_json

# The split and duplicate keys: a prompt's letters and digits, lower-cased. Splitting on this key puts
# prompts that differ only in case, spacing or punctuation on the same side of the split.
PROMPT_KEY = "regexp_replace(lower({col}), '[^[:alnum:]]+', '', 'g')"
SPLIT_BUCKETS = 1_000_000
# A 64-bit hash of the prompt key: counting which keys are shared needs only it (see migration 0003).
PROMPT_HASH = "hashtextextended({key}, 0)"


# An example's side of the split, from its (stored or computed) prompt key.
IN_VALIDATION = f"(abs(hashtextextended(prompt_key, $3)) % {SPLIT_BUCKETS}) < $4"


# ---------------------------------------------------------------------------------------------
# Datasets


async def add_dataset(session: AsyncSession, row: dict[str, Any]) -> TrainingDataset:
    dataset = TrainingDataset(**row)
    session.add(dataset)
    await session.flush()
    await session.refresh(dataset)
    return dataset


async def get_dataset(
    session: AsyncSession, organization: str, dataset_id: uuid.UUID, *, for_update: bool = False
) -> TrainingDataset | None:
    stmt = select(TrainingDataset).where(
        TrainingDataset.organization == organization, TrainingDataset.id == dataset_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def page_datasets(
    session: AsyncSession,
    organization: str,
    *,
    status: str | None,
    dataset_type: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[TrainingDataset]:
    conditions = [TrainingDataset.organization == organization]
    if status:
        conditions.append(TrainingDataset.status == status)
    if dataset_type:
        conditions.append(TrainingDataset.dataset_type == dataset_type)
    if after:
        conditions.append(tuple_(TrainingDataset.created_at, TrainingDataset.id) < tuple_(*after))
    stmt = (
        select(TrainingDataset)
        .where(and_(*conditions))
        .order_by(TrainingDataset.created_at.desc(), TrainingDataset.id.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def count_samples(session: AsyncSession, dataset: TrainingDataset) -> int:
    """Pairs of a pair dataset; approved members (known to the projection) of an instruction dataset."""
    if dataset.dataset_type == "instruction_tuning":
        stmt = select(func.count()).where(
            FeedbackView.organization == dataset.organization,
            FeedbackView.feedback_id == func.any(dataset.feedback_ids),
            FeedbackView.status == "approved",
            FeedbackView.query.is_not(None),
        )
    else:
        stmt = select(func.count()).where(PreferencePair.dataset_id == dataset.id)
    return (await session.execute(stmt)).scalar_one()


async def recount_instruction_datasets(session: AsyncSession, organization: str, feedback_ids: list[uuid.UUID]) -> None:
    """Keeps sample_count true when the review state of member feedback changes."""
    await session.execute(
        text(
            f"""
            UPDATE "{SCHEMA}".training_datasets d SET sample_count = (
                SELECT count(*) FROM "{SCHEMA}".feedback_projection f
                WHERE f.organization = d.organization AND f.feedback_id = ANY(d.feedback_ids)
                  AND f.status = 'approved' AND f.query IS NOT NULL)
            WHERE d.organization = :org AND d.dataset_type = 'instruction_tuning' AND d.feedback_ids && :ids
            """
        ),
        {"org": organization, "ids": feedback_ids},
    )


# ---------------------------------------------------------------------------------------------
# Preference pairs


@dataclass(frozen=True)
class PairFilter:
    dataset_id: uuid.UUID | None = None
    annotator: str | None = None
    min_strength: float | None = None
    max_strength: float | None = None
    q: str | None = None
    strategy: str | None = None


async def add_pair(session: AsyncSession, row: dict[str, Any]) -> PreferencePair:
    pair = PreferencePair(**row)
    session.add(pair)
    await session.flush()
    await session.refresh(pair)
    return pair


async def get_pair(
    session: AsyncSession, organization: str, pair_id: uuid.UUID, *, for_update: bool = False
) -> PreferencePair | None:
    stmt = select(PreferencePair).where(PreferencePair.organization == organization, PreferencePair.id == pair_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def delete_pair(session: AsyncSession, pair: PreferencePair) -> None:
    await session.execute(delete(PreferencePair).where(PreferencePair.id == pair.id))


def _like(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def page_pairs(
    session: AsyncSession,
    organization: str,
    f: PairFilter,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[PreferencePair]:
    conditions = [PreferencePair.organization == organization]
    if f.dataset_id:
        conditions.append(PreferencePair.dataset_id == f.dataset_id)
    if f.annotator:
        conditions.append(PreferencePair.annotator_email == f.annotator)
    if f.min_strength is not None:
        conditions.append(PreferencePair.preference_strength >= f.min_strength)
    if f.max_strength is not None:
        conditions.append(PreferencePair.preference_strength <= f.max_strength)
    if f.strategy:
        conditions.append(PreferencePair.strategy == f.strategy)
    if f.q:
        pattern = _like(f.q)
        conditions.append(
            or_(
                PreferencePair.query.ilike(pattern),
                PreferencePair.chosen_response.ilike(pattern),
                PreferencePair.rejected_response.ilike(pattern),
            )
        )
    if after:
        conditions.append(tuple_(PreferencePair.created_at, PreferencePair.id) < tuple_(*after))
    stmt = (
        select(PreferencePair)
        .where(and_(*conditions))
        .order_by(PreferencePair.created_at.desc(), PreferencePair.id.desc())
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


@dataclass(frozen=True)
class FeedbackScope:
    feedback_ids: list[uuid.UUID] | None = None
    tags: list[str] | None = None  # normalised (shared.tags.normalize_tag), as stored tags are
    created_from: datetime | None = None
    created_to: datetime | None = None
    approved_only: bool = False


def _eligible_cte(scope: FeedbackScope) -> tuple[str, dict[str, Any]]:
    """The feedback a bulk run may pair: known content, not rejected by a curator, in scope."""
    conditions = ["organization = :org", "query IS NOT NULL", "status <> 'rejected'"]
    params: dict[str, Any] = {}
    if scope.approved_only:
        conditions.append("status = 'approved'")
    if scope.feedback_ids is not None:
        conditions.append("feedback_id = ANY(:ids)")
        params["ids"] = scope.feedback_ids
    if scope.tags:
        conditions.append("tags && :tags")
        params["tags"] = scope.tags
    if scope.created_from:
        conditions.append("created_at >= :created_from")
        params["created_from"] = scope.created_from
    if scope.created_to:
        conditions.append("created_at < :created_to")
        params["created_to"] = scope.created_to
    cte = f"""
        eligible AS (
            SELECT feedback_id, query, response, feedback_type, rating, created_at,
                   COALESCE(review_correction, value_correction) AS correction,
                   {PROMPT_KEY.format(col="query")} AS qkey
            FROM "{SCHEMA}".feedback_projection
            WHERE {" AND ".join(conditions)})"""
    return cte, params


_INSERT_PAIRS = f"""
    INSERT INTO "{SCHEMA}".preference_pairs
        (id, organization, dataset_id, query, chosen_response, rejected_response, preference_strength,
         annotator_email, source_feedback_ids, strategy, source_key, created_at, updated_at)
    SELECT gen_random_uuid(), :org, :dataset_id, query, chosen, rejected, strength,
           :annotator, sources, :strategy, :strategy || ':' || array_to_string(sources, ':'), now(), now()
    FROM candidates
    ON CONFLICT (dataset_id, source_key) DO NOTHING
    RETURNING 1"""

# Each strategy selects candidates (query, chosen, rejected, strength, sources) from `eligible`.
_CANDIDATES = {
    "correction": """
        SELECT query, correction AS chosen, response AS rejected, 1.0::float AS strength,
               ARRAY[feedback_id] AS sources
        FROM eligible
        WHERE correction IS NOT NULL AND btrim(correction) <> '' AND btrim(correction) <> btrim(response)""",
    "thumbs": """
        SELECT query, chosen, rejected, 1.0::float AS strength, sources FROM (
            SELECT up.query, up.response AS chosen, down.response AS rejected,
                   ARRAY[up.feedback_id, down.feedback_id] AS sources,
                   row_number() OVER (PARTITION BY up.qkey
                                      ORDER BY up.created_at, up.feedback_id, down.created_at, down.feedback_id) AS n
            FROM eligible up JOIN eligible down ON up.qkey = down.qkey
            WHERE up.feedback_type = 'thumbs_up' AND down.feedback_type = 'thumbs_down'
              AND btrim(up.response) <> btrim(down.response)) ranked
        WHERE n <= :cap""",
    "rating": """
        SELECT query, chosen, rejected, strength, sources FROM (
            SELECT hi.query, hi.response AS chosen, lo.response AS rejected,
                   least(1.0, (hi.rating - lo.rating) / :span)::float AS strength,
                   ARRAY[hi.feedback_id, lo.feedback_id] AS sources,
                   row_number() OVER (PARTITION BY hi.qkey
                                      ORDER BY hi.rating - lo.rating DESC, hi.feedback_id, lo.feedback_id) AS n
            FROM eligible hi JOIN eligible lo ON hi.qkey = lo.qkey AND hi.rating >= lo.rating + :gap
            WHERE hi.feedback_type = 'rating' AND lo.feedback_type = 'rating'
              AND btrim(hi.response) <> btrim(lo.response)) ranked
        WHERE n <= :cap""",
}


async def pairs_by_strategy(
    session: AsyncSession,
    organization: str,
    dataset_id: uuid.UUID,
    strategy: str,
    scope: FeedbackScope,
    *,
    cap: int,
    min_rating_gap: float,
    rating_span: float,
    annotator: str | None,
    dry_run: bool = False,
) -> int:
    """One INSERT … SELECT in the database; returns how many pairs are new (re-runs add none). With
    `dry_run`, the same candidates are only counted, less those the dataset already holds (the same
    source key): what the INSERT would add now, nothing written.

    The thumbs and rating strategies join feedback to feedback on the normalised query. A projection
    filled since its last ANALYZE (a fresh import, a burst of feedback) has no statistics, the planner
    then expects a row or two and nests loops: every eligible item compared with every other. A
    hash join is never much worse here, so nested loops are off for this statement's transaction."""
    await session.execute(text("SET LOCAL enable_nestloop = off"))
    eligible, params = _eligible_cte(scope)
    if dry_run:
        tail = f"""SELECT count(DISTINCT c.sources) FROM candidates c
            WHERE NOT EXISTS (SELECT 1 FROM "{SCHEMA}".preference_pairs p
                              WHERE p.dataset_id = :dataset_id
                                AND p.source_key = :strategy || ':' || array_to_string(c.sources, ':'))"""
    else:
        tail = f"ins AS ({_INSERT_PAIRS}) SELECT count(*) FROM ins"
    sql = f"WITH {eligible}, candidates AS ({_CANDIDATES[strategy]}){'' if dry_run else ','} {tail}"
    params.update(
        org=organization, dataset_id=dataset_id, strategy=strategy, annotator=annotator, cap=cap,
        gap=min_rating_gap, span=rating_span,
    )
    return (await session.execute(text(sql), params)).scalar_one()


# ---------------------------------------------------------------------------------------------
# The feedback projection


# The projection's writes: one statement per batch, the batch one JSON parameter (shared/bulk.py).
# A feedback id held by another organization is never touched (event ids and feedback ids are
# global, organizations are not trusted to be disjoint).
_UPSERT_RECEIVED = f"""
    INSERT INTO "{SCHEMA}".feedback_projection AS p (feedback_id, organization, query, response, feedback_type,
        rating, value_correction, session_id, model_id, created_at, tags, status)
    SELECT f.*, 'pending' FROM jsonb_to_recordset($1::jsonb) AS f(feedback_id uuid, organization text, query text,
        response text, feedback_type text, rating float8, value_correction text, session_id text, model_id text,
        created_at timestamptz, tags text[])
    ON CONFLICT (feedback_id) DO UPDATE SET
        query = excluded.query, response = excluded.response, feedback_type = excluded.feedback_type,
        rating = excluded.rating, value_correction = excluded.value_correction, session_id = excluded.session_id,
        model_id = excluded.model_id, created_at = excluded.created_at,
        tags = CASE WHEN p.reviewed_at IS NULL THEN excluded.tags ELSE p.tags END
    WHERE p.organization = excluded.organization"""

_UPSERT_REVIEWED = f"""
    INSERT INTO "{SCHEMA}".feedback_projection AS p (feedback_id, organization, status, review_correction, tags,
        reviewed_at)
    SELECT f.* FROM jsonb_to_recordset($1::jsonb) AS f(feedback_id uuid, organization text, status text,
        review_correction text, tags text[], reviewed_at timestamptz)
    ON CONFLICT (feedback_id) DO UPDATE SET
        status = excluded.status, review_correction = excluded.review_correction, tags = excluded.tags,
        reviewed_at = excluded.reviewed_at
    WHERE p.organization = excluded.organization AND (p.reviewed_at IS NULL OR p.reviewed_at <= excluded.reviewed_at)"""


async def upsert_received(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Content of feedback items (one row per feedback id); review state, if a FeedbackReviewed came
    first, is left alone, and so are its tags."""
    await execute_json(session, _UPSERT_RECEIVED, rows)


async def upsert_reviewed(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Review state (one row per feedback id); an older review arriving late never overwrites a newer one."""
    await execute_json(session, _UPSERT_REVIEWED, rows)


# ---------------------------------------------------------------------------------------------
# Validation and export: plain SQL over one dataset's examples ($1 organization, $2 dataset id or
# member ids, $3 split seed, $4 validation bucket cut).

# Each example row has the fields of formats.Record (in its order), then its prompt key, its
# exact-duplicate key and `ord`, its place in the export order. Pairs store both keys (migration
# 0002: generated columns, one expression for every write path) and their order, `seq` (migration
# 0003: the order they were written in, which is the table's physical order); instruction members,
# from the projection, compute the keys here and are ordered by feedback id.
PAIR_EXAMPLES = f"""
    SELECT id::text AS id, query AS prompt, chosen_response AS chosen, rejected_response AS rejected,
           preference_strength AS strength, context_documents::text AS context, annotator_email AS annotator,
           annotation_notes AS notes, to_json(source_feedback_ids)::text AS feedback_ids, strategy,
           prompt_key, prompt_hash, exact_key, seq AS ord
    FROM "{SCHEMA}".preference_pairs WHERE organization = $1 AND dataset_id = $2"""

EXACT_KEY = "md5(prompt || chr(1) || chosen || chr(1) || coalesce(rejected, ''))::uuid"

INSTRUCTION_EXAMPLES = f"""
    SELECT *, {PROMPT_KEY.format(col="prompt")} AS prompt_key, {PROMPT_HASH.format(key=PROMPT_KEY.format(col="prompt"))}
           AS prompt_hash, {EXACT_KEY} AS exact_key, id AS ord FROM (
        SELECT feedback_id::text AS id, query AS prompt,
               COALESCE(review_correction, value_correction, response) AS chosen, NULL::text AS rejected,
               NULL::float AS strength, '[]' AS context, NULL::text AS annotator, NULL::text AS notes,
               to_json(ARRAY[feedback_id])::text AS feedback_ids, 'approved_feedback' AS strategy
        FROM "{SCHEMA}".feedback_projection
        WHERE organization = $1 AND feedback_id = ANY($2::uuid[]) AND status = 'approved' AND query IS NOT NULL
    ) members"""


# Planner settings for a transaction that reads a dataset for validation or export:
#   * work_mem — room for the duplicate searches' hash tables (a million prompt keys);
#   * no parallel plans — the export reads by cursor, which never runs one: the planner would pick a
#     parallel scan and sort over the index that gives the export order, then run it serially;
#   * random_page_cost 1.1 (the usual value for data in memory or on SSD) — the (dataset_id, seq)
#     index follows the table's physical order, yet at the default 4 the planner reads a stripe
#     with a bitmap scan and a sort spilled to disk, much slower than walking the index.
EXPORT_SETTINGS = ("SET LOCAL work_mem = '64MB'; SET LOCAL max_parallel_workers_per_gather = 0; "
                   "SET LOCAL random_page_cost = 1.1")


def examples_sql(dataset_type: str) -> str:
    return INSTRUCTION_EXAMPLES if dataset_type == "instruction_tuning" else PAIR_EXAMPLES


def export_sql(dataset_type: str, fmt: str, *, stripe: bool = False) -> str:
    """Every example in export order with its side of the split: the same data always gives the same
    file. For pairs the order is the (dataset_id, seq) index, which follows the table's physical
    order: the scan reads the heap front to back. Exact duplicates are in the stream; the export
    skips all but the first of each group (duplicate_groups_sql). With `stripe`, only the examples
    with $5 <= ord < $6."""
    # only some formats carry the other fields; for the rest the rows are short (formats.record)
    columns = ("id, prompt, chosen, rejected, strength, context, annotator, notes, strategy, feedback_ids"
               if fmt in formats.FULL_ROW_FORMATS else "id, prompt, chosen, rejected, feedback_ids")
    where = "WHERE ord >= $5 AND ord < $6" if stripe else ""
    return f"""
        SELECT {columns}, {IN_VALIDATION} AS in_validation
        FROM ({examples_sql(dataset_type)}) e {where}
        ORDER BY ord"""


def order_range_sql(dataset_type: str) -> str:
    """The first and last order key of a dataset (for pairs, the two ends of the seq index)."""
    return f"SELECT min(ord) AS lo, max(ord) AS hi FROM ({examples_sql(dataset_type)}) e"


def duplicate_groups_sql(dataset_type: str) -> str:
    """Each group of identical examples (ids and order keys in export order; the first is the one
    exported), in export order. The groups are found by counting keys alone — for pairs an index-only
    scan of (dataset_id, exact_key, seq) INCLUDE (id, organization), no table access, no sort — and
    only their members are read again."""
    examples = examples_sql(dataset_type)
    return f"""
        WITH shared AS (SELECT exact_key FROM ({examples}) e GROUP BY exact_key HAVING count(*) > 1)
        SELECT array_agg(id ORDER BY ord) AS ids, array_agg(ord ORDER BY ord) AS ords
        FROM ({examples}) e JOIN shared s ON s.exact_key = e.exact_key
        GROUP BY e.exact_key ORDER BY min(ord)"""


def near_duplicate_groups_sql(dataset_type: str) -> str:
    """Groups of examples equal up to case, spacing and punctuation that hold more than one distinct
    example, with how many distinct ones: each beyond the first is a near duplicate. Only examples
    whose prompt key is shared can be near duplicates, so only those get their answers normalised;
    which keys are shared is counted on the prompt hash (for pairs an index-only scan of
    (dataset_id, prompt_hash)), the few that share one are compared by their keys."""
    answers = " || chr(1) || ".join(PROMPT_KEY.format(col=c) for c in ("chosen", "coalesce(rejected, '')"))
    examples = examples_sql(dataset_type)
    return f"""
        WITH shared AS (SELECT prompt_hash FROM ({examples}) e GROUP BY prompt_hash HAVING count(*) > 1)
        SELECT array_agg(id ORDER BY ord) AS ids, count(DISTINCT exact_key) AS distinct_examples,
               left(min(prompt), 200) AS prompt
        FROM ({examples}) e JOIN shared s ON s.prompt_hash = e.prompt_hash
        GROUP BY e.prompt_key, md5({answers})
        HAVING count(DISTINCT exact_key) > 1
        ORDER BY min(ord)"""


def example_prompts_sql(dataset_type: str) -> str:
    """The prompts of the given example ids ($3), for a report's examples: looked up by the table's key
    (a filter on the examples' text ids would compute the text of every id in the dataset)."""
    if dataset_type == "instruction_tuning":
        return f"""SELECT feedback_id::text AS id, left(query, 200) AS prompt FROM "{SCHEMA}".feedback_projection
                   WHERE organization = $1 AND feedback_id = ANY($2::uuid[]) AND feedback_id = ANY($3::uuid[])"""
    return f"""SELECT id::text AS id, left(query, 200) AS prompt FROM "{SCHEMA}".preference_pairs
               WHERE organization = $1 AND dataset_id = $2 AND id = ANY($3::uuid[])"""


# ---------------------------------------------------------------------------------------------
# The reads of validation and export: on a plain asyncpg connection (and, for a large export, the
# worker processes' connections sharing its snapshot)


@asynccontextmanager
async def read_only_snapshot(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """A read-only repeatable-read transaction (one snapshot), planned for reading a dataset."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(EXPORT_SETTINGS)
        yield


async def dataset_row(conn: asyncpg.Connection, organization: str, dataset_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(f'SELECT * FROM "{SCHEMA}".training_datasets WHERE organization = $1 AND id = $2',
                              organization, dataset_id)
    return dict(row) if row is not None else None


_PARAM = re.compile(r"\$(\d+)")
_SNAPSHOT_ID = re.compile(r"[0-9A-F-]+")


@dataclass(frozen=True)
class ExampleQueries:
    """The reads of one pass over a dataset's examples (the plan's): the export query, whole or in
    stripes, the duplicate searches and the report's example prompts, and the snapshot that worker
    processes share with the export's transaction."""

    plan: ExportPlan

    @property
    def args(self) -> list:
        plan = self.plan
        members = list(plan.members) if plan.dataset_type == "instruction_tuning" else plan.dataset_id
        return [plan.organization, members, plan.split_seed, int(plan.validation_ratio * SPLIT_BUCKETS)]

    async def _fetch(self, conn: asyncpg.Connection, sql: str, *, one: bool = False):
        """asyncpg wants exactly the parameters a statement uses: pass the first N of the common list."""
        used = max((int(n) for n in _PARAM.findall(sql)), default=0)
        return await (conn.fetchrow if one else conn.fetch)(sql, *self.args[:used])

    async def duplicate_groups(self, conn: asyncpg.Connection) -> list:
        return await self._fetch(conn, duplicate_groups_sql(self.plan.dataset_type))

    async def near_duplicate_groups(self, conn: asyncpg.Connection) -> list:
        return await self._fetch(conn, near_duplicate_groups_sql(self.plan.dataset_type))

    async def order_range(self, conn: asyncpg.Connection) -> tuple[Any, Any]:
        bounds = await self._fetch(conn, order_range_sql(self.plan.dataset_type), one=True)
        return bounds["lo"], bounds["hi"]

    async def cursor(self, conn: asyncpg.Connection):
        """Every example in export order (in a transaction: a cursor needs one)."""
        return await conn.cursor(export_sql(self.plan.dataset_type, self.plan.fmt), *self.args)

    def stripe(self, lo: int, hi: int) -> tuple[str, tuple]:
        """The statement and arguments reading the examples with lo <= ord < hi."""
        return export_sql(self.plan.dataset_type, self.plan.fmt, stripe=True), (*self.args, lo, hi)

    async def example_prompts(self, conn: asyncpg.Connection, ids: list[str]) -> dict[str, str]:
        return dict(await conn.fetch(example_prompts_sql(self.plan.dataset_type), *self.args[:2], ids))

    @staticmethod
    async def export_snapshot(conn: asyncpg.Connection) -> str:
        """The id of `conn`'s snapshot, for other connections to share while its transaction lasts."""
        return await conn.fetchval("SELECT pg_export_snapshot()")

    @staticmethod
    def snapshot_setup(snapshot_id: str) -> str:
        """The statement that puts a read-only repeatable-read transaction on an exported snapshot,
        planned as the export's own (worker processes run it as text: they import no SQLAlchemy)."""
        if not _SNAPSHOT_ID.fullmatch(snapshot_id):
            raise ValueError(f"not a snapshot id: {snapshot_id!r}")
        return f"SET TRANSACTION SNAPSHOT '{snapshot_id}'; {EXPORT_SETTINGS}"

    @asynccontextmanager
    async def on_snapshot(self, conn: asyncpg.Connection, snapshot_id: str) -> AsyncIterator[None]:
        """A read-only transaction on `conn` that sees what the export's own transaction sees."""
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(self.snapshot_setup(snapshot_id))
            yield


# ---------------------------------------------------------------------------------------------
# Export versions


async def try_lock_export(session: AsyncSession, dataset_id: uuid.UUID) -> bool:
    """One export per dataset at a time: a lock held by the session's transaction until it ends."""
    stmt = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:lock, 0))")
    return (await session.execute(stmt, {"lock": f"curation.export:{dataset_id}"})).scalar_one()


async def add_export(session: AsyncSession, row: dict[str, Any]) -> DatasetExport:
    export = DatasetExport(**row)
    session.add(export)
    await session.flush()
    await session.refresh(export)
    return export


async def list_exports(session: AsyncSession, organization: str, dataset_id: uuid.UUID) -> list[DatasetExport]:
    stmt = (
        select(DatasetExport)
        .where(DatasetExport.organization == organization, DatasetExport.dataset_id == dataset_id)
        .order_by(DatasetExport.version.desc())
    )
    return list((await session.execute(stmt)).scalars())


async def get_export(
    session: AsyncSession, organization: str, dataset_id: uuid.UUID, version: int
) -> DatasetExport | None:
    stmt = select(DatasetExport).where(
        DatasetExport.organization == organization,
        DatasetExport.dataset_id == dataset_id,
        DatasetExport.version == version,
    )
    return (await session.execute(stmt)).scalar_one_or_none()
