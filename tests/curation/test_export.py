"""Exports on the real PostgreSQL: every format checked line by line against its provider's rules,
PII planted in feedback never leaves, re-exports are byte-identical, S3 through moto's server, and
an interrupted export leaves nothing behind."""

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import httpx
import pyarrow.parquet as pq
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from shared.infra import free_port
from shared.objectstore import S3ObjectStore
from tests.support import eventually

pytestmark = pytest.mark.asyncio

DEFAULT_CONTRACT = Path(__file__).parents[3] / "shared/contracts/openai-openapi.yaml"
CONTRACT = Path(os.environ.get("RLHF_OPENAI_OPENAPI", DEFAULT_CONTRACT))
PII = {
    "email": "jane.roe@example.com",
    "phone": "+1 415-555-0132",
    "card": "4111 1111 1111 1111",
    "ip": "10.20.30.40",
    "openai key": "sk-proj-9fQe2Lk7Xb3Vn8Wm1Zt4Rs6Yp0Ua5Cd",
    "aws key": "AKIAIOSFODNN7EXAMPLE",
    "name": "Dr. Margaret Hamilton",
}
PLANTED = [*PII.values(), "jane.roe", "Margaret Hamilton", "4111111111111111", "415-555-0132"]


async def exportable(api, h, feed, org, *, n=40, dataset_type="dpo"):
    """A ready dataset of n clean pairs plus pairs from feedback that carries every kind of PII."""
    received, _ = feed
    ds = (await api.post("/api/training-datasets", json={"name": "Ops", "dataset_type": dataset_type,
                                                         "system_prompt": "You are an ops assistant."},
                         headers=h)).json()
    for i in range(n):
        r = await api.post("/api/preference-pairs", json={
            "dataset_id": ds["id"], "query": f"How do I restart worker {i}?",
            "chosen_response": f"Run `systemctl restart worker@{i}` on the host.",
            "rejected_response": "Turn it off and on.", "preference_strength": 0.7}, headers=h)
        assert r.status_code == 201
    await received(org, f"My email is {PII['email']} and my card {PII['card']}, why was I billed?",
                   "I cannot help.", "correction",
                   {"correction": f"We refunded the charge; call {PII['phone']} from {PII['ip']}. "
                                  f"{PII['name']} approved it."})
    await received(org, f"Our key {PII['openai key']} and {PII['aws key']} leak?", "No.", "correction",
                   {"correction": f"Yes: rotate {PII['openai key']} now and email {PII['email']}."})
    r = await api.post("/api/preference-pairs/bulk", json={"dataset_id": ds["id"], "strategies": ["correction"]},
                       headers=h)
    assert r.json()["created"]["correction"] >= 2
    await api.patch(f"/api/training-datasets/{ds['id']}", json={"status": "ready"}, headers=h)
    return ds


async def export(api, h, ds, fmt, **extra):
    r = await api.post(f"/api/training-datasets/{ds['id']}/export", json={"format": fmt, **extra}, headers=h)
    assert r.status_code == 201, r.text
    return r.json()


async def fetched(api, h, url) -> bytes:
    """A file of an export, downloaded as a client does: through the API URL the answer gave."""
    assert url.startswith("/api/training-datasets/"), url  # never where the store keeps it (file://, s3://)
    r = await api.get(url, headers=h)
    assert r.status_code == 200, r.text
    return r.content


def stored_bytes(store, key) -> bytes:
    with store.path(key).open("rb") as f:
        return f.read()


def jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.fixture(scope="session")
def openai_validators():
    """OpenAI's fine-tuning line shapes, built from the message schemas in OpenAI's own OpenAPI file."""
    if not CONTRACT.exists():
        pytest.skip(f"OpenAI's OpenAPI description is not at {CONTRACT} (set RLHF_OPENAI_OPENAPI)")
    doc = yaml.load(CONTRACT.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schemas = doc["components"]["schemas"]
    names = ["ChatCompletionRequestSystemMessage", "ChatCompletionRequestUserMessage",
             "FineTuneChatCompletionRequestAssistantMessage"]
    assert all(n in schemas for n in names), "the contract no longer defines the fine-tuning message schemas"
    registry = Registry().with_resource("urn:openai", Resource.opaque(doc))
    ref = {n: {"$ref": f"urn:openai#/components/schemas/{n}"} for n in names}
    message = {"anyOf": list(ref.values())}
    assistant = ref["FineTuneChatCompletionRequestAssistantMessage"]
    chat = {"type": "object", "required": ["messages"],
            "properties": {"messages": {"type": "array", "minItems": 2, "items": message}}}
    preference = {
        "type": "object", "required": ["input", "preferred_output", "non_preferred_output"],
        "properties": {
            "input": {"type": "object", "required": ["messages"],
                      "properties": {"messages": {"type": "array", "minItems": 1, "items": message}}},
            "preferred_output": {"type": "array", "minItems": 1, "maxItems": 1, "items": assistant},
            "non_preferred_output": {"type": "array", "minItems": 1, "maxItems": 1, "items": assistant},
        },
    }
    return {fmt: Draft202012Validator(s, registry=registry) for fmt, s in
            (("openai_sft", chat), ("openai_dpo", preference))}


async def test_openai_files_match_openais_schemas(api, make_key, org, feed, store, openai_validators):
    h = await make_key(org)
    ds = await exportable(api, h, feed, org)
    for fmt in ("openai_sft", "openai_dpo"):
        out = await export(api, h, ds, fmt)
        lines = jsonl(await fetched(api, h, out["url"])) + jsonl(await fetched(api, h, out["validation_url"]))
        assert len(lines) == 42 == out["counts"]["total"]
        for line in lines:
            errors = [e.message for e in openai_validators[fmt].iter_errors(line)]
            assert not errors, (fmt, line, errors)
            messages = line["messages"] if fmt == "openai_sft" else [*line["input"]["messages"],
                                                                     *line["preferred_output"]]
            roles = [m["role"] for m in messages]
            assert roles[-1] == "assistant" and roles[-2] == "user"
        if fmt == "openai_sft":
            assert lines[0]["messages"][0] == {"role": "system", "content": "You are an ops assistant."}
        else:
            assert set(lines[0]) == {"input", "preferred_output", "non_preferred_output"}


async def test_sources_name_each_exported_example_and_its_feedback(api, make_key, org, feed, store):
    """sources.jsonl has one JSON entry per exported example: the n-th entry of a split is line n of
    that split's file, with the pair's id and the feedback the pair was made from."""
    h = await make_key(org)
    ds = await exportable(api, h, feed, org)
    pairs = (await api.get(f"/api/preference-pairs?dataset_id={ds['id']}&limit=100", headers=h)).json()["items"]
    provenance = {p["id"]: sorted(p["source_feedback_ids"]) for p in pairs}
    assert len(provenance) == 42 and sum(1 for ids in provenance.values() if ids) == 2
    for fmt in ("openai_dpo", "jsonl"):  # a format that exports only the texts, and one that exports every field
        out = await export(api, h, ds, fmt)
        entries = jsonl(await fetched(api, h, out["sources_url"]))
        assert sorted(e["id"] for e in entries) == sorted(provenance)
        for e in entries:
            assert sorted(e["feedback_ids"]) == provenance[e["id"]], (fmt, e)
        for split, url in (("train", out["url"]), ("validation", out["validation_url"])):
            lines = jsonl(await fetched(api, h, url))
            described = [e for e in entries if e["split"] == split]
            assert len(described) == len(lines) == out["counts"][split]
            prompts = [line["prompt"] if fmt == "jsonl" else line["input"]["messages"][-1]["content"]
                       for line in lines]
            query = {p["id"]: p["query"] for p in pairs}
            for entry, prompt in zip(described, prompts, strict=True):
                assert prompt == query[entry["id"]] or "_1>" in prompt  # (the two prompts with PII are masked)


async def test_trl_file_loads_with_datasets_for_dpo(api, make_key, org, feed, store, tmp_path):
    from datasets import load_dataset

    h = await make_key(org)
    ds = await exportable(api, h, feed, org)
    out = await export(api, h, ds, "trl_dpo")
    path = tmp_path / "train.jsonl"
    path.write_bytes(await fetched(api, h, out["url"]))
    loaded = load_dataset("json", data_files=str(path), split="train")
    assert loaded.column_names == ["prompt", "chosen", "rejected"]
    assert len(loaded) == out["counts"]["train"]
    assert all(row["prompt"] and row["chosen"] and row["rejected"] and row["chosen"] != row["rejected"]
               for row in loaded)


async def test_bedrock_file_follows_claude_rules(api, make_key, org, feed, store):
    h = await make_key(org)
    ds = await exportable(api, h, feed, org)
    out = await export(api, h, ds, "bedrock_claude")
    lines = jsonl(await fetched(api, h, out["url"]))
    assert 32 <= len(lines) <= 10_000
    for line in lines:
        assert set(line) <= {"system", "messages"} and isinstance(line["system"], str)
        roles = [m["role"] for m in line["messages"]]
        assert len(roles) >= 2 and roles[0] == "user" and roles[-1] == "assistant"
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False))
        assert all(set(m) == {"role", "content"} and m["content"].strip() for m in line["messages"])
    small = await exportable(api, h, feed, org, n=5)
    r = await api.post(f"/api/training-datasets/{small['id']}/export", json={"format": "bedrock_claude"}, headers=h)
    assert r.status_code == 422 and "rules.min_samples" in {e["field"] for e in r.json()["errors"]}


