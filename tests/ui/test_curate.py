"""The Curate UI in a real browser against the running stack: each panel's main flow clicked
through as a curator would, no console errors, no serious accessibility violations, and a
screenshot of each panel (test-artifacts/ui/)."""

import re

import pytest

from tests.support import eventually
from tests.ui.conftest import screenshot, serious_accessibility_violations, sign_in

pytestmark = pytest.mark.asyncio
expect = pytest.importorskip(
    "playwright.async_api", reason="browser tests skipped: playwright is not installed (pip install -e '.[dev]')"
).expect


def feedback(query: str, response: str, feedback_type: str, **more) -> dict:
    return {"query": query, "response": response, "feedback_type": feedback_type, **more}


async def seed(gateway, headers, items: list[dict]) -> list[str]:
    r = await gateway.post("/api/feedback/batch", json={"items": items}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["ids"]


async def expect_accessible(page) -> None:
    violations = await serious_accessibility_violations(page)
    assert not violations, violations


async def test_sign_in_shows_the_organization_and_hides_what_a_viewer_may_not_do(page, make_key, org):
    await page.goto("/")
    await page.get_by_label("API key").fill("rlhf_nope_nope")
    page.console_watch.expect(r"status of 401")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="not valid").wait_for()
    await screenshot(page, "0-sign-in")
    await expect_accessible(page)

    await sign_in(page, await make_key(org, "viewer"))
    whoami = page.locator(".whoami")
    await whoami.get_by_text(org).wait_for()
    await whoami.get_by_text("viewer").wait_for()
    await page.get_by_role("heading", name="Feedback Queue").wait_for()
    assert await page.get_by_role("button", name="Approve").count() == 0
    await page.get_by_role("link", name="Training Datasets").click()
    await page.get_by_role("heading", name="Training Datasets").wait_for()
    assert await page.get_by_role("button", name="+ New dataset").count() == 0
    await page.get_by_role("link", name="Fine-Tuning").click()
    await page.get_by_role("heading", name="Fine-Tuning Jobs").wait_for()
    assert await page.get_by_role("button", name="+ Launch job").count() == 0
    assert await page.get_by_role("button", name="Set budget").count() == 0
    # The key lives in this tab's session storage, and signing out forgets it.
    assert await page.evaluate("sessionStorage.getItem('rlhf.apiKey')")
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_label("API key").wait_for()
    assert await page.evaluate("sessionStorage.getItem('rlhf.apiKey')") is None


async def test_an_admin_sets_the_monthly_budget(page, make_key, org):
    await sign_in(page, await make_key(org, "admin"))
    await page.get_by_role("link", name="Fine-Tuning").click()
    await page.get_by_label("Monthly budget (USD)").fill("250")
    await page.get_by_role("button", name="Set budget").click()
    await page.get_by_text("Monthly budget set to $250.00").wait_for()
    await page.locator(".stat", has_text="Budget left").get_by_text("of $250.00 a month").wait_for()


