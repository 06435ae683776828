"""Writing an export: examples streamed from a server-side cursor, masked, shaped per format,
checked against the provider's rules line by line, and written atomically to the object store.

Memory stays flat whatever the dataset's size: rows arrive in chunks, each chunk is formatted and
written (in a worker thread: file and S3 I/O block) while the next one is fetched. Every file is
written through the store's atomic writer (temporary file, then rename / one upload), so an
interrupted export leaves no partial file; the version only becomes visible when the service
commits it, after every file is in place.
"""

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from services.curation import formats
from services.curation.pii import Masker

CHUNK_ROWS = 5000
PARQUET_SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("id", pa.string()),
        ("preference_strength", pa.float64()),
        ("source_feedback_ids", pa.list_(pa.string())),
        ("strategy", pa.string()),
    ]
)


class LineRejected(Exception):
    """A formatted line breaks the provider's rules: the export stops, nothing is published."""

    def __init__(self, example_id: str, problems: list[str]):
        super().__init__(f"example {example_id}: {'; '.join(problems)}")
        self.example_id = example_id
        self.problems = problems


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


def to_record(row: Any, masker: Masker) -> formats.Record:
    """A database row as a masked Record. Rows without PII (most) skip the per-field masking."""
    prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    context, annotator, notes = row["context"], row["annotator"], row["notes"]
    joined = "\x00".join(t for t in (prompt, chosen, rejected, context, annotator, notes) if t)
    if masker.contains_pii(joined):
        prompt, chosen = masker.mask(prompt), masker.mask(chosen)
        rejected = masker.mask(rejected) if rejected is not None else None
        annotator = masker.mask(annotator) if annotator else annotator
        notes = masker.mask(notes) if notes else notes
        context_value = masker.mask_json(orjson.loads(context))
    else:
        context_value = orjson.loads(context) if context != "[]" else []
    return formats.Record(
        id=row["id"], prompt=prompt, chosen=chosen, rejected=rejected, strength=row["strength"],
        context_documents=context_value, annotator=annotator, notes=notes,
        feedback_ids=list(row["feedback_ids"] or ()), strategy=row["strategy"],
    )


@dataclass
class SplitOutput:
    """One split's file, opened lazily: a split with no rows gets no file."""

    key: str
    writer: HashingWriter | None = None
    rows: int = 0
    parquet: pq.ParquetWriter | None = None
    buffer: list[dict] = field(default_factory=list)

    def sha256(self) -> str:
        return self.writer.sha256.hexdigest() if self.writer else ""


class ExportWriter:
    """Synchronous: every method runs in a worker thread (asyncio.to_thread)."""

    def __init__(self, store, fmt: str, prefix: str, system_prompt: str | None, masker: Masker):
        self.store = store
        self.fmt = fmt
        self.system_prompt = system_prompt
        self.masker = masker
        self.build = formats.BUILDERS[fmt]
        ext = "parquet" if fmt == "parquet" else "jsonl"
        self.splits = {
            "train": SplitOutput(f"{prefix}/train.{ext}"),
            "validation": SplitOutput(f"{prefix}/validation.{ext}"),
        }
        self.sources_key = f"{prefix}/sources.jsonl"
        self._stack = ExitStack()
        self._sources: HashingWriter | None = None

    def _open(self, key: str) -> HashingWriter:
        return HashingWriter(self._stack.enter_context(self.store.writer(key)))

    def write_chunk(self, rows: list[Any]) -> None:
        if self._sources is None:
            self._sources = self._open(self.sources_key)
        lines: dict[str, list[bytes]] = {"train": [], "validation": []}
        sources: list[bytes] = []
        for row in rows:
            record = to_record(row, self.masker)
            line = self.build(record, self.system_prompt)
            problems = formats.line_problems(self.fmt, line)
            if problems:
                raise LineRejected(record.id, problems)
            split = "validation" if row["in_validation"] else "train"
            out = self.splits[split]
            out.rows += 1
            if self.fmt == "parquet":
                out.buffer.append(line)
            else:
                lines[split].append(orjson.dumps(line) + b"\n")
            sources.append(
                orjson.dumps({"split": split, "line": out.rows, "id": record.id, "feedback_ids": record.feedback_ids})
                + b"\n"
            )
        for split, out in self.splits.items():
            if lines[split] or out.buffer:
                if out.writer is None:
                    out.writer = self._open(out.key)
                if self.fmt == "parquet":
                    self._write_row_group(out)
                else:
                    out.writer.write(b"".join(lines[split]))
        self._sources.write(b"".join(sources))

    def _write_row_group(self, out: SplitOutput) -> None:
        if out.parquet is None:
            out.parquet = pq.ParquetWriter(out.writer, PARQUET_SCHEMA, compression="zstd")
        out.parquet.write_table(pa.Table.from_pylist(out.buffer, schema=PARQUET_SCHEMA))
        out.buffer = []

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
