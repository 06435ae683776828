"""Writing an export: examples shaped per format, PII masked, the row rules tallied, and the files
written atomically to the object store.

The work is split in two so that it can use every CPU:
  * `shape` turns rows into lines: exact duplicates dropped, the row rules tallied, the PII screen
    and masking, the line and its source entry. It is pure, so a large export runs it in a pool of
    processes, one stripe of the dataset at a time (`run_stripe`: each worker reads its stripe
    itself, on the export's snapshot, exported with pg_export_snapshot); small exports run it in
    the service's process. A value found to be PII is replaced by a reference to it (References),
    not by a numbered placeholder: numbering needs the whole export's order.
  * `ExportWriter` takes the shaped stripes back in export order and does what needs one place: it
    numbers the placeholders (first appearance in export order gets 1: the files are the same
    whatever the number of workers), counts, hashes and writes. A worker hands a stripe's lines
    back through shared memory the service lends it with the task (TransferSlots), not pickled.

Memory stays flat whatever the dataset's size: a few stripes are in flight per worker. Every file is
written through the store's atomic writer (temporary file, then rename / one upload), so an
interrupted export leaves no partial file; the version only becomes visible when the service commits
it, after every file is in place.
"""

import asyncio
import atexit
import hashlib
import itertools
import multiprocessing
import operator
import os
import re
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from typing import Any, BinaryIO

import asyncpg
import orjson

from services.curation import formats
from services.curation.pii import Masker, screen_groups

CHUNK_ROWS = 5000  # rows per cursor fetch in the service's process
STRIPE_ROWS = 5_000  # rows per worker task
PARALLEL_MIN_ROWS = 100_000  # smaller exports are not worth starting worker processes for
WORKERS = os.cpu_count() or 2


class HashingWriter:
    """Counts and hashes the bytes on their way to the store's writer."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.out.write(data)

    # pyarrow's writer asks for these on a Python file object
    def flush(self) -> None:
        self.out.flush()

    @property
    def closed(self) -> bool:
        return False

    def tell(self) -> int:
        return self.size


class Tally:
    """The row-level rules, counted while the examples go by (validation and export are one pass):
    empty or whitespace-only fields, chosen identical to rejected, over the provider's length limit.
    Each keeps its first three examples in export order."""

    RULES = ("empty_field", "chosen_equals_rejected", "too_long")

    def __init__(self, max_bytes: int | None):
        self.max_bytes = max_bytes
        self.counts = dict.fromkeys(self.RULES, 0)
        self.examples: dict[str, list[dict]] = {rule: [] for rule in self.RULES}

    def _hit(self, rule: str, example_id: str, prompt: str) -> None:
        self.counts[rule] += 1
        if len(self.examples[rule]) < 3:
            self.examples[rule].append({"id": example_id, "prompt": prompt[:200]})

    def see(self, example_id: str, prompt: str, chosen: str, rejected: str | None) -> None:
        # str.strip returns the string itself when there is nothing to strip: these are cheap
        if not prompt.strip() or not chosen.strip() or (rejected is not None and not rejected.strip()):
            self._hit("empty_field", example_id, prompt)
        elif rejected is not None and chosen.strip() == rejected.strip():
            self._hit("chosen_equals_rejected", example_id, prompt)
        if self.max_bytes is not None:
            chars = len(prompt) + len(chosen) + (len(rejected) if rejected else 0)
            # UTF-8 takes at most 4 bytes a character: only long texts need encoding to be sure
            if chars * 4 > self.max_bytes and sum(len(t.encode()) for t in (prompt, chosen, rejected or "")) > (
                self.max_bytes
            ):
                self._hit("too_long", example_id, prompt)

    def add(self, other: "Tally") -> None:
        """Adds the tally of the rows that come after this one's."""
        for rule in self.RULES:
            self.counts[rule] += other.counts[rule]
            self.examples[rule] = (self.examples[rule] + other.examples[rule])[:3]


CONTEXT = formats.Record._fields.index("context_documents")