async def test_feedback_queue_filters_and_bulk_approves(page, gateway, make_key, org):
    key = await make_key(org, "curator")
    await seed(gateway, key, [
        *[feedback(f"Why was I charged twice in {m}?", "Refunds take 5 days.", "thumbs_down", tags=["billing"])
          for m in ("May", "June", "July")],
        feedback("How do I deploy?", "Click deploy.", "correction",
                 feedback_value={"correction": "Run `make deploy` from the release branch."}),
        feedback("Is the API rate limited?", "Yes, 100 requests a minute.", "rating", feedback_value={"rating": 4}),
        feedback("Where are the logs?", "In Grafana.", "thumbs_up", session_id="s-42"),
    ])
    r = await gateway.post("/api/training-datasets", headers=key,
                           json={"name": "Support answers", "dataset_type": "instruction_tuning"})
    assert r.status_code == 201, r.text
    await sign_in(page, key)
    rows = page.locator("table tbody tr")
    await expect(rows).to_have_count(6)

    await page.get_by_label("Type").select_option("thumbs_down")
    await page.get_by_label("Tag").fill("billing")
    await expect(rows).to_have_count(3)
    await page.get_by_label("select all").check()
    await page.get_by_text("3 selected").wait_for()
    await screenshot(page, "1-feedback-queue")
    await expect_accessible(page)

    await page.get_by_role("button", name="Approve").click()
    await page.get_by_text("3 items approved").wait_for()
    await page.get_by_text("No feedback matches these filters.").wait_for()  # the queue shows pending items
    stats = (await gateway.get("/api/feedback/stats", headers=key)).json()
    assert stats["by_status"] == {"approved": 3, "pending": 3}

    # One item's review: a correction, tags and notes, then approve.
    await page.get_by_role("button", name="Clear").click()
    await page.get_by_role("button", name="Where are the logs?").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Correction").fill("Logs are in Grafana under Explore > Loki.")
    await dialog.get_by_label("Tags").fill("observability, docs")
    await dialog.get_by_role("button", name="Approve").click()
    await page.get_by_text("Feedback approved").wait_for()
    items = (await gateway.get("/api/feedback", params={"session_id": "s-42"}, headers=key)).json()["items"]
    assert items[0]["status"] == "approved" and items[0]["tags"] == ["observability", "docs"]
    assert items[0]["correction"].startswith("Logs are in Grafana")

    # Approved items join an instruction-tuning dataset from the selection.
    await page.get_by_label("Status").select_option("approved")
    await expect(rows).to_have_count(4)
    await page.get_by_label("select all").check()
    await page.get_by_label("add the selection to a dataset").select_option(label="Support answers")
    await page.get_by_text("Added to “Support answers”: it now has 4 items").wait_for()


async def mined_pairs_appear(gateway, key, scratch_id: str, expected: int) -> None:
    """Waits until the curation service has seen the approved corrections (through Kafka)."""

    async def check():
        r = await gateway.post("/api/preference-pairs/bulk", headers=key, json={
            "dataset_id": scratch_id, "strategies": ["correction"], "approved_only": True})
        assert r.status_code == 201, r.text
        return r.json()["sample_count"] >= expected

    await eventually(check, timeout=60, interval=0.5)


