"""The curation service's HTTP API on the real PostgreSQL: datasets, pairs, bulk strategies, the
lifecycle, validation, bad input and organization scoping."""

import uuid

import pytest

pytestmark = pytest.mark.asyncio


def pair(dataset_id, i=0, **overrides):
    body = {"dataset_id": str(dataset_id), "query": f"How do I deploy service {i}?",
            "chosen_response": f"Run the deploy pipeline for service {i} from the release page.",
            "rejected_response": "Just push it.", "preference_strength": 0.8}
    body.update(overrides)
    return body


async def make_dataset(api, h, dataset_type="dpo", **fields):
    r = await api.post("/api/training-datasets", json={"name": "Support Q4", "dataset_type": dataset_type, **fields},
                       headers=h)
    assert r.status_code == 201, r.text
    return r.json()


async def test_dataset_lifecycle_and_sample_count(api, make_key, org):
    h = await make_key(org)
    ds = await make_dataset(api, h)
    assert (ds["status"], ds["sample_count"]) == ("draft", 0)
    r = await api.patch(f"/api/training-datasets/{ds['id']}", json={"status": "ready"}, headers=h)
    assert r.status_code == 409 and "empty" in r.json()["message"]
    for i in range(3):
        assert (await api.post("/api/preference-pairs", json=pair(ds["id"], i), headers=h)).status_code == 201
    got = (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()
    assert got["sample_count"] == 3
    assert (await api.patch(f"/api/training-datasets/{ds['id']}", json={"status": "curating"}, headers=h)).json()[
        "status"] == "curating"
    assert (await api.patch(f"/api/training-datasets/{ds['id']}", json={"status": "ready"}, headers=h)).json()[
        "status"] == "ready"
    r = await api.patch(f"/api/training-datasets/{ds['id']}", json={"status": "exported"}, headers=h)
    assert r.status_code == 409
    # a new pair puts a ready dataset back in curation
    first = (await api.post("/api/preference-pairs", json=pair(ds["id"], 9), headers=h)).json()
    got = (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()
    assert (got["status"], got["sample_count"]) == ("curating", 4)
    assert (await api.delete(f"/api/preference-pairs/{first['id']}", headers=h)).status_code == 204
    assert (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()["sample_count"] == 3
    archived = await api.delete(f"/api/training-datasets/{ds['id']}", headers=h)
    assert archived.json()["status"] == "archived"
    assert (await api.delete(f"/api/training-datasets/{ds['id']}", headers=h)).status_code == 409
    r = await api.patch(f"/api/training-datasets/{ds['id']}", json={"status": "draft"}, headers=h)
    assert r.status_code == 409
    r = await api.post("/api/preference-pairs", json=pair(ds["id"]), headers=h)
    assert r.status_code == 409


async def test_bad_input_is_refused_clearly(api, make_key, org):
    h = await make_key(org)
    ds = await make_dataset(api, h)
    r = await api.post("/api/preference-pairs", json=pair(ds["id"], preference_strength=1.5), headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "preference_strength"
    r = await api.post("/api/preference-pairs", json=pair(uuid.uuid4()), headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "dataset_id"
    r = await api.post("/api/training-datasets", json={"name": "x", "dataset_type": "dpo", "owner": "me"}, headers=h)
    assert r.status_code == 422
    inst = await make_dataset(api, h, "instruction_tuning")
    r = await api.post("/api/preference-pairs", json=pair(inst["id"]), headers=h)
    assert r.status_code == 422 and "instruction_tuning" in r.json()["message"]
    r = await api.post(f"/api/training-datasets/{ds['id']}/export", json={"format": "openai_dpo"}, headers=h)
    assert r.status_code == 409 and "draft" in r.json()["message"]
    r = await api.post(f"/api/training-datasets/{inst['id']}/export", json={"format": "csv"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "format"
    viewer = await make_key(org, "viewer")
    assert (await api.post("/api/preference-pairs", json=pair(ds["id"]), headers=viewer)).status_code == 403
    assert (await api.get("/api/preference-pairs", headers={})).status_code == 401


async def test_another_organizations_ids_answer_404(api, make_key, org):
    h = await make_key(org)
    ds = await make_dataset(api, h)
    p = (await api.post("/api/preference-pairs", json=pair(ds["id"]), headers=h)).json()
    other = await make_key(f"{org}-other")
    assert (await api.get(f"/api/training-datasets/{ds['id']}", headers=other)).status_code == 404
    assert (await api.patch(f"/api/training-datasets/{ds['id']}", json={"name": "x"}, headers=other)).status_code == 404
    assert (await api.delete(f"/api/training-datasets/{ds['id']}", headers=other)).status_code == 404
    assert (await api.post(f"/api/training-datasets/{ds['id']}/export", json={"format": "jsonl"},
                           headers=other)).status_code == 404
    assert (await api.patch(f"/api/preference-pairs/{p['id']}", json={"query": "x"}, headers=other)).status_code == 404
    assert (await api.delete(f"/api/preference-pairs/{p['id']}", headers=other)).status_code == 404
    assert (await api.get("/api/preference-pairs", headers=other)).json()["items"] == []
    r = await api.post("/api/preference-pairs", json=pair(ds["id"]), headers=other)
    assert r.status_code == 422  # the dataset does not exist for them


async def test_pair_filters_and_paging(api, make_key, org):
    h = await make_key(org)
    ds = await make_dataset(api, h)
    await api.post("/api/preference-pairs", json=pair(ds["id"], 1, preference_strength=0.2,
                                                        annotator_email="a@x.io"), headers=h)
    await api.post("/api/preference-pairs", json=pair(ds["id"], 2, preference_strength=0.9,
                                                        query="Where are the kubernetes logs?"), headers=h)
    await api.post("/api/preference-pairs", json=pair(ds["id"], 3, preference_strength=0.5), headers=h)
    items = lambda r: [i["query"] for i in r.json()["items"]]  # noqa: E731
    assert items(await api.get("/api/preference-pairs", params={"min_strength": 0.5, "max_strength": 0.6},
                               headers=h)) == ["How do I deploy service 3?"]
    assert items(await api.get("/api/preference-pairs", params={"q": "KUBERNETES"}, headers=h)) == [
        "Where are the kubernetes logs?"]
    assert items(await api.get("/api/preference-pairs", params={"annotator": "a@x.io"}, headers=h)) == [
        "How do I deploy service 1?"]
    page1 = (await api.get("/api/preference-pairs", params={"dataset_id": ds["id"], "limit": 2}, headers=h)).json()
    page2 = (await api.get("/api/preference-pairs", params={"dataset_id": ds["id"], "limit": 2,
                                                            "cursor": page1["next_cursor"]}, headers=h)).json()
    assert len(page1["items"]) == 2 and len(page2["items"]) == 1 and page2["next_cursor"] is None
    r = await api.patch(f"/api/preference-pairs/{page2['items'][0]['id']}", json={"preference_strength": 0.1},
                        headers=h)
    assert r.json()["preference_strength"] == 0.1


async def test_bulk_pairs_by_each_strategy_keep_provenance(api, make_key, org, feed):
    received, reviewed = feed
    h = await make_key(org)
    fixed = await received(org, "Reset my password?", "Call support.", "correction",
                           {"correction": "Use Settings > Security > Reset password."})
    up = await received(org, "Where are logs?", "In Grafana, under Explore.", "thumbs_up")
    down = await received(org, "where are  LOGS", "Somewhere.", "thumbs_down")
    hi = await received(org, "Scale a service?", "kubectl scale deploy/x --replicas=3", "rating", {"rating": 5})
    lo = await received(org, "Scale a service?", "Buy more servers.", "rating", {"rating": 2})
    junk = await received(org, "Scale a service?", "Reboot.", "rating", {"rating": 1})
    await reviewed(org, junk, "rejected")  # rejected by a curator: never paired
    ds = await make_dataset(api, h)
    body = {"dataset_id": ds["id"], "strategies": ["correction", "thumbs", "rating"]}
    r = await api.post("/api/preference-pairs/bulk", json=body, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["created"] == {"correction": 1, "thumbs": 1, "rating": 1}
    assert r.json()["sample_count"] == 3
    pairs = {p["strategy"]: p for p in (await api.get("/api/preference-pairs", params={"dataset_id": ds["id"]},
                                                      headers=h)).json()["items"]}
    assert pairs["correction"]["chosen_response"] == "Use Settings > Security > Reset password."
    assert pairs["correction"]["rejected_response"] == "Call support."
    assert pairs["correction"]["source_feedback_ids"] == [str(fixed)]
    assert pairs["thumbs"]["source_feedback_ids"] == [str(up), str(down)]
    assert pairs["rating"]["source_feedback_ids"] == [str(hi), str(lo)]
    assert pairs["rating"]["preference_strength"] == pytest.approx(0.75)
    again = await api.post("/api/preference-pairs/bulk", json=body, headers=h)
    assert again.json()["created"] == {"correction": 0, "thumbs": 0, "rating": 0}  # idempotent


async def test_a_dry_run_counts_the_pairs_each_strategy_would_add_and_writes_nothing(api, make_key, org, feed):
    received, reviewed = feed
    h = await make_key(org)
    fixed = await received(org, "Reset my password?", "Call support.", "correction",
                           {"correction": "Use Settings > Security > Reset password."})
    await received(org, "Where are logs?", "In Grafana, under Explore.", "thumbs_up")
    await received(org, "where are  LOGS", "Somewhere.", "thumbs_down")
    await received(org, "where are logs", "No idea.", "thumbs_down")
    await received(org, "Scale a service?", "kubectl scale deploy/x --replicas=3", "rating", {"rating": 5})
    await received(org, "Scale a service?", "Buy more servers.", "rating", {"rating": 2})
    await reviewed(org, fixed, "approved")
    ds = await make_dataset(api, h)
    body = {"dataset_id": ds["id"], "strategies": ["correction", "thumbs", "rating"]}

    preview = await api.post("/api/preference-pairs/bulk", json={**body, "dry_run": True}, headers=h)
    assert preview.status_code == 200, preview.text
    assert preview.json() == {"dataset_id": ds["id"], "created": {"correction": 1, "thumbs": 2, "rating": 1},
                              "sample_count": 0, "dry_run": True}
    approved = await api.post("/api/preference-pairs/bulk", json={**body, "dry_run": True, "approved_only": True},
                              headers=h)
    assert approved.json()["created"] == {"correction": 1, "thumbs": 0, "rating": 0}
    capped = await api.post("/api/preference-pairs/bulk", headers=h, json={
        **body, "dry_run": True, "max_pairs_per_query": 1, "min_rating_gap": 4})
    assert capped.json()["created"] == {"correction": 1, "thumbs": 1, "rating": 0}
    assert (await api.get("/api/preference-pairs", params={"dataset_id": ds["id"]}, headers=h)).json()["items"] == []
    assert (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()["sample_count"] == 0

    mined = await api.post("/api/preference-pairs/bulk", json=body, headers=h)  # exactly what the preview said
    assert mined.status_code == 201 and mined.json()["created"] == preview.json()["created"]
    assert mined.json()["dry_run"] is False
    await received(org, "Reset my password?", "Ask IT.", "correction", {"correction": "Settings > Security."})
    after = await api.post("/api/preference-pairs/bulk", json={**body, "dry_run": True}, headers=h)
    assert after.json()["created"] == {"correction": 1, "thumbs": 0, "rating": 0}  # only what is new
    assert after.json()["sample_count"] == 4

    await api.patch(f"/api/training-datasets/{ds['id']}", json={"status": "archived"}, headers=h)
    for dry_run in (True, False):  # the same checks as mining
        refused = await api.post("/api/preference-pairs/bulk", json={**body, "dry_run": dry_run}, headers=h)
        assert refused.status_code == 409, refused.text


async def test_instruction_dataset_counts_approved_members(api, make_key, org, feed):
    received, reviewed = feed
    h = await make_key(org)
    a = await received(org, "q1", "a1", "thumbs_up")
    b = await received(org, "q2", "a2", "thumbs_up")
    ds = await make_dataset(api, h, "instruction_tuning", feedback_ids=[str(a), str(b)])
    assert ds["sample_count"] == 0
    await reviewed(org, a, "approved")
    assert (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()["sample_count"] == 1
    await reviewed(org, b, "approved")
    await reviewed(org, a, "rejected")
    assert (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()["sample_count"] == 1


async def test_duplicate_counts_follow_pair_edits(api, make_key, org):
    """The duplicate and prompt keys are stored with each pair: an edit must move them along."""
    h = await make_key(org)
    ds = await make_dataset(api, h)
    ids = [(await api.post("/api/preference-pairs", json=pair(ds["id"], i), headers=h)).json()["id"] for i in range(3)]

    async def duplicates() -> tuple[int, int]:
        r = await api.post(f"/api/training-datasets/{ds['id']}/validate", json={"format": "openai_dpo"}, headers=h)
        rules = {x["rule"]: x for x in r.json()["rules"]}
        return rules["exact_duplicate"]["count"], rules["near_duplicate"]["count"]

    assert await duplicates() == (0, 0)
    first = pair(ds["id"], 0)
    same = {k: first[k] for k in ("query", "chosen_response", "rejected_response")}
    assert (await api.patch(f"/api/preference-pairs/{ids[1]}", json=same, headers=h)).status_code == 200
    near = dict(same, query=first["query"].upper() + "!!")
    assert (await api.patch(f"/api/preference-pairs/{ids[2]}", json=near, headers=h)).status_code == 200
    assert await duplicates() == (1, 1)
    assert (await api.patch(f"/api/preference-pairs/{ids[1]}", json={"query": "Something else?"},
                            headers=h)).status_code == 200
    assert await duplicates() == (0, 1)


async def test_validation_report_counts_rules_with_examples(api, make_key, org):
    h = await make_key(org)
    ds = await make_dataset(api, h)
    for i in range(12):
        await api.post("/api/preference-pairs", json=pair(ds["id"], i), headers=h)
    await api.post("/api/preference-pairs", json=pair(ds["id"], 1), headers=h)  # exact duplicate
    await api.post("/api/preference-pairs", json=pair(ds["id"], 2, query="how do I DEPLOY service 2"), headers=h)
    await api.post("/api/preference-pairs", json=pair(ds["id"], 40, chosen_response="Same.", rejected_response="Same."),
                   headers=h)
    await api.post("/api/preference-pairs", json=pair(ds["id"], 41, chosen_response="   "), headers=h)
    r = await api.post(f"/api/training-datasets/{ds['id']}/validate", json={"format": "openai_dpo"}, headers=h)
    assert r.status_code == 200, r.text
    report = r.json()
    rules = {x["rule"]: x for x in report["rules"]}
    assert rules["exact_duplicate"]["count"] == 1 and rules["near_duplicate"]["count"] == 1
    assert rules["exact_duplicate"]["examples"][0]["prompt"] == "How do I deploy service 1?"
    assert len(rules["exact_duplicate"]["examples"][0]["ids"]) == 2
    assert rules["chosen_equals_rejected"]["count"] == 1 and rules["empty_field"]["count"] == 1
    assert rules["chosen_equals_rejected"]["examples"][0]["prompt"] == "How do I deploy service 40?"
    assert rules["split_overlap"]["count"] == 0 and rules["min_samples"]["count"] == 0
    assert rules["provider_schema"]["count"] == 1  # the whitespace answer
    assert report["passed"] is False and 0 < report["quality_score"] < 1
    got = (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()
    assert got["quality_score"] == report["quality_score"]
    await api.patch(f"/api/training-datasets/{ds['id']}", json={"status": "ready"}, headers=h)
    r = await api.post(f"/api/training-datasets/{ds['id']}/export", json={"format": "openai_dpo"}, headers=h)
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"rules.empty_field", "rules.chosen_equals_rejected"}
    assert (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()["status"] == "ready"


async def test_what_cannot_be_cleared_or_stored_answers_422_naming_the_field(api, make_key, org):
    h = await make_key(org)
    ds = await make_dataset(api, h)
    for field in ("name", "validation_ratio", "split_seed"):
        r = await api.patch(f"/api/training-datasets/{ds['id']}", json={field: None}, headers=h)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text
    assert (await api.get(f"/api/training-datasets/{ds['id']}", headers=h)).json()["name"] == ds["name"]
    r = await api.post("/api/preference-pairs/bulk", json={"dataset_id": ds["id"], "strategies": ["thumbs"],
                                                            "created_from": "9999-12-31T23:59:59-14:00"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "created_from", r.text


async def test_an_export_version_beyond_the_column_answers_422_naming_it(api, make_key, org):
    h = await make_key(org)
    ds = await make_dataset(api, h)
    for version in (2**31, 2**63, 0):
        r = await api.get(f"/api/training-datasets/{ds['id']}/exports/{version}/files/train", headers=h)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "path.version", r.text
    r = await api.get(f"/api/training-datasets/{ds['id']}/exports/{2**31 - 1}/files/train", headers=h)
    assert r.status_code == 404, r.text