async def test_anthropic_jsonl_and_parquet_shapes(api, make_key, org, feed, store):
    h = await make_key(org)
    ds = await exportable(api, h, feed, org)
    anthropic = jsonl(await fetched(api, h, (await export(api, h, ds, "anthropic"))["url"]))
    for line in anthropic:
        assert set(line) == {"input", "output"}
        assert line["input"].startswith("Human: ") and line["input"].endswith("\n\nAssistant:")
        assert line["output"].startswith(" ") and line["output"].strip()
    generic = jsonl(await fetched(api, h, (await export(api, h, ds, "jsonl"))["url"]))
    from_feedback = [g for g in generic if g["strategy"] == "correction"]
    assert from_feedback and all(len(g["source_feedback_ids"]) == 1 for g in from_feedback)
    assert {"id", "prompt", "chosen", "rejected", "preference_strength", "context_documents"} <= set(generic[0])
    out = await export(api, h, ds, "parquet")
    download = await api.get(out["url"], headers=h)
    assert download.headers["content-disposition"] == 'attachment; filename="train.parquet"'
    table = pq.read_table(io.BytesIO(download.content))
    assert table.column_names[:3] == ["prompt", "chosen", "rejected"]
    assert table.num_rows == out["counts"]["train"]


async def test_pii_planted_in_feedback_never_leaves(api, make_key, org, feed, store):
    h = await make_key(org)
    ds = await exportable(api, h, feed, org)
    for fmt in ("openai_sft", "openai_dpo", "anthropic", "bedrock_claude", "trl_dpo", "jsonl", "parquet"):
        await export(api, h, ds, fmt)
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(files) >= 7 * 3
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".parquet":
            data = json.dumps(pq.read_table(path).to_pylist()).encode()
        for value in PLANTED:
            assert value.encode() not in data, (value, path.name)
    manifest = json.loads((store.root / f"datasets/{org}/{ds['id']}/v1/manifest.json").read_text())
    assert manifest["masked"]["EMAIL"] == 2 and manifest["masking"]["EMAIL"]["distinct"] == 1
    assert {"PHONE", "CREDIT_CARD", "IP_ADDRESS", "SECRET", "PERSON"} <= set(manifest["masked"])
    lines = jsonl(stored_bytes(store, manifest["files"]["train"]["key"]) +
                  (stored_bytes(store, manifest["files"]["validation"]["key"]) if "validation" in manifest["files"]
                   else b""))
    text = json.dumps(lines)
    assert text.count("<EMAIL_1>") == 2  # the same address, the same placeholder, in two examples


