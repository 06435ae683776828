"""What HTTP answers say about stored files: API download URLs and `store:<key>` names, never server paths."""

import pytest

from shared.downloads import export_links, in_store, public_ref, public_refs, stored_url
from shared.objectstore import LocalObjectStore, S3ObjectStore


def test_export_links_are_api_paths():
    links = export_links("d1", 3, validation=False)
    assert links == {"url": "/api/training-datasets/d1/exports/3/files/train", "validation_url": None,
                     "manifest_url": "/api/training-datasets/d1/exports/3/files/manifest",
                     "sources_url": "/api/training-datasets/d1/exports/3/files/sources"}


def test_objects_of_a_local_store_are_named_by_key_and_back(tmp_path):
    store = LocalObjectStore(tmp_path / "objects store")  # a space: file URLs percent-encode it
    url = store.url("adapters/acme/job-1") + "/"
    assert url.startswith("file://") and public_ref(url, store) == "store:adapters/acme/job-1/"
    assert stored_url("store:adapters/acme/job-1/", store) == url and in_store(url, store)
    assert public_ref("file:///etc/secrets/adapter/", store) == "file:///…/adapter/"
    assert not in_store("file:///etc/passwd", store)
    assert public_ref("ft:gpt-4o-mini:acme::x", store) == "ft:gpt-4o-mini:acme::x"
    nested = {"a": [url, 1, None], "b": {"c": store.url("x.json")}}
    assert public_refs(nested, store) == {"a": ["store:adapters/acme/job-1/", 1, None], "b": {"c": "store:x.json"}}
    with pytest.raises(ValueError):
        stored_url("store:../outside", store)


def test_objects_of_an_s3_store_are_named_by_key_too():
    store = S3ObjectStore("bucket", "tenant-a", client=object())
    assert public_ref("s3://bucket/tenant-a/adapters/x/", store) == "store:adapters/x/"
    assert stored_url("store:adapters/x/", store) == "s3://bucket/tenant-a/adapters/x/"
    assert public_ref("s3://other/adapters/x/", store) == "s3://other/adapters/x/"  # not ours: not a server path
