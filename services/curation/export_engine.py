"""How an export reads a dataset's examples fast: the one seam is `examples`, a pass over them in
export order as shaped chunks (export.shape), whichever way they are shaped.

  * A small dataset is read by a cursor on the export's own connection and shaped in the service's
    process, chunk by chunk, the next chunk fetched while one is shaped.
  * A large pair dataset is shaped by a pool of worker processes, one stripe of the dataset at a
    time (`run_stripe`: each worker reads its stripe itself, on the export's snapshot, exported with
    pg_export_snapshot), while a second connection on the same snapshot looks for the near
    duplicates. A worker hands a stripe's lines back through shared memory the service lends it with
    the task (TransferSlots), not pickled. The pool is kept between exports, and its processes start
    without the service's main module (`_main_module_hidden`) and keep freed memory between stripes
    (`_keep_freed_memory`).

Memory stays flat whatever the dataset's size: a few chunks are in flight per worker. Every statement
comes from repository.ExampleQueries; worker processes import this module, so it imports nothing of
SQLAlchemy (repository does), and a stripe carries its statements as text.
"""

import asyncio
import atexit
import bisect
import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import TYPE_CHECKING, Any, NamedTuple

import asyncpg

from services.curation.domain import ExportPlan
from services.curation.export import Shaped, shape
from shared.pii import Masker, screen_groups

if TYPE_CHECKING:  # (only for the annotations: worker processes must not import SQLAlchemy)
    from services.curation.repository import ExampleQueries

CHUNK_ROWS = 5000  # rows per cursor fetch in the service's process
STRIPE_ROWS = 5_000  # rows per worker task
PARALLEL_MIN_ROWS = 100_000  # smaller exports are not worth starting worker processes for
WORKERS = os.cpu_count() or 2


class Examples:
    """One pass over a dataset's examples, on one snapshot. `duplicate_groups` are the groups of
    identical examples (ids and order keys, in export order); `shaped_chunks` drops all but the first
    of each group."""

    def __init__(self, duplicate_groups: list, chunks: Callable[[], AsyncIterator[Shaped]],
                 near: Awaitable[list]):
        self.duplicate_groups = duplicate_groups
        self._chunks = chunks
        self._near = near

    def shaped_chunks(self) -> AsyncIterator[Shaped]:
        """The examples shaped, in export order, a chunk at a time."""
        return self._chunks()

    async def near_duplicate_groups(self) -> list:
        """Groups of examples equal up to case, spacing and punctuation (repository.near_duplicate_groups_sql)."""
        return await self._near


def parallel(plan: ExportPlan) -> bool:
    """Whether worker processes shape the export: a large pair dataset's (members of an instruction
    dataset are read by id from the projection, which has no order to stripe), and never a
    validation, which writes nothing."""
    return (not plan.validation_only and plan.dataset_type != "instruction_tuning"
            and plan.sample_count >= PARALLEL_MIN_ROWS)


@asynccontextmanager
async def examples(conn: asyncpg.Connection, dsn: str, queries: "ExampleQueries",
                   plan: ExportPlan) -> AsyncIterator[Examples]:
    """The seam: a pass over the examples `queries` reads, on `conn`'s snapshot (a repeatable-read
    transaction the caller opened), shaped in this process or by the worker pool."""
    if not parallel(plan):
        groups = await queries.duplicate_groups(conn)
        near = asyncio.get_running_loop().create_future()
        near.set_result(await queries.near_duplicate_groups(conn))
        skip = {i for g in groups for i in g["ids"][1:]}

        async def in_process() -> AsyncIterator[Shaped]:
            cursor = await queries.cursor(conn)
            async for chunk in prefetched(lambda: cursor.fetch(CHUNK_ROWS)):
                yield await asyncio.to_thread(shape, chunk, plan, skip)

        yield Examples(groups, in_process, near)
        return
    warm_up_workers()  # the worker processes start while the duplicates are looked for
    snapshot_id = await queries.export_snapshot(conn)
    # the two duplicate searches at once: this connection finds the exact duplicates (the workers
    # need them), a second one on the same snapshot the near duplicates (only the report does)
    near = asyncio.ensure_future(_on_own_connection(dsn, queries, snapshot_id))
    try:
        groups = await queries.duplicate_groups(conn)
        stripes = await _stripes(conn, dsn, queries, snapshot_id, plan, groups)
        yield Examples(groups, lambda: shaped_stripes(stripes), near)
    finally:
        near.cancel()


async def _on_own_connection(dsn: str, queries: "ExampleQueries", snapshot_id: str) -> list:
    """The near-duplicate search on a connection of its own, seeing the export's snapshot."""
    conn = await asyncpg.connect(dsn)
    try:
        async with queries.on_snapshot(conn, snapshot_id):
            return await queries.near_duplicate_groups(conn)
    finally:
        await conn.close()