async def test_reexport_is_byte_identical_and_versions_are_immutable(api, make_key, org, feed, store):
    h = await make_key(org)
    ds = await exportable(api, h, feed, org)
    first = await export(api, h, ds, "openai_dpo")
    second = await export(api, h, ds, "openai_dpo")
    assert (first["version"], second["version"]) == (1, 2)
    assert first["sha256"] == second["sha256"]
    assert await fetched(api, h, first["url"]) == await fetched(api, h, second["url"])
    assert hashlib.sha256(await fetched(api, h, first["url"])).hexdigest() == first["sha256"]
    manifest = json.loads(await fetched(api, h, second["manifest_url"]))
    assert manifest["export_version"] == 2 and manifest["counts"]["total"] == 42
    got = (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()
    assert (got["status"], got["export_version"], got["export_url"]) == ("exported", 2, second["url"])
    other_split = await export(api, h, ds, "openai_dpo", split_seed=7)
    assert other_split["sha256"] != first["sha256"] or other_split["counts"] != first["counts"]
    download = await api.get(f"/api/training-datasets/{ds['id']}/exports/1/files/train", headers=h)
    assert download.status_code == 200 and download.content == await fetched(api, h, first["url"])


async def test_answers_give_download_urls_never_where_the_store_lies(api, make_key, org, feed, store):
    """Every answer about an export names its files by API URLs that download them; no answer, and no
    downloaded manifest, says where the object store lies on the server."""
    h = await make_key(org)
    ds = await exportable(api, h, feed, org)
    out = await export(api, h, ds, "openai_dpo")
    base = f"/api/training-datasets/{ds['id']}/exports/1/files"
    assert (out["url"], out["validation_url"], out["manifest_url"], out["sources_url"]) == (
        f"{base}/train", f"{base}/validation", f"{base}/manifest", f"{base}/sources")
    listed = (await api.get(f"/api/training-datasets/{ds['id']}/exports", headers=h)).json()
    got = (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()
    page = (await api.get("/api/training-datasets", headers=h)).json()
    assert listed == [out] and got["export_url"] == out["url"]
    manifest = await fetched(api, h, out["manifest_url"])
    for answer in (json.dumps(out), json.dumps(listed), json.dumps(got), json.dumps(page), manifest.decode()):
        assert "file:" not in answer and str(store.root) not in answer, answer
    assert json.loads(manifest)["files"]["train"]["key"] == f"datasets/{org}/{ds['id']}/v1/train.jsonl"
    assert await fetched(api, h, out["url"]) == stored_bytes(store, f"datasets/{org}/{ds['id']}/v1/train.jsonl")
    assert await fetched(api, h, out["sources_url"])
    no_validation = await export(api, h, ds, "openai_dpo", validation_ratio=0)
    assert no_validation["validation_url"] is None


async def test_a_transfer_slot_is_lent_again_only_once_its_task_is_over():
    """A worker writes a stripe's lines into the shared memory lent with its task: an export that stops
    early (it failed, or was interrupted) must not lend a slot a worker may still be writing to."""
    from concurrent.futures import Future

    from services.curation.export_engine import TransferSlots

    slots = TransferSlots(2)
    try:
        a, b = slots.lend(), slots.lend()
        assert a is not None and b is not None and slots.lend() is None  # all lent: the next stripe goes pickled
        queued, running = Future(), Future()
        assert running.set_running_or_notify_cancel()
        slots.give_back_when_done(a, queued)  # not started yet: cancelled, its slot free at once
        slots.give_back_when_done(b, running)  # running: a worker may still write to it
        assert queued.cancelled() and slots.lend() is a and slots.lend() is None
        running.set_result(None)
        assert slots.lend() is b
    finally:
        slots.close()


async def test_worker_processes_write_the_same_files(api, make_key, org, feed, store, monkeypatch):
    """A large export is shaped by worker processes reading stripes of the same snapshot; the files
    must be the ones the service's own process writes: same lines, same order, same placeholders,
    duplicates dropped the same way."""
    from services.curation import export_engine

    h = await make_key(org)
    ds = await exportable(api, h, feed, org)
    first = (await api.get(f"/api/preference-pairs?dataset_id={ds['id']}&limit=1", headers=h)).json()["items"][0]
    duplicate = {k: first[k] for k in ("dataset_id", "query", "chosen_response", "rejected_response")}
    await api.patch(f"/api/training-datasets/{ds['id']}", json={"status": "curating"}, headers=h)
    assert (await api.post("/api/preference-pairs", json=duplicate, headers=h)).status_code == 201
    await api.patch(f"/api/training-datasets/{ds['id']}", json={"status": "ready"}, headers=h)
    in_process = await export(api, h, ds, "openai_dpo")
    monkeypatch.setattr(export_engine, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(export_engine, "STRIPE_ROWS", 5)  # ~9 stripes over 2 workers, several in flight
    handed = []  # which way each stripe's lines came back: through a transfer slot, or pickled
    take = export_engine._take
    monkeypatch.setattr(export_engine, "_take",
                        lambda result, buffer: handed.append(result.placed is not None) or take(result, buffer))
    parallel = await export(api, h, ds, "openai_dpo")
    assert export_engine._pool is not None  # the worker pool did the shaping
    assert handed and all(handed)  # every stripe through shared memory
    assert parallel["counts"] == in_process["counts"] and parallel["masked"] == in_process["masked"]
    assert parallel["counts"]["total"] == 42  # the duplicate dropped
    for name in ("url", "validation_url"):
        assert await fetched(api, h, parallel[name]) == await fetched(api, h, in_process[name])
    sources = [await fetched(api, h, e["sources_url"]) for e in (in_process, parallel)]
    assert sources[0] == sources[1]
    text = (await fetched(api, h, parallel["url"]) + await fetched(api, h, parallel["validation_url"])).decode()
    for secret in PLANTED:
        assert secret not in text

    # stripes too large for a transfer slot come back pickled: the same files
    monkeypatch.setattr(export_engine.TransferSlots, "SLOT_BYTES", 64)
    monkeypatch.setattr(export_engine, "_slots", None)
    handed.clear()
    small_slots = await export(api, h, ds, "openai_dpo")
    assert handed and not any(handed)
    for name in ("url", "validation_url"):
        assert await fetched(api, h, small_slots[name]) == await fetched(api, h, in_process[name])
    export_engine._slots.close()
    monkeypatch.setattr(export_engine, "_slots", None)

    # a worker process that dies (killed, out of memory) does not take the next exports with it
    workers = list(export_engine._pool._processes.values())
    for process in workers:
        # Once one is killed the pool is broken and ends the others itself: one may be gone already.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.join(10)
    again = await export(api, h, ds, "openai_dpo")
    assert await fetched(api, h, again["url"]) == await fetched(api, h, in_process["url"])
    assert not {w.pid for w in workers} & set(export_engine._pool._processes)


async def test_instruction_tuning_exports_approved_answers(api, make_key, org, feed, store):
    received, reviewed = feed
    h = await make_key(org)
    ids = []
    for i in range(12):
        fid = await received(org, f"Question {i}?", f"Answer {i}.", "thumbs_up")
        await reviewed(org, fid, "approved", correction=f"Better answer {i}." if i == 0 else None)
        ids.append(str(fid))
    again = await received(org, "Question 3?", "Answer 3.", "thumbs_up")  # the same example twice
    await reviewed(org, again, "approved")
    pending = await received(org, "Unreviewed?", "Maybe.", "thumbs_up")
    ds = (await api.post("/api/training-datasets", json={"name": "IT", "dataset_type": "instruction_tuning",
                                                         "feedback_ids": [*ids, str(again), str(pending)]},
                         headers=h)).json()
    assert ds["sample_count"] == 13
    r = await api.post(f"/api/training-datasets/{ds['id']}/validate", json={"format": "openai_sft"}, headers=h)
    duplicates = {x["rule"]: x for x in r.json()["rules"]}["exact_duplicate"]
    assert duplicates["count"] == 1 and duplicates["examples"][0]["prompt"] == "Question 3?"
    assert sorted(duplicates["examples"][0]["ids"]) == sorted([ids[3], str(again)])
    await api.patch(f"/api/training-datasets/{ds['id']}", json={"status": "ready"}, headers=h)
    r = await api.post(f"/api/training-datasets/{ds['id']}/export", json={"format": "trl_dpo"}, headers=h)
    assert r.status_code == 422 and "trl_dpo" in r.json()["message"]
    out = await export(api, h, ds, "openai_sft", validation_ratio=0)
    lines = jsonl(await fetched(api, h, out["url"]))
    answers = {line["messages"][0]["content"]: line["messages"][1]["content"] for line in lines}
    assert answers["Question 0?"] == "Better answer 0." and answers["Question 5?"] == "Answer 5."
    assert "Unreviewed?" not in answers and out["validation_url"] is None


async def test_export_to_s3_through_moto_server(api, make_key, org, feed):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        client.create_bucket(Bucket="rlhf-exports")
        api._transport.app.state.object_store = S3ObjectStore("rlhf-exports", "tenant-a", client=client)
        h = await make_key(org)
        ds = await exportable(api, h, feed, org)
        out = await export(api, h, ds, "openai_dpo")
        assert out["url"] == f"/api/training-datasets/{ds['id']}/exports/1/files/train"
        key = f"tenant-a/datasets/{org}/{ds['id']}/v1/train.jsonl"
        body = client.get_object(Bucket="rlhf-exports", Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == out["sha256"]
        assert await fetched(api, h, out["url"]) == body  # streamed from S3 through the API
        assert "s3://" not in json.dumps(out)
        keys = {o["Key"].rsplit("/", 1)[1] for o in client.list_objects_v2(Bucket="rlhf-exports")["Contents"]}
        assert keys == {"train.jsonl", "validation.jsonl", "manifest.json", "sources.jsonl"}
    finally:
        server.stop()


async def test_interrupted_export_leaves_no_file_and_no_state_change(migrated, make_key, org, feed, api, tmp_path):
    """The service process is killed (SIGKILL) in the middle of writing an export."""
    h = await make_key(org)
    ds = await exportable(api, h, feed, org)
    before = (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()
    port = free_port()
    objects = tmp_path / "crash-objects"
    env = dict(os.environ, DATABASE_URL=migrated.database_url, RLHF_HTTP_PORT=str(port),
               RLHF_OBJECT_STORE_URL=str(objects), RLHF_FAILPOINTS="curation.export.after_chunk")
    process = subprocess.Popen([sys.executable, "-m", "services.curation.main", "--role", "api"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            async def healthy():
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(healthy, timeout=30)
            with pytest.raises(httpx.HTTPError):
                await client.post(f"/api/training-datasets/{ds['id']}/export", json={"format": "openai_dpo"},
                                  headers=h)
        assert process.wait(30) == -9
    finally:
        if process.poll() is None:
            process.kill()
    visible = [p.name for p in objects.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]
    assert visible == []
    after = (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()
    assert after == before
    assert (await api.get(f"/api/training-datasets/{ds['id']}/exports", headers=h)).json() == []