async def test_curate_a_dataset_edit_a_pair_export_and_watch_a_local_job(page, gateway, make_key, org, tiny_model):
    key = await make_key(org, "curator")
    n = 12
    ids = await seed(gateway, key, [
        feedback(f"How do I check deployment {i}?", "No idea, sorry.", "correction",
                 feedback_value={"correction": f"Open Deployments, then the Status panel of service {i}."})
        for i in range(n)
    ])
    r = await gateway.post("/api/feedback/review", json={"ids": ids, "action": "approve"}, headers=key)
    assert r.status_code == 200 and len(r.json()["updated"]) == n
    scratch = await gateway.post("/api/training-datasets", headers=key, json={"name": "scratch", "dataset_type": "dpo"})
    await mined_pairs_appear(gateway, key, scratch.json()["id"], n)

    await sign_in(page, key)
    # Training Datasets: create one.
    await page.get_by_role("link", name="Training Datasets").click()
    await page.get_by_role("button", name="+ New dataset").click()
    await page.get_by_label("Name").fill("Deployment support v1")
    await page.get_by_role("button", name="Create dataset").click()
    await page.get_by_text("Dataset “Deployment support v1” created").wait_for()

    # Preference Pairs: mine from corrections, then edit one pair.
    await page.get_by_role("link", name="Preference Pairs").click()
    await page.get_by_label("dataset").select_option(label="Deployment support v1 (0)")
    # The preview is exact (a dry run of the same query): 12 corrections, nothing for the others.
    for strategy, expected in (("correction", "12"), ("thumbs", "0"), ("rating", "0")):
        await expect(page.get_by_test_id(f"preview-{strategy}")).to_have_text(expected)
    await page.locator(".strategy", has_text="Thumbs").get_by_role("checkbox").uncheck()
    await page.locator(".strategy", has_text="Ratings").get_by_role("checkbox").uncheck()
    await page.get_by_role("button", name="Mine pairs").click()
    await page.get_by_text(f"{n} pairs mined").wait_for()
    await expect(page.get_by_test_id("preview-correction")).to_have_text("0")  # nothing new left
    await page.get_by_role("button", name="How do I check deployment 3?").click()
    editor = page.locator(".pair-editor")
    await editor.get_by_label("Chosen response (better)").fill("Open Deployments > Status and pick service 3.")
    await editor.locator("input[type=range]").fill("0.9")
    await editor.get_by_label("Notes").fill("clearer path")
    await screenshot(page, "3-preference-pairs")
    await expect_accessible(page)
    await editor.get_by_role("button", name="Save pair").click()
    await page.get_by_text("Pair saved").wait_for()
    datasets = (await gateway.get("/api/training-datasets", headers=key)).json()["items"]
    dataset = next(d for d in datasets if d["name"] == "Deployment support v1")
    pairs = (await gateway.get("/api/preference-pairs", params={"dataset_id": dataset["id"], "q": "service 3"},
                               headers=key)).json()["items"]
    assert pairs[0]["chosen_response"] == "Open Deployments > Status and pick service 3."
    assert pairs[0]["preference_strength"] == 0.9 and pairs[0]["annotation_notes"] == "clearer path"

    # Training Datasets: ready, validate (the report per rule), export as TRL DPO.
    await page.get_by_role("link", name="Training Datasets").click()
    await page.get_by_role("button", name="Deployment support v1").click()
    await page.get_by_role("button", name="Mark ready").click()
    await page.get_by_text("Dataset is now ready").wait_for()
    await page.get_by_label("format").select_option("trl_dpo")
    await page.get_by_role("button", name="Validate").click()
    await page.get_by_text("Validation passed").wait_for()
    assert await page.locator(".report tbody tr").count() >= 3
    await page.get_by_role("button", name="Export", exact=True).click()
    await page.get_by_text(re.compile(r"Exported v1 \(\d+ train, \d+ validation\)")).wait_for()
    await page.locator(".card", has_text="Export versions").get_by_text("trl_dpo").wait_for()
    await screenshot(page, "2-training-datasets")
    await expect_accessible(page)

    # The training service learns of the export through DatasetExported.
    async def export_known():
        r = await gateway.post("/api/fine-tuning/estimate", headers=key, json={
            "dataset_id": dataset["id"], "provider": "huggingface", "base_model": str(tiny_model), "method": "dpo"})
        return r.status_code == 200

    await eventually(export_known, timeout=60, interval=0.5)

    # Fine-Tuning: the cost and budget before launch, then a local DPO job whose loss curve grows.
    await page.get_by_role("link", name="Fine-Tuning").click()
    await page.get_by_role("button", name="+ Launch job").click()
    launch = page.locator(".launch")
    await launch.get_by_label("Provider").select_option("huggingface")
    await launch.get_by_label("Base model").fill(str(tiny_model))
    await launch.get_by_label("Method").select_option("dpo")
    await launch.get_by_label("Epochs").fill("40")
    await launch.get_by_label("More hyperparameters (JSON)").fill(
        '{"batch_size": 2, "max_length": 64, "learning_rate": 0.005}')
    await launch.get_by_text("Budget left").wait_for()
    await launch.get_by_role("button", name="Launch job").click()
    await page.get_by_text("Job launched on Local (TRL + LoRA)").wait_for()

    chart = page.locator(".chart")
    await page.wait_for_function(
        "() => Number(document.querySelector('.chart')?.dataset.points) >= 3", timeout=120_000)
    first = int(await chart.get_attribute("data-points"))
    await page.wait_for_function(  # live: new points arrive while the page stays as it is
        f"() => Number(document.querySelector('.chart').dataset.points) > {first}", timeout=60_000)
    assert await page.locator("[data-testid=latest-loss]").inner_text() != "—"
    await screenshot(page, "4-fine-tuning")
    await expect_accessible(page)

    await page.get_by_role("button", name="Cancel job").click()
    await page.get_by_text("Job cancelled").wait_for()
    await page.locator(".job-detail").get_by_text("cancelled").first.wait_for()


