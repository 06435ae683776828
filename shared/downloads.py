"""What HTTP answers say about files in the object store: never where they lie on the server.

Events between services carry storage URLs (`file:///srv/rlhf/objects/...`, `s3://bucket/...`): the
services read those files. An HTTP answer gives a client what it can use instead:

- an export's files: their download URLs through the API (`export_links`), which stream them from
  the store whatever it is (`GET /api/training-datasets/{id}/exports/{version}/files/{name}`);
- any other object of the store (a trained adapter): a reference relative to the store,
  `store:<key>` (`public_ref`), which the registry also takes back as input (`stored_url`).

A `file://` URL outside the configured store is shown as `file:///…/<its last part>`.
"""

import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.objectstore import LocalObjectStore, S3ObjectStore, default_store

EXPORT_FILES = ("train", "validation", "manifest", "sources")
STORE_SCHEME = "store:"


def export_file_url(dataset_id: uuid.UUID | str, version: int, name: str) -> str:
    """Where a client downloads one file of an export version (through the gateway)."""
    return f"/api/training-datasets/{dataset_id}/exports/{version}/files/{name}"


def export_links(dataset_id: uuid.UUID | str, version: int, *, validation: bool) -> dict[str, str | None]:
    """An export version's files as an HTTP answer names them: `url` (train), `validation_url` (None when
    the export has no validation split), `manifest_url`, `sources_url`."""
    return {"url": export_file_url(dataset_id, version, "train"),
            "validation_url": export_file_url(dataset_id, version, "validation") if validation else None,
            "manifest_url": export_file_url(dataset_id, version, "manifest"),
            "sources_url": export_file_url(dataset_id, version, "sources")}


def public_export_ref(ref: dict[str, Any] | None) -> dict[str, Any] | None:
    """An export as DatasetExported described it (storage URLs), with API download URLs instead."""
    if not ref or ref.get("dataset_id") is None or ref.get("export_version") is None:
        return public_refs(ref)
    links = export_links(ref["dataset_id"], ref["export_version"], validation=bool(ref.get("validation_url")))
    return {**public_refs(ref), **links}


def _key_in(store, url: str) -> str | None:
    parts = urlsplit(url)
    if isinstance(store, LocalObjectStore) and parts.scheme == "file":
        path = unquote(parts.path)
        root = str(store.root)
        if path.startswith(root.rstrip("/") + "/"):
            return path[len(root.rstrip("/")) + 1:]
        return None
    if isinstance(store, S3ObjectStore) and parts.scheme == "s3" and parts.netloc == store.bucket:
        key = parts.path.lstrip("/")
        if not store.prefix:
            return key
        return key[len(store.prefix) + 1:] if key.startswith(store.prefix + "/") else None
    return None


def public_ref(url: str | None, store=None) -> str | None:
    """A storage URL as an HTTP answer may show it: `store:<key>` for an object of the configured store,
    a `file://` URL elsewhere reduced to its last part; anything else (a provider's model id, an s3 URL of
    another bucket) unchanged."""
    if not isinstance(url, str) or not url.startswith(("file:", "s3://")):
        return url
    key = _key_in(store or default_store(), url)
    if key is not None:
        return STORE_SCHEME + key
    if url.startswith("file:"):
        tail = [p for p in unquote(urlsplit(url).path).split("/") if p]
        return "file:///…/" + (tail[-1] if tail else "") + ("/" if url.endswith("/") and tail else "")
    return url


def public_refs(value: Any, store=None) -> Any:
    """`public_ref` applied to every string inside a JSON value."""
    if isinstance(value, str):
        return public_ref(value, store)
    if isinstance(value, list):
        return [public_refs(v, store) for v in value]
    if isinstance(value, dict):
        return {k: public_refs(v, store) for k, v in value.items()}
    return value


def stored_url(ref: str, store=None) -> str:
    """The storage URL a `store:<key>` reference names (what services and events use); other values as given."""
    if not ref.startswith(STORE_SCHEME):
        return ref
    store = store or default_store()
    key = ref[len(STORE_SCHEME):]
    return store.url(key).rstrip("/") + ("/" if key.endswith("/") else "")


def in_store(url: str, store=None) -> bool:
    """Whether a storage URL names an object of the configured store."""
    return _key_in(store or default_store(), url) is not None