def masked(record: formats.Record, fields: tuple[int, ...], masker: Masker) -> formats.Record:
    """The record with PII masked in the fields (positions) the format exports."""
    values = list(record)
    for i in fields:
        text = values[i]
        if i == CONTEXT:
            values[i] = orjson.dumps(masker.mask_json(orjson.loads(text))).decode() if text != "[]" else text
        elif text:
            values[i] = masker.mask(text)
    return formats.Record._make(values)


@dataclass(frozen=True)
class Shaping:
    """How rows become lines (picklable: it travels to the worker processes)."""

    fmt: str
    system_prompt: str | None
    max_bytes: int | None
    dry_run: bool = False  # validation: every line is checked against the provider's rules instead


@dataclass
class Shaped:
    """One stripe's (or chunk's) examples, shaped, per split, in export order."""

    # per split: the JSONL lines joined into one bytes object (cheap to pass between processes and
    # to write), or for parquet the rows as dicts
    lines: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=lambda: {"train": 0, "validation": 0})
    # rows holding PII, in export order: (split, where its line is — (start, end) bytes in the split's
    # JSONL or an index in its rows —, the (kind, value) its references point to). The line has
    # references where the placeholders go (References); the writer numbers them. A row whose own
    # text holds \x01 or \x02 comes as its record instead, and the writer masks it.
    flagged: list[tuple[str, Any, list[tuple[str, str]] | tuple]] = field(default_factory=list)
    sources: bytes = b""  # one entry per example, in export order whatever the split
    tally: Tally | None = None
    line_failures: list[dict] = field(default_factory=list)
    line_failure_count: int = 0
    # where a worker put the JSONL and the sources in a transfer slot instead (name: (offset, size))
    placed: dict[str, tuple[int, int]] | None = None

    def place(self, buffer: memoryview) -> None:
        """Moves the JSONL and the sources into `buffer` if they fit (they then do not travel pickled)."""
        parts = {**self.lines, "": self.sources}
        if self.placed is not None or any(not isinstance(p, bytes) for p in parts.values()) or (
                sum(map(len, parts.values())) > len(buffer)):
            return
        at, self.placed = 0, {}
        for name, data in parts.items():
            buffer[at:at + len(data)] = data
            self.placed[name] = (at, len(data))
            at += len(data)
        self.lines, self.sources = {}, b""

    def take(self, buffer: memoryview) -> None:
        """The parts a worker placed in `buffer`, as views of it (valid until the buffer is reused)."""
        if self.placed is not None:
            views = {name: buffer[at:at + size] for name, (at, size) in self.placed.items()}
            self.sources, self.placed = views.pop(""), None
            self.lines = views


class References(Masker):
    """Masks as a Masker does, but in place of a numbered placeholder writes a reference to the n-th
    value it found, `\\x01<n in letters>\\x02`: the expensive part (finding and validating PII) runs
    wherever the row is shaped, and the numbers are given in one place, the writer, in export order."""

    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def placeholder(self, kind: str, value: str) -> str:
        self.found.append((kind, value))
        return f"\x01{str(len(self.found) - 1).translate(_LETTERS)}\x02"


_LETTERS = str.maketrans("0123456789", "abcdefghij")  # letters: a reference never joins a number around it
_DIGITS = {bytes: bytes.maketrans(b"abcdefghij", b"0123456789"), str: str.maketrans("abcdefghij", "0123456789")}
_JSON_REFERENCE = re.compile(rb"\\u0001([a-j]+)\\u0002")  # as orjson writes \x01 and \x02 in a string
_TEXT_REFERENCE = re.compile("\x01([a-j]+)\x02")


def line_writer(shaping: Shaping) -> Callable[[formats.Record | tuple], Any]:
    """A row's line in the export's files: a JSONL line, or for parquet the row as a dict."""
    fmt, system = shaping.fmt, shaping.system_prompt
    if fmt == "parquet":
        return lambda r: formats.BUILDERS[fmt](formats.record(r), system)
    return formats.json_line_writer(fmt, system)


