"""What an export writes: each example shaped into its format's line, then the files written whole
to the object store.

  * `shape` turns rows of the export query into lines: exact duplicates dropped, the row rules
    tallied, the PII screen and masking, the line and its source entry. It is pure, so it runs in
    any process (export_engine.py decides which). A value found to be PII is replaced by a
    reference to it (References), not by a numbered placeholder: numbering needs the whole
    export's order.
  * `ExportWriter` takes the shaped chunks back in export order and does what needs one place: it
    numbers the placeholders (first appearance in export order gets 1: the files are the same
    whatever process shaped them), counts, hashes and writes.

Every file is written through the store's atomic writer (temporary file, then rename / one upload),
so an interrupted export leaves no partial file; the version only becomes visible when the service
commits it, after every file is in place.
"""

import hashlib
import itertools
import operator
import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, NamedTuple

import orjson

from services.curation import formats
from services.curation.domain import ExportPlan
from shared.pii import Masker, screen_groups


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


class Flagged(NamedTuple):
    """A line holding PII, which the writer finishes in export order."""

    split: str
    index: int  # its place among its split's lines (for parquet, its row)
    references: list[tuple[str, str]] | None  # the (kind, value) its references stand for, in order
    row: tuple | None  # instead: the row itself, whose own text holds \x01 or \x02; the writer masks it whole
    span: tuple[int, int] | None = None  # JSONL: its bytes in the split's lines joined (set once they are)


@dataclass
class Shaped:
    """One chunk's examples, shaped, per split, in export order."""

    # per split: the JSONL lines joined into one bytes object (cheap to pass between processes and
    # to write), or for parquet the rows as dicts
    lines: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=lambda: {"train": 0, "validation": 0})
    # the lines holding PII, in export order: they have references where the placeholders go
    # (References), which the writer numbers
    flagged: list[Flagged] = field(default_factory=list)
    sources: bytes = b""  # one entry per example, in export order whatever the split
    tally: Tally | None = None
    line_failures: list[dict] = field(default_factory=list)
    line_failure_count: int = 0


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


def line_writer(plan: ExportPlan) -> Callable[[formats.Record | tuple], Any]:
    """A row's line in the export's files: a JSONL line, or for parquet the row as a dict."""
    fmt, system = plan.fmt, plan.system_prompt
    if fmt == "parquet":
        return lambda r: formats.BUILDERS[fmt](formats.record(r), system)
    return formats.json_line_writer(fmt, system)


