"""The local object store: atomic writes, no escaping its root."""

import pytest

from shared.objectstore import LocalObjectStore, ObjectNotFound, object_store_from_url


def test_write_is_atomic_and_readable_by_url(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    with store.writer("datasets/acme/1/train.jsonl") as out:
        out.write(b'{"a": 1}\n')
        assert not store.exists("datasets/acme/1/train.jsonl")  # invisible until complete
    url = store.url("datasets/acme/1/train.jsonl")
    with store.open(url) as f:
        assert f.read() == b'{"a": 1}\n'


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    with pytest.raises(RuntimeError):
        with store.writer("x/y.jsonl") as out:
            out.write(b"partial")
            raise RuntimeError("interrupted")
    assert not store.exists("x/y.jsonl")
    assert list((tmp_path / "objects" / "x").iterdir()) == []


def test_keys_and_urls_cannot_escape_the_root(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    with pytest.raises(ValueError):
        store.path("../etc/passwd")
    with pytest.raises(ValueError):
        store.open((tmp_path / "elsewhere.txt").as_uri())
    with pytest.raises(ObjectNotFound):
        store.open(store.url("missing"))


def test_store_from_url(tmp_path):
    assert isinstance(object_store_from_url(str(tmp_path)), LocalObjectStore)
    assert isinstance(object_store_from_url((tmp_path / "o").as_uri()), LocalObjectStore)
    with pytest.raises(ValueError):
        object_store_from_url("gs://bucket")