async def _stripes(conn: asyncpg.Connection, dsn: str, queries: "ExampleQueries", snapshot_id: str,
                   plan: ExportPlan, groups: list) -> list["Stripe"]:
    """The worker tasks of a parallel export: ranges of the order key holding about STRIPE_ROWS
    examples each, all read on the snapshot the export's transaction exported, each with the
    duplicates it drops."""
    lo, hi = await queries.order_range(conn)
    if lo is None:
        return []
    width = max(1, (hi - lo + 1) * STRIPE_ROWS // max(plan.sample_count, 1))
    by_order = sorted((o, i) for g in groups for i, o in zip(g["ids"][1:], g["ords"][1:], strict=True))
    setup = queries.snapshot_setup(snapshot_id)
    stripes = []
    for start in range(lo, hi + 1, width):
        first, last = bisect.bisect_left(by_order, (start,)), bisect.bisect_left(by_order, (start + width,))
        sql, args = queries.stripe(start, start + width)
        stripes.append(Stripe(dsn, setup, sql, args, plan, frozenset(i for _, i in by_order[first:last])))
    return stripes


async def prefetched(fetch: Callable[[], Any]) -> AsyncIterator[list]:
    """Chunks from `fetch` with the next one already on its way while the caller works."""
    pending = asyncio.ensure_future(fetch())
    while True:
        chunk = await pending
        if not chunk:
            return
        pending = asyncio.ensure_future(fetch())
        try:
            yield chunk
        except BaseException:
            pending.cancel()
            raise


# ---------------------------------------------------------------------------------------------
# Worker processes


@dataclass(frozen=True)
class Stripe:
    """One worker task: the rows lo <= ord < hi of the export query, read on the export's snapshot."""

    dsn: str
    setup: str  # the statement that puts its transaction on the export's snapshot, with its planner settings
    sql: str
    args: tuple
    plan: ExportPlan
    skip: frozenset[str]  # the exact duplicates among its rows, dropped


class StripeResult(NamedTuple):
    shaped: Shaped
    placed: dict[str, tuple[int, int]] | None  # in its transfer slot: its JSONL and sources (name: (offset, size))


_worker_state: dict[str, Any] = {}


def run_stripe(stripe: Stripe, slot: str | None = None) -> StripeResult:
    """Runs in a pool process: reads its stripe (one connection and event loop per process, kept)
    and shapes it; the lines go back through the transfer slot named `slot` if they fit in it."""
    loop = _worker_state.get("loop")
    if loop is None:
        loop = _worker_state["loop"] = asyncio.new_event_loop()
    shaped = shape(loop.run_until_complete(_read_stripe(stripe)), stripe.plan, stripe.skip)
    if slot is None:
        return StripeResult(shaped, None)
    memory = _worker_state.get(slot)
    if memory is None:
        memory = _worker_state[slot] = shared_memory.SharedMemory(name=slot)
    return StripeResult(shaped, _place(shaped, memory.buf))


async def _read_stripe(stripe: Stripe) -> list:
    conn = _worker_state.get(stripe.dsn)
    if conn is None or conn.is_closed():
        conn = _worker_state[stripe.dsn] = await asyncpg.connect(stripe.dsn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(stripe.setup)
        return await conn.fetch(stripe.sql, *stripe.args)


def _place(shaped: Shaped, buffer: memoryview) -> dict[str, tuple[int, int]] | None:
    """Moves the JSONL and the sources into `buffer` if they fit (they then do not travel pickled)
    and says where they are."""
    parts = {**shaped.lines, "": shaped.sources}
    if any(not isinstance(p, bytes) for p in parts.values()) or sum(map(len, parts.values())) > len(buffer):
        return None
    at, placed = 0, {}
    for name, data in parts.items():
        buffer[at:at + len(data)] = data
        placed[name] = (at, len(data))
        at += len(data)
    shaped.lines, shaped.sources = {}, b""
    return placed


def _take(result: StripeResult, buffer: memoryview) -> None:
    """The parts a worker placed in `buffer`, as views of it (valid until the buffer is lent again)."""
    if result.placed is not None:
        views = {name: buffer[at:at + size] for name, (at, size) in result.placed.items()}
        result.shaped.sources = views.pop("")
        result.shaped.lines = views


_pool: ProcessPoolExecutor | None = None


def worker_pool(*, fresh: bool = False) -> ProcessPoolExecutor:
    """One pool per service process, started on first use and kept (spawned, not forked: the
    service has threads and an event loop running). `fresh` replaces it (after a worker died)."""
    global _pool
    if _pool is not None and fresh:
        _pool.shutdown(wait=True, cancel_futures=True)  # (a broken pool's processes are gone or going)
        _pool = None
    if _pool is None:
        _pool = ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_keep_freed_memory)
    return _pool


def warm_up_workers(*, fresh: bool = False) -> None:
    """Starts every worker process (spawning and importing take a while) without waiting for them.
    Every worker is started here: a submit starts a process while none is idle and fewer than
    WORKERS run."""
    with _main_module_hidden():
        try:
            futures = [worker_pool(fresh=fresh).submit(_ready) for _ in range(WORKERS)]
        except BrokenProcessPool:  # a worker died since the last export
            futures = [worker_pool(fresh=True).submit(_ready) for _ in range(WORKERS)]
    for f in futures:
        f.add_done_callback(lambda f: f.cancelled() or f.exception())  # a failure shows in the export itself


@contextmanager
def _main_module_hidden():
    """multiprocessing's spawn makes each new process import the parent's main module (functions
    defined there may be sent to it). The workers need nothing from it, and the service's main module
    imports the whole service — FastAPI, SQLAlchemy, FastStream: memory and start-up time every
    worker would pay for nothing. While the workers start, the main module shows neither its name nor its file, as an
    interactive interpreter's does, and spawn imports nothing of it."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _keep_freed_memory() -> None:
    """Each stripe passes through buffers of a few MB (its rows, texts, lines, the joined JSONL). By
    default glibc gives such blocks their own pages and returns them on free, so every stripe pays
    again for fresh zeroed pages (page faults by the hundred thousand in a large export).
    A worker keeps freed memory for the next stripe instead (glibc's M_MMAP_THRESHOLD, M_TRIM_THRESHOLD;
    elsewhere nothing changes). Its peak memory stays what its largest stripe needs."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc
        return
    mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: blocks under 64 MB come from the heap
    mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD: up to 128 MB free at the heap's top is kept


def _ready() -> None:
    """Loads (or compiles) both PII screens: the rows' and the one masking asks per text."""
    screen_groups(["ready"], 1)
    Masker().mask("ready")


class TransferSlots:
    """Shared memory through which the workers hand their lines back: a pickled result is copied five
    times on its way (pickled, into the pipe, out of it, gathered, unpickled), the service's CPU that
    the writer needs. A worker instead writes a stripe's JSONL and sources into a slot the service lent
    it with the task, and the writer reads them there. A slot is lent again only once the service is
    done with it and its task has finished; a stripe that does not fit, or finds no slot free (another
    export running), comes back pickled as before. Without shared memory (no /dev/shm) nothing changes
    but the speed."""

    SLOT_BYTES = 8 << 20  # room for a STRIPE_ROWS stripe of typical examples, twice over

    def __init__(self, count: int):
        self._free: list[shared_memory.SharedMemory] = []
        self._lock = threading.Lock()
        try:
            for _ in range(count):
                self._free.append(shared_memory.SharedMemory(create=True, size=self.SLOT_BYTES))
        except OSError:
            pass
        self._all = list(self._free)
        atexit.register(self.close)

    def lend(self) -> shared_memory.SharedMemory | None:
        with self._lock:
            return self._free.pop() if self._free else None

    def give_back(self, slot: shared_memory.SharedMemory | None) -> None:
        if slot is not None:
            with self._lock:
                self._free.append(slot)

    def give_back_when_done(self, slot: shared_memory.SharedMemory | None, task: Future) -> None:
        """For a task whose result will not be read: its slot is free once no worker writes to it."""
        if task.cancel() or task.done():
            self.give_back(slot)
        else:
            task.add_done_callback(lambda _: self.give_back(slot))

    def close(self) -> None:
        for slot in self._all:
            try:
                slot.close()
            except BufferError:  # a view of it still exists: the mapping goes with the process
                pass
            slot.unlink()
        self._all = self._free = []


_slots: TransferSlots | None = None


def transfer_slots() -> TransferSlots:
    global _slots
    if _slots is None:
        _slots = TransferSlots(WORKERS + 1)  # one a task in flight, one for the stripe being written
    return _slots


async def shaped_stripes(stripes: list[Stripe]) -> AsyncIterator[Shaped]:
    """The stripes' results in order, one more task in flight than there are workers, each lent a
    transfer slot. If a worker dies (killed, out of memory) the pool is replaced and the stripes not
    yet returned run again, once: a stripe is a pure function of the export's snapshot, which stays
    open."""
    slots = transfer_slots()
    done, retried = 0, False
    while True:
        pending: deque[tuple[shared_memory.SharedMemory | None, Future]] = deque()
        try:
            pool, todo = worker_pool(), done
            while True:
                while len(pending) < WORKERS + 1 and todo < len(stripes):
                    slot = slots.lend()
                    try:
                        task = pool.submit(run_stripe, stripes[todo], slot.name if slot else None)
                    except BaseException:  # (a broken pool refuses tasks)
                        slots.give_back(slot)
                        raise
                    pending.append((slot, task))
                    todo += 1
                if not pending:
                    return
                slot, task = pending[0]
                result = await asyncio.wrap_future(task)
                pending.popleft()
                done += 1
                if slot is not None:
                    _take(result, slot.buf)
                try:
                    yield result.shaped
                finally:
                    slots.give_back(slot)
        except BrokenProcessPool:
            if retried:
                raise
            retried = True
            warm_up_workers(fresh=True)
        finally:
            for slot, task in pending:
                slots.give_back_when_done(slot, task)
