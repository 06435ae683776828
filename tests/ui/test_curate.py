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
    await page.locator(".strategy", has_text="Thumbs").get_by_role("checkbox").uncheck()
    await page.locator(".strategy", has_text="Ratings").get_by_role("checkbox").uncheck()
    await page.get_by_role("button", name="Mine pairs").click()
    await page.get_by_text(f"{n} pairs mined").wait_for()
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