def shape(rows: list, shaping: Shaping, skip: set[str]) -> Shaped:
    """Rows of the export query as lines: pure, so it runs in any process. Exact duplicates in `skip`
    are dropped. A row whose exported fields hold PII is masked with references (References), which
    the writer numbers. A dry run (validation) keeps no lines: it checks each against the provider's
    rules (masking changes no line's structure or emptiness, so it is not done)."""
    out = Shaped(tally=Tally(shaping.max_bytes))
    see = out.tally.see
    build, system, fmt, dry_run = formats.BUILDERS[shaping.fmt], shaping.system_prompt, shaping.fmt, shaping.dry_run
    fields = formats.EXPORTED_FIELDS[fmt]
    exported = operator.itemgetter(*fields)  # (every format exports at least two fields)
    references = References()  # one for the rows: each row's references start again from 0
    parquet = fmt == "parquet"
    line = line_writer(shaping)
    lines: dict[str, list] = {"train": [], "validation": []}
    sources: list[str] = []
    flagged: set[int] = set()  # the rows in which the PII screen finds candidates
    if not dry_run:
        texts = list(itertools.chain.from_iterable(map(exported, rows)))
        flagged = screen_groups(texts if None not in texts else [t or "" for t in texts], len(fields))
    for n, row in enumerate(rows):
        example_id, prompt, chosen, rejected, *_, feedback_ids, in_validation = row
        if skip and example_id in skip:
            continue
        see(example_id, prompt, chosen, rejected)
        split = "validation" if in_validation else "train"
        # ids are uuids and feedback_ids the database's JSON: nothing here needs escaping
        sources.append(f'{{"split":"{split}","id":"{example_id}","feedback_ids":{feedback_ids}}}\n')
        if dry_run:
            out.rows[split] += 1
            problems = formats.line_problems(fmt, build(formats.record(row), system))
            if problems:
                out.line_failure_count += 1
                if len(out.line_failures) < 3:
                    out.line_failures.append({"id": example_id, "problems": problems})
            continue
        r, found = row, None  # the builders and line writers read fields by position: a Record only where built anew
        if n in flagged:
            if any("\x01" in t or "\x02" in t for t in exported(row) if t):
                found = tuple(row)
            else:
                references.found = []
                r = masked(formats.record(row), fields, references)
                found = references.found or None
        split_lines = lines[split]
        if found:
            out.flagged.append((split, len(split_lines), found))
        split_lines.append(line(r))
    if not dry_run:
        out.rows = {split: len(split_lines) for split, split_lines in lines.items()}
        out.lines = lines
        if not parquet:  # the flagged lines' places as byte ranges of their split's JSONL, each split one blob
            starts = {split: list(itertools.accumulate(map(len, lines[split]), initial=0))
                      for split in {split for split, _, _ in out.flagged}}
            out.flagged = [(split, (starts[split][i], starts[split][i + 1]), found)
                           for split, i, found in out.flagged]
            out.lines = {split: b"".join(split_lines) for split, split_lines in lines.items()}
    out.sources = "".join(sources).encode()
    return out


# ---------------------------------------------------------------------------------------------
# Worker processes


@dataclass(frozen=True)
class Stripe:
    """One worker task: rows lo <= ord < hi of the export query, read on the export's snapshot."""

    dsn: str
    snapshot: str
    sql: str
    args: tuple
    shaping: Shaping
    skip: frozenset[str]  # the exact duplicates among its rows, dropped
    settings: str  # the planner settings of the export's transaction (repository.EXPORT_SETTINGS)


_SNAPSHOT_ID = re.compile(r"[0-9A-F-]+")
_worker_state: dict[str, Any] = {}


