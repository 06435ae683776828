"""Browser tests of the Curate UI: Playwright for Python driving Debian's Chromium (Playwright's
own browser download does not work offline) against the running stack's gateway. `make test`
installs chromium when it runs as root; elsewhere these tests skip and say how to install it.

Every page collects console errors and uncaught exceptions; a test fails on any it did not
expect. Screenshots of each panel are kept in test-artifacts/ui/ (git-ignored)."""

import os
import re
import shutil
from pathlib import Path

import pytest
import pytest_asyncio

from services.gateway.ui import STATIC

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("RLHF_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "ui"
AXE = ROOT / "frontend" / "node_modules" / "axe-core" / "axe.min.js"
# Generous: these machines are shared, and a step waits only as long as it has to.
TIMEOUT_MS = 30_000
INSTALL_HINT = "sudo apt-get install chromium (as root, `make test` does it)"
# Flags for a closed network: without them Chromium keeps trying to reach Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
]


def pytest_configure(config):
    # Local training jobs report quickly enough to watch their loss curve grow (read by the
    # training service processes, which start after collection).
    os.environ.setdefault("RLHF_TRAINING_POLL_INTERVAL", "0.2")
    os.environ.setdefault("RLHF_TRAINING_PROGRESS_INTERVAL", "0.5")


def chromium_path() -> str | None:
    return os.environ.get("RLHF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip("browser tests skipped: playwright is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    if not path:
        pytest.skip(f"browser tests skipped: Chromium is not installed. Install it with: {INSTALL_HINT}")
    if not (STATIC / "index.html").is_file():
        pytest.skip("browser tests skipped: the UI is not built. Build it with: make ui")
    return path


@pytest_asyncio.fixture(scope="session")
async def browser(chromium):
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


class ConsoleWatch:
    """Console errors and uncaught exceptions of a page; `expect` allows the ones a test causes."""

    def __init__(self):
        self.errors: list[str] = []
        self.allowed: list[re.Pattern] = []

    def expect(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest_asyncio.fixture
async def page(browser, stack):
    context = await browser.new_context(viewport={"width": 1440, "height": 900}, base_url=stack.gateway_url)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    watch = ConsoleWatch()
    page.on("console", lambda m: watch.errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: watch.errors.append(f"pageerror: {e}"))
    page.console_watch = watch
    yield page
    await context.close()
    assert not watch.unexpected(), f"console errors in the browser: {watch.unexpected()}"


async def sign_in(page, key_headers: dict[str, str]) -> None:
    token = key_headers["Authorization"].removeprefix("Bearer ")
    await page.goto("/")
    await page.get_by_label("API key").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("navigation", name="Curate").wait_for()


async def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    hide_toasts = "() => document.querySelectorAll('.toasts').forEach(t => t.style.visibility = '%s')"
    await page.evaluate(hide_toasts % "hidden")
    await page.screenshot(path=str(path), full_page=True)
    await page.evaluate(hide_toasts % "visible")
    return path


async def serious_accessibility_violations(page) -> list[dict]:
    """axe-core's serious and critical findings on the page as it is now."""
    # Evaluated through the DevTools protocol: the page's CSP forbids injected <script> elements.
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text() + "\n;undefined")
    violations = await page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .map(v => ({id: v.id, impact: v.impact, help: v.help, targets: v.nodes.slice(0, 3).map(n => n.target)}))"""
    )
    return [v for v in violations if v["impact"] in ("serious", "critical")]


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A tiny Llama made on the spot for local (TRL + LoRA) jobs: nothing is downloaded."""
    from tests.training.tiny_model import make_tiny_llama, model_dir

    texts = [f"How do I check deployment {i}? Open Deployments, then the Status panel. No idea, sorry."
             for i in range(20)]
    return make_tiny_llama(model_dir("ui-llama"), texts)