def shape(rows: list, plan: ExportPlan, skip: set[str] | frozenset[str]) -> Shaped:
    """Rows of the export query as lines: pure, so it runs in any process. Exact duplicates in `skip`
    are dropped. A row whose exported fields hold PII is masked with references (References), which
    the writer numbers. Validation keeps no lines: it checks each against the provider's
    rules (masking changes no line's structure or emptiness, so it is not done)."""
    out = Shaped(tally=Tally(plan.max_bytes))
    see = out.tally.see
    build, system, fmt, validating = formats.BUILDERS[plan.fmt], plan.system_prompt, plan.fmt, plan.validation_only
    fields = formats.EXPORTED_FIELDS[fmt]
    exported = operator.itemgetter(*fields)  # (every format exports at least two fields)
    references = References()  # one for the rows: each row's references start again from 0
    parquet = fmt == "parquet"
    line = line_writer(plan)
    lines: dict[str, list] = {"train": [], "validation": []}
    sources: list[str] = []
    flagged: set[int] = set()  # the rows in which the PII screen finds candidates
    if not validating:
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
        if validating:
            out.rows[split] += 1
            problems = formats.line_problems(fmt, build(formats.record(row), system))
            if problems:
                out.line_failure_count += 1
                if len(out.line_failures) < 3:
                    out.line_failures.append({"id": example_id, "problems": problems})
            continue
        r = row  # the builders and line writers read fields by position: a Record only where built anew
        split_lines = lines[split]
        if n in flagged:
            if any("\x01" in t or "\x02" in t for t in exported(row) if t):
                out.flagged.append(Flagged(split, len(split_lines), None, tuple(row)))
            else:
                references.found = []
                r = masked(formats.record(row), fields, references)
                if references.found:
                    out.flagged.append(Flagged(split, len(split_lines), references.found, None))
        split_lines.append(line(r))
    if not validating:
        out.rows = {split: len(split_lines) for split, split_lines in lines.items()}
        out.lines = lines
        if not parquet:  # the flagged lines' places as byte ranges of their split's JSONL, each split one blob
            starts = {split: list(itertools.accumulate(map(len, lines[split]), initial=0))
                      for split in {f.split for f in out.flagged}}
            out.flagged = [f._replace(span=(starts[f.split][f.index], starts[f.split][f.index + 1]))
                           for f in out.flagged]
            out.lines = {split: b"".join(split_lines) for split, split_lines in lines.items()}
    out.sources = "".join(sources).encode()
    return out


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
    writes. For a validation it only counts: nothing is written.

    An export needs no line check: the builders give every line the provider's structure, and the
    empty-field rule, which blocks the export, covers what a line check would find in the content.
    Synchronous: every method runs in a worker thread (asyncio.to_thread)."""

    def __init__(self, plan: ExportPlan, masker: Masker, store=None):
        self.plan = plan
        self.store = store
        self.writes = not plan.validation_only
        self.masker = masker
        self.tally = Tally(plan.max_bytes)
        self.line_failures: list[dict] = []
        self.line_failure_count = 0
        self.rows = {"train": 0, "validation": 0}
        ext = "parquet" if plan.fmt == "parquet" else "jsonl"
        self.splits = {
            "train": SplitOutput(f"{plan.prefix}/train.{ext}"),
            "validation": SplitOutput(f"{plan.prefix}/validation.{ext}"),
        }
        self.sources_key = f"{plan.prefix}/sources.jsonl"
        self._stack = ExitStack()
        self._sources: HashingWriter | None = None
        self._line = line_writer(plan)  # built once per export

    def _open(self, key: str) -> HashingWriter:
        return HashingWriter(self._stack.enter_context(self.store.writer(key)))

    def _masked_line(self, record: tuple) -> Any:
        return self._line(masked(formats.record(record), formats.EXPORTED_FIELDS[self.plan.fmt], self.masker))

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
        changed: dict[str, list[tuple[Flagged, Any]]] = {"train": [], "validation": []}
        for f in shaped.flagged:
            if f.row is not None:
                line = self._masked_line(f.row)
            else:
                lines = shaped.lines[f.split]
                line = self._numbered(bytes(lines[f.span[0]:f.span[1]]) if f.span else lines[f.index], f.references)
            changed[f.split].append((f, line))
        for split, out in self.splits.items():
            if not shaped.rows[split]:
                continue
            self.rows[split] += shaped.rows[split]
            if not self.writes:
                continue
            if out.writer is None:
                out.writer = self._open(out.key)
            out.rows += shaped.rows[split]
            if self.plan.fmt == "parquet":
                rows = shaped.lines[split]
                for f, line in changed[split]:
                    rows[f.index] = line
                self._write_row_group(out, rows)
                continue
            blob, done, pieces = memoryview(shaped.lines[split]), 0, []
            for f, line in changed[split]:
                pieces += (blob[done:f.span[0]], line)
                done = f.span[1]
            pieces.append(blob[done:])
            out.writer.write(b"".join(pieces) if len(pieces) > 1 else blob)  # one write: fewer, larger calls
        if shaped.sources and self.writes:
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

    def publish(self, report: dict, *, duplicates_dropped: int, created_at: datetime) -> "Published":
        """Closes every file (each appears whole, at once), then writes the manifest beside them."""
        try:
            files = self._finish()
        except BaseException as exc:
            self.abort(exc)
            raise
        content = manifest(self.plan, files, report, self.masker, duplicates_dropped=duplicates_dropped,
                           created_at=created_at.isoformat())
        manifest_url = write_manifest(self.store, f"{self.plan.prefix}/manifest.json", content)
        return Published(files, manifest_url, dict(sorted(self.masker.counts.items())))

    def _finish(self) -> dict[str, Any]:
        """Closes every file and says what was written where."""
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
        for written in result.values():
            written["url"] = self.store.url(written["key"])
        return result

    def abort(self, exc: BaseException) -> None:
        """Every temporary file is removed; nothing reaches its final name."""
        self._stack.__exit__(type(exc), exc, exc.__traceback__)


@dataclass(frozen=True)
class Published:
    """An export version's files, in place."""

    files: dict[str, dict[str, Any]]  # train, validation (if it has rows), sources: key, url, sha256 (rows, bytes)
    manifest_url: str
    masked: dict[str, int]  # values masked, per kind

    def url(self, split: str) -> str | None:
        return self.files[split]["url"] if split in self.files else None

    def sha256(self, split: str) -> str | None:
        return self.files[split]["sha256"] if split in self.files else None

    def rows(self, split: str) -> int:
        return self.files[split]["rows"] if split in self.files else 0


def manifest(plan: ExportPlan, written: dict[str, Any], report: dict, masker: Masker, *, duplicates_dropped: int,
             created_at: str) -> dict[str, Any]:
    """What an export version holds, written beside its files."""
    # Keys relative to the store, not its URLs: the manifest is downloaded by clients, and a file:// URL
    # would tell them where the store lies on the server.
    written = {name: {k: v for k, v in entry.items() if k != "url"} for name, entry in written.items()}
    train_rows = written.get("train", {}).get("rows", 0)
    validation_rows = written.get("validation", {}).get("rows", 0)
    return {
        "dataset_id": str(plan.dataset_id),
        "name": plan.name,
        "dataset_type": plan.dataset_type,
        "organization": plan.organization,
        "export_version": plan.version,
        "dataset_version": plan.content_version,
        "format": plan.fmt,
        "created_at": created_at,
        "counts": {"train": train_rows, "validation": validation_rows, "total": train_rows + validation_rows,
                   "duplicates_dropped": duplicates_dropped},
        "split": {"validation_ratio": plan.validation_ratio, "seed": plan.split_seed,
                  "method": "hash of the prompt's lower-cased letters and digits, so a prompt stays on one side"},
        "files": written,
        "masking": masker.summary(),
        "masked": dict(sorted(masker.counts.items())),
        "system_prompt": bool(plan.system_prompt),
        "source_ids": dict(written["sources"], entries=(
            "one per exported example, in export order: its split, id and feedback ids; the n-th entry of a "
            "split describes line n of that split's file")),
        "token_estimate": formats.TOKEN_ESTIMATE,
        "validation": report,
    }


def write_manifest(store, key: str, manifest: dict) -> str:
    with store.writer(key) as out:
        out.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return store.url(key)