def run_stripe(stripe: Stripe, slot: str | None = None) -> Shaped:
    """Runs in a pool process: reads its stripe (one connection and event loop per process, kept)
    and shapes it; the lines go back through the transfer slot named `slot` if they fit in it."""
    loop = _worker_state.get("loop")
    if loop is None:
        loop = _worker_state["loop"] = asyncio.new_event_loop()
    shaped = shape(loop.run_until_complete(_read_stripe(stripe)), stripe.shaping, stripe.skip)
    if slot is not None:
        memory = _worker_state.get(slot)
        if memory is None:
            memory = _worker_state[slot] = shared_memory.SharedMemory(name=slot)
        shaped.place(memory.buf)
    return shaped


async def _read_stripe(stripe: Stripe) -> list:
    conn = _worker_state.get(stripe.dsn)
    if conn is None or conn.is_closed():
        conn = _worker_state[stripe.dsn] = await asyncpg.connect(stripe.dsn)
    async with on_snapshot(conn, stripe.snapshot, stripe.settings):
        return await conn.fetch(stripe.sql, *stripe.args)


@asynccontextmanager
async def on_snapshot(conn: asyncpg.Connection, snapshot: str, settings: str) -> AsyncIterator[None]:
    """A read-only transaction on `conn` that sees what the export's own transaction sees: the
    snapshot it exported (pg_export_snapshot), with its planner settings."""
    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError(f"not a snapshot id: {snapshot!r}")
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'; {settings}")
        yield


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
    imports the whole service — FastAPI, SQLAlchemy, FastStream: ~50 MB more a worker, and a second
    of start-up. While the workers start, the main module shows neither its name nor its file, as an
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
    again for fresh zeroed pages: ~400,000 page faults a million-row export, ~10% of the workers' CPU.
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
    Masker().contains_pii("ready")


class TransferSlots:
    """Shared memory through which the workers hand their lines back: a pickled result is copied five
    times on its way (pickled, into the pipe, out of it, gathered, unpickled) — ~1 CPU second per
    million examples. A worker instead writes a stripe's JSONL and sources into a slot the service lent
    it with the task, and the writer reads them there. A slot is lent again only once the service is
    done with it and its task has finished; a stripe that does not fit, or finds no slot free (another
    export running), comes back pickled as before. Without shared memory (no /dev/shm) nothing changes
    but the speed."""

    SLOT_BYTES = 8 << 20  # a 5,000-row stripe of the benchmark's examples takes ~3.3 MB

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
                shaped = await asyncio.wrap_future(task)
                pending.popleft()
                done += 1
                if slot is not None:
                    shaped.take(slot.buf)
                try:
                    yield shaped
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


# ---------------------------------------------------------------------------------------------
# The files


@dataclass
class SplitOutput:
    """One split's file, opened lazily: a split with no rows gets no file."""

    key: str
    writer: HashingWriter | None = None
    rows: int = 0
    parquet: Any = None

    def sha256(self) -> str:
        return self.writer.sha256.hexdigest() if self.writer else ""


def parquet_schema():
    import pyarrow as pa  # only parquet exports need it; worker processes never import it

    return pa.schema([
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("id", pa.string()),
        ("preference_strength", pa.float64()),
        ("source_feedback_ids", pa.list_(pa.string())),
        ("strategy", pa.string()),
    ])