async def test_the_api_reference_renders_every_service(page):
    await page.goto("/docs")
    await page.get_by_text("Betabase RLHF API").first.wait_for()
    for tag in ("feedback", "training datasets", "preference pairs", "fine-tuning"):
        await page.locator(".opblock-tag", has_text=tag).first.wait_for()
    await screenshot(page, "9-api-reference")


async def test_the_queue_pages_by_keyset(page, gateway, make_key, org):
    key = await make_key(org, "viewer")
    await seed(gateway, key, [feedback(f"Question {i:02d}", "An answer.", "thumbs_up") for i in range(57)])
    await sign_in(page, key)
    rows = page.locator("table tbody tr")
    await expect(rows).to_have_count(50)
    await page.get_by_role("button", name="Load more").click()
    await expect(rows).to_have_count(57)
    await expect(page.get_by_role("button", name="Load more")).to_have_count(0)
    await page.get_by_text("Question 00").wait_for()  # the oldest, on the second page


EVALUATION = {"kind": "local", "eval_loss": 0.41, "preference_accuracy": 0.88, "reward_margin": 0.72,
              "leak_check": {"samples": 8, "findings": 0, "pii_findings": 0, "verbatim_findings": 0, "examples": []}}


async def exported_dataset(gateway, kafka, org, key, name: str, n: int = 12) -> dict:
    """Feedback -> pairs -> a ready dataset exported as TRL DPO, through the API: what a version's
    lineage reaches. Returns the export as DatasetExported announced it (storage URLs), as the
    training service knows it."""
    from shared.events import DatasetExported
    from tests.support import envelope_of, of_org

    ids = await seed(gateway, key, [
        feedback(f"How do I rotate key {i}?", "Ignore it.", "correction",
                 feedback_value={"correction": f"Rotate key {i} in the vault, then redeploy the service."})
        for i in range(n)
    ])
    r = await gateway.post("/api/feedback/review", json={"ids": ids, "action": "approve"}, headers=key)
    assert r.status_code == 200, r.text
    dataset = (await gateway.post("/api/training-datasets", headers=key,
                                  json={"name": name, "dataset_type": "dpo"})).json()
    await mined_pairs_appear(gateway, key, dataset["id"], n)
    r = await gateway.patch(f"/api/training-datasets/{dataset['id']}", json={"status": "ready"}, headers=key)
    assert r.status_code == 200, r.text
    export = await gateway.post(f"/api/training-datasets/{dataset['id']}/export", json={"format": "trl_dpo"},
                                headers=key)
    assert export.status_code == 201, export.text
    [record] = await kafka.collect([DatasetExported.topic()], lambda rs: len(rs) >= 1, match=of_org(org))
    return envelope_of(record)["payload"]


def completed_job(export: dict, model: str, accuracy: float):
    """What the training service announces when a local job is done (registered by the registry)."""
    import uuid
    from datetime import UTC, datetime

    from shared.events import ExportRef, JobCompleted

    job_id = uuid.uuid4()
    ref = ExportRef(dataset_id=export["dataset_id"], name=export["name"], export_version=export["export_version"],
                    format=export["format"], sha256=export["sha256"], counts=export["counts"], url=export["url"],
                    validation_url=export["validation_url"], manifest_url=export["manifest_url"])
    return JobCompleted(
        job_id=job_id, dataset_id=ref.dataset_id, provider="huggingface", base_model="llama-3.2-1b",
        resulting_model_id=f"file:///objects/adapters/{model}/", final_metrics={"train_loss": 0.52}, actual_cost=0.0,
        completed_at=datetime.now(UTC), method="dpo", hyperparameters={"n_epochs": 3, "beta": 0.1}, cost_estimate=0.0,
        export_version=ref.export_version, export=ref, model_name="support-bot",
        evaluation={**EVALUATION, "preference_accuracy": accuracy},
    )


