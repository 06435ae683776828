"""Where exported datasets and trained adapters live: a local directory by default, S3 through
boto3 when RLHF_OBJECT_STORE_URL is `s3://bucket/prefix` (AWS_ENDPOINT_URL points boto3 at a
compatible server). Writes are atomic: a reader sees the whole object or none of it.

The API is synchronous (boto3 is); async callers run it with asyncio.to_thread.
"""

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from shared.settings import get_settings


class ObjectNotFound(FileNotFoundError):
    pass


def _clean_key(key: str) -> str:
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"object key may not climb out of the store: {key!r}")
    return "/".join(parts)


class _WriteBehindFile(io.BufferedWriter):
    """A file being written that hands its data to the disk as it goes: every WRITE_BEHIND bytes the
    kernel is asked to start writing the range out (posix_fadvise DONTNEED, which starts writeback of
    dirty pages and then drops them — what PostgreSQL's *_flush_after settings do where there is no
    sync_file_range). The fsync that publishes the file then has little left to wait for, and a large
    export neither piles up dirty pages nor fills the page cache with data nobody reads back."""

    WRITE_BEHIND = 16 << 20

    def __init__(self, fd: int):
        super().__init__(io.FileIO(fd, "wb"), buffer_size=1 << 20)
        self._written = self._handed = 0

    def write(self, data) -> int:
        n = super().write(data)
        self._written += n
        if self._written - self._handed >= self.WRITE_BEHIND and hasattr(os, "posix_fadvise"):
            self.flush()
            os.posix_fadvise(self.fileno(), self._handed, self._written - self._handed, os.POSIX_FADV_DONTNEED)
            self._handed = self._written
        return n


class LocalObjectStore:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def url(self, key: str) -> str:
        return self.path(key).as_uri()

    def _local(self, url: str) -> Path:
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise ValueError(f"not a file URL: {url}")
        path = Path(parts.path).resolve()
        if self.root not in path.parents:
            raise ValueError(f"{url} is outside the object store")
        return path

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
        try:
            with _WriteBehindFile(fd) as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def open(self, url: str) -> BinaryIO:
        path = self._local(url)
        if not path.exists():
            raise ObjectNotFound(url)
        return path.open("rb")

    def download(self, url: str, dest: Path) -> Path:
        with self.open(url) as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        return dest

    def exists(self, key: str) -> bool:
        return self.path(key).exists()


class S3ObjectStore:
    def __init__(self, bucket: str, prefix: str = "", client=None):
        import boto3

        self.bucket = bucket
        self.prefix = _clean_key(prefix)
        self.client = client or boto3.client("s3")

    def key(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.key(key)}"

    @staticmethod
    def split(url: str) -> tuple[str, str]:
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ValueError(f"not an s3 URL: {url}")
        return parts.netloc, parts.path.lstrip("/")

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        # Spool to a local file, upload once complete: S3 objects appear whole or not at all.
        with tempfile.NamedTemporaryFile(prefix="rlhf-upload-") as tmp:
            yield tmp
            tmp.flush()
            tmp.seek(0)
            self.client.upload_fileobj(tmp, self.bucket, self.key(key))

    def open(self, url: str) -> BinaryIO:
        bucket, key = self.split(url)
        try:
            return self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except self.client.exceptions.NoSuchKey as exc:
            raise ObjectNotFound(url) from exc

    def download(self, url: str, dest: Path) -> Path:
        bucket, key = self.split(url)
        self.client.download_file(bucket, key, str(dest))
        return dest

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(key))
            return True
        except self.client.exceptions.ClientError:
            return False


def object_store_from_url(url: str, *, s3_client=None) -> LocalObjectStore | S3ObjectStore:
    parts = urlsplit(url)
    if parts.scheme == "s3":
        return S3ObjectStore(parts.netloc, parts.path, client=s3_client)
    if parts.scheme in ("", "file"):
        return LocalObjectStore(Path(parts.path if parts.scheme else url))
    raise ValueError(f"unsupported object store URL: {url} (use a directory, file:// or s3://)")


@lru_cache
def default_store() -> LocalObjectStore | S3ObjectStore:
    """The store this process was configured with (RLHF_OBJECT_STORE_URL): the one place it is built."""
    return object_store_from_url(get_settings().object_store_url())