class ExportWriter:
    """Takes shaped examples in export order, numbers the placeholders of the rows holding PII (one
    Masker: consistent, ordered placeholders whatever process shaped them), counts, hashes and
    writes. With no store it is a dry run (validation): it only counts.

    An export needs no line check: the builders give every line the provider's structure, and the
    empty-field rule, which blocks the export, covers what a line check would find in the content.
    Synchronous: every method runs in a worker thread (asyncio.to_thread)."""

    def __init__(self, store, shaping: Shaping, prefix: str, masker: Masker):
        self.store = store
        self.shaping = shaping
        self.masker = masker
        self.tally = Tally(shaping.max_bytes)
        self.line_failures: list[dict] = []
        self.line_failure_count = 0
        self.rows = {"train": 0, "validation": 0}
        ext = "parquet" if shaping.fmt == "parquet" else "jsonl"
        self.splits = {
            "train": SplitOutput(f"{prefix}/train.{ext}"),
            "validation": SplitOutput(f"{prefix}/validation.{ext}"),
        }
        self.sources_key = f"{prefix}/sources.jsonl"
        self._stack = ExitStack()
        self._sources: HashingWriter | None = None
        self._line = line_writer(shaping)  # built once per export

    def _open(self, key: str) -> HashingWriter:
        return HashingWriter(self._stack.enter_context(self.store.writer(key)))

    def _masked_line(self, record: tuple) -> Any:
        return self._line(masked(formats.record(record), formats.EXPORTED_FIELDS[self.shaping.fmt], self.masker))

    def _numbered(self, line: Any, found: list[tuple[str, str]]) -> Any:
        """The line with each reference replaced by its value's placeholder, numbered here, in export order."""
        def placeholder(reference: str | bytes) -> str:
            return self.masker.placeholder(*found[int(reference.translate(_DIGITS[type(reference)]))])

        if isinstance(line, bytes):
            return _JSON_REFERENCE.sub(lambda m: placeholder(m[1]).encode(), line)
        return {k: _TEXT_REFERENCE.sub(lambda m: placeholder(m[1]), v) if isinstance(v, str) else v  # parquet
                for k, v in line.items()}

    def add(self, shaped: Shaped) -> None:
        self.tally.add(shaped.tally)
        self.line_failure_count += shaped.line_failure_count
        self.line_failures = (self.line_failures + shaped.line_failures)[:3]
        # placeholders are numbered in export order, across both splits
        changed: dict[str, list] = {"train": [], "validation": []}
        for split, where, found in shaped.flagged:
            if isinstance(found, tuple):  # a whole record
                changed[split].append((where, self._masked_line(found)))
            else:
                lines = shaped.lines[split]
                old = bytes(lines[where[0]:where[1]]) if isinstance(where, tuple) else lines[where]
                changed[split].append((where, self._numbered(old, found)))
        for split, out in self.splits.items():
            if not shaped.rows[split]:
                continue
            self.rows[split] += shaped.rows[split]
            if self.store is None:
                continue
            if out.writer is None:
                out.writer = self._open(out.key)
            out.rows += shaped.rows[split]
            if self.shaping.fmt == "parquet":
                rows = shaped.lines[split]
                for index, line in changed[split]:
                    rows[index] = line
                self._write_row_group(out, rows)
                continue
            blob, done, pieces = memoryview(shaped.lines[split]), 0, []
            for (start, end), line in changed[split]:
                pieces += (blob[done:start], line)
                done = end
            pieces.append(blob[done:])
            out.writer.write(b"".join(pieces) if len(pieces) > 1 else blob)  # one write: fewer, larger calls
        if shaped.sources and self.store is not None:
            if self._sources is None:
                self._sources = self._open(self.sources_key)
            self._sources.write(shaped.sources)

    def _write_row_group(self, out: SplitOutput, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = parquet_schema()
        if out.parquet is None:
            out.parquet = pq.ParquetWriter(out.writer, schema, compression="zstd")
        out.parquet.write_table(pa.Table.from_pylist(rows, schema=schema))

    def finish(self) -> dict[str, Any]:
        """Closes every file (each appears whole, at once) and says what was written."""
        if self._sources is None:
            self._sources = self._open(self.sources_key)
        for out in self.splits.values():
            if out.parquet is not None:
                out.parquet.close()
        sources_sha = self._sources.sha256.hexdigest()
        self._stack.close()
        result: dict[str, Any] = {"sources": {"key": self.sources_key, "sha256": sources_sha}}
        for split, out in self.splits.items():
            if out.writer is not None:
                result[split] = {"key": out.key, "sha256": out.sha256(), "rows": out.rows, "bytes": out.writer.size}
        return result

    def abort(self, exc: BaseException) -> None:
        """Every temporary file is removed; nothing reaches its final name."""
        self._stack.__exit__(type(exc), exc, exc.__traceback__)


def write_manifest(store, key: str, manifest: dict) -> str:
    with store.writer(key) as out:
        out.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return store.url(key)


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