async def test_register_ab_test_read_the_results_full_deploy_and_roll_back(page, gateway, kafka, engine, make_key,
                                                                            org):
    """Two versions registered from completed jobs (through the bus); in the browser: deploy the
    first, start an A/B test from the registry, read its significant result live, full deploy the
    winner, roll back, archive a third version."""
    import random

    from sqlalchemy import text

    from shared.events import OutcomeRecorded

    admin, viewer = await make_key(org, "admin"), await make_key(org, "viewer")
    export = await exported_dataset(gateway, kafka, org, admin, "Key rotation")
    for model, accuracy in (("bot-v1", 0.81), ("bot-v2", 0.88)):
        await kafka.send_event(completed_job(export, model, accuracy), org)

    async def registered():
        items = (await gateway.get("/api/models", params={"name": "support-bot"}, headers=admin)).json()["items"]
        return sorted(items, key=lambda v: v["version"]) if len(items) == 2 else None

    v1, v2 = await eventually(registered)
    assert (v1["version"], v2["version"]) == ("1.0.0", "1.1.0")
    by_hand = await gateway.post("/api/models", headers=admin, json={
        "name": "support-bot", "model_id": "bot-experimental", "base_model": "llama-3.2-3b",
        "serving": {"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "model": "bot-experimental"}})
    assert by_hand.status_code == 201, by_hand.text
    v3 = by_hand.json()

    async def experiments_know_them():  # ModelRegistered reached the experiments service
        async with engine.connect() as conn:
            found = (await conn.execute(text("SELECT count(*) FROM experiments.model_versions WHERE id = ANY(:ids)"),
                                        {"ids": [v1["id"], v2["id"]]})).scalar_one()
        return found == 2

    await eventually(experiments_know_them)

    await sign_in(page, admin)
    await page.get_by_role("link", name="Model Registry").click()
    await page.get_by_role("heading", name="Model Registry").wait_for()
    name_card = page.locator(".model-name", has_text="support-bot")
    await expect(name_card.locator("tbody tr")).to_have_count(3)
    await name_card.get_by_text("nothing deployed").wait_for()

    # Deploy 1.0.0 (it has an evaluation: the gate lets it through).
    await page.get_by_role("button", name="Deploy support-bot 1.0.0").click()
    await page.locator(".action-form").get_by_label("Reason").fill("first fine-tune")
    await page.get_by_role("button", name="Confirm deploy").click()
    await page.get_by_text("support-bot 1.0.0 deployed").wait_for()
    await name_card.get_by_text("v1.0.0 live").wait_for()

    # Start an A/B test of 1.1.0 against the deployed 1.0.0.
    await name_card.get_by_role("button", name="Start A/B test").click()
    form = page.locator(".ab-form")
    assert await form.locator("select[name=control]").evaluate("s => s.selectedOptions[0].text") == "v1.0.0 · deployed"
    await form.locator("select[name=treatment]").select_option(label="v1.1.0 · testing")
    await form.get_by_label("Primary metric").select_option("thumbs_up_rate")
    await form.get_by_label("Minimum sample size").fill("50")
    await form.locator("select[name=guardrail]").select_option("thumbs_down_rate")
    await form.get_by_label("Guardrail: worst degradation allowed").fill("0.05")
    await form.get_by_role("checkbox", name="Rating (1–5)").check()
    await form.get_by_role("button", name="Start test").click()
    await page.get_by_text("A/B test “support-bot: 1.1.0 vs 1.0.0” started").wait_for()
    await page.get_by_role("heading", name="A/B Testing").wait_for()
    experiment_id = re.search(r"id=([0-9a-f-]+)", page.url).group(1)
    detail = page.locator(".experiment-detail")
    await detail.get_by_text("Inconclusive so far").wait_for()
    await detail.get_by_text("not enough data: 0 of 50").wait_for()

    # Users: exposed through /assign, then outcomes reported on the bus (as another service would).
    units = [f"user-{i}" for i in range(180)]
    variants = {}
    for unit in units:
        async def assigned(unit=unit):
            r = await gateway.post(f"/api/experiments/{experiment_id}/assign", json={"unit": unit}, headers=viewer)
            return r.json()["variant"] if r.status_code == 200 else None

        variants[unit] = await eventually(assigned)
    rng = random.Random(5)
    for unit in units:
        liked = rng.random() < (0.85 if variants[unit] == "treatment" else 0.3)
        for metric, value in (("thumbs_up_rate", liked), ("thumbs_down_rate", not liked)):
            await kafka.send_event(OutcomeRecorded(metric=metric, value=float(value), unit=unit,
                                                   experiment_id=experiment_id), org)

    # The panel follows by itself: every outcome counted, significant, the recommendation and its reason.
    counted = len(units)
    await page.wait_for_function(
        """n => [...document.querySelectorAll('tr[data-metric=thumbs_up_rate] td.num .muted')]
                .reduce((sum, el) => sum + Number(el.textContent.replace(/[^0-9]/g, '')), 0) === n""",
        arg=counted, timeout=60_000)
    await detail.get_by_text("Deploy the treatment").wait_for()
    await detail.get_by_text("treatment is significantly better on thumbs_up_rate").wait_for()
    primary = detail.locator("tr[data-metric=thumbs_up_rate]")
    await primary.get_by_text("treatment better").wait_for()
    assert "to" in await primary.locator("td").nth(3).inner_text()  # the difference's 95% interval
    await detail.locator("tr[data-guardrail=thumbs_down_rate]").get_by_text("holding").wait_for()
    await detail.get_by_text(re.compile(r"Sample ratio: .* no mismatch")).wait_for()
    assert await detail.locator(".chart").get_attribute("data-intervals") == "2"
    results = (await gateway.get(f"/api/experiments/{experiment_id}", headers=admin)).json()["results"]
    shown = await primary.locator("td").nth(6).inner_text()
    assert shown == ("< 0.001" if results["metrics"][0]["p_value_adjusted"] < 0.001
                     else f"{results['metrics'][0]['p_value_adjusted']:.3f}")
    await screenshot(page, "6-ab-testing")
    await expect_accessible(page)

    # Full deploy of the winner: the registry deploys 1.1.0 (DeploymentRequested on the bus).
    await detail.get_by_role("button", name="Full deploy").click()
    assert await detail.get_by_label("Variant to deploy").input_value() == "treatment"
    await detail.get_by_label("Reason").fill("users prefer 1.1.0")
    await detail.get_by_role("button", name="Confirm full deploy").click()
    await page.get_by_text("Deployment of the treatment requested").wait_for()
    await detail.get_by_text("Deployment requested").wait_for()
    await detail.locator(".card-head").get_by_text("completed").wait_for()

    await page.get_by_role("link", name="Model Registry").click()
    await name_card.get_by_text("v1.1.0 live", exact=True).wait_for()
    await page.get_by_role("button", name="v1.1.0 of support-bot").click()
    history = page.locator(".version-detail").locator("table.history")
    await history.get_by_text(f"from experiment {experiment_id[:8]}").first.wait_for()
    lineage = page.locator(".lineage")
    await lineage.get_by_text("Key rotation").wait_for()
    await lineage.get_by_text("12 exported examples").wait_for()
    await lineage.get_by_text("12 feedback items").wait_for()
    await expect(lineage.locator("tbody tr")).to_have_count(12)
    await page.locator(".version-detail").get_by_text("88%").first.wait_for()  # its evaluation
    await screenshot(page, "5-model-registry")
    await expect_accessible(page)

    # Roll back: 1.0.0 takes the traffic again.
    await name_card.get_by_role("button", name="Roll back").click()
    await page.locator(".action-form").get_by_label("Reason").fill("regression in escalations")
    await page.get_by_role("button", name="Confirm rollback").click()
    await page.get_by_text("support-bot rolled back to 1.0.0").wait_for()
    await name_card.get_by_text("v1.0.0 live", exact=True).wait_for()
    await history.get_by_text("regression in escalations").first.wait_for()

    # Archive the version registered by hand (never deployed).
    await page.get_by_role("button", name=f"Archive support-bot {v3['version']}").click()
    await page.get_by_role("button", name="Confirm archive").click()
    await page.get_by_text(f"support-bot {v3['version']} archived").wait_for()
    await expect(page.get_by_role("button", name=f"Deploy support-bot {v3['version']}")).to_have_count(0)

    states = {v["version"]: v["status"] for v in
              (await gateway.get("/api/models", params={"name": "support-bot"}, headers=admin)).json()["items"]}
    assert states == {"1.0.0": "deployed", "1.1.0": "deprecated", v3["version"]: "archived"}
    actions = [h["action"] for h in (await gateway.get(f"/api/models/{v1['id']}/history",
                                                       params={"scope": "name"}, headers=admin)).json()]
    assert {"deploy", "rollback", "archive"} <= set(actions)


async def test_the_registry_and_experiments_hide_what_a_role_may_not_do(page, gateway, make_key, org):
    admin = await make_key(org, "admin")
    policy = await gateway.put("/api/models/policy", headers=admin, json={"require_evaluation": False})
    assert policy.status_code == 200, policy.text
    versions = []
    for model in ("faq-v1", "faq-v2"):
        r = await gateway.post("/api/models", headers=admin, json={
            "name": "faq-bot", "model_id": model, "base_model": "llama-3.2-1b",
            "serving": {"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "model": model}})
        assert r.status_code == 201, r.text
        versions.append(r.json())
    assert (await gateway.post(f"/api/models/{versions[0]['id']}/deploy", headers=admin)).status_code == 200

    async def started():  # once ModelRegistered reached the experiments service
        r = await gateway.post("/api/experiments", headers=admin, json={
            "name": "faq v2 vs v1", "control_model_id": versions[0]["id"], "treatment_model_id": versions[1]["id"],
            "success_metrics": [{"name": "thumbs_up_rate"}],
            "guardrails": [{"metric": "error_rate", "max_degradation": 0.05},
                           {"metric": "latency_p95_ms", "max_value": 2000}]})
        return r.json() if r.status_code == 201 else None

    experiment = await eventually(started)

    for role, may in (("viewer", set()), ("curator", {"Start A/B test", "Archive", "Pause", "End test", "Extend"})):
        await sign_in(page, await make_key(org, role))
        await page.get_by_role("link", name="Model Registry").click()
        await page.locator(".model-name", has_text="faq-bot").get_by_text("v1.0.0 live").wait_for()
        for name in ("Start A/B test", "Roll back"):
            assert await page.get_by_role("button", name=name, exact=True).count() == (name in may), (role, name)
        assert await page.get_by_role("button", name="Deploy faq-bot 1.1.0").count() == 0, role  # admins only
        assert await page.get_by_role("button", name="Archive faq-bot 1.1.0").count() == ("Archive" in may), role
        await page.get_by_role("link", name="A/B Testing").click()
        await page.locator(".experiment-detail").get_by_text(experiment["name"]).first.wait_for()
        # Both guardrail shapes of the results (a metric's, with an interval; the latency p95's, with a threshold).
        latency = page.locator(".experiment-detail tr[data-guardrail=latency_p95_ms]")
        await latency.get_by_text(re.compile(r"p95 ≤ 2\D?000 ms")).wait_for()  # 2,000 or 2 000, by locale
        await latency.get_by_text("collecting data").wait_for()
        await page.locator(".experiment-detail tr[data-guardrail=error_rate]").get_by_text("not enough data").wait_for()
        for name in ("Pause", "End test", "Extend", "Full deploy"):
            assert await page.get_by_role("button", name=name, exact=True).count() == (name in may), (role, name)
        await page.get_by_role("button", name="Sign out").click()
