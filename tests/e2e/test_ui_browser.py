"""The Dagster UI as the operator's console, driven in Debian's chromium through Playwright:
assets, jobs, sensors and schedules are there, and a job launched from the Launchpad succeeds.

Screenshots of every step go to ORDERSYS_SCREENSHOTS (docs/screenshots for the operator guide)
or a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("stack")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ASSETS = ["orders_csv", "daily_kpis", "customer_leaderboard"]
JOBS = ["order_workflow", "payment_settlement", "refund_processing", "notification_dispatch"]
SENSORS = ["inbox_sensor", "workflow_after_import_sensor", "payment_settlement_sensor",
           "analytics_after_work", "notification_dispatch_sensor", "refund_processing_sensor"]
SCHEDULES = ["analytics_hourly"]
LOAD_MS = 60_000
RUN_MS = 120_000


@pytest.fixture
def screenshots(tmp_path) -> Path:
    configured = os.environ.get("ORDERSYS_SCREENSHOTS")
    directory = Path(configured) if configured else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package `chromium`; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            yield context.new_page()
        finally:
            browser.close()


def _dismiss_welcome(page) -> None:
    """A fresh instance greets the first visit with a "Join the Dagster community" dialog."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=3_000)
    except Exception:
        return
    skip.click()
    skip.wait_for(state="hidden")


def _shot(page, directory: Path, name: str) -> None:
    page.wait_for_load_state("networkidle")
    _dismiss_welcome(page)
    page.screenshot(path=str(directory / f"{name}.png"))


def _see(page, text: str) -> None:
    page.get_by_text(text, exact=True).first.wait_for(state="visible", timeout=LOAD_MS)


def test_operator_console(stack, page, screenshots):
    page.set_default_timeout(LOAD_MS)

    page.goto(f"{stack.url}/assets")
    _dismiss_welcome(page)
    for name in ASSETS:
        _see(page, name)
    _shot(page, screenshots, "01-assets")

    page.goto(f"{stack.url}/asset-groups")
    page.locator("svg").first.wait_for(state="visible")
    page.wait_for_timeout(3_000)  # the graph lays itself out after the data arrives
    _shot(page, screenshots, "02-asset-graph")

    page.goto(f"{stack.url}/jobs")
    for name in JOBS:
        _see(page, name)
    _shot(page, screenshots, "03-jobs")

    page.goto(f"{stack.url}/automation")
    for name in SENSORS + SCHEDULES:
        _see(page, name)
    _shot(page, screenshots, "04-automation")

    page.goto(f"{stack.url}/locations/ordersys/jobs/notification_dispatch/playground")
    launch = page.get_by_role("button", name="Launch Run")
    launch.wait_for(state="visible")
    _shot(page, screenshots, "05-launchpad")
    launch.click()

    page.wait_for_url("**/runs/*", timeout=LOAD_MS)
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
    page.get_by_text("Success", exact=True).first.wait_for(state="visible", timeout=RUN_MS)
    _shot(page, screenshots, "06-run-success")

    page.goto(f"{stack.url}/runs")
    page.get_by_text(run_id[:8]).first.wait_for(state="visible")
    _shot(page, screenshots, "07-runs")

    assert (screenshots / "06-run-success.png").stat().st_size > 0


def test_a_failed_run_shows_its_cause(stack, rejected_file, page, screenshots):
    """The operator opens a failed import's run: its status and the step's cause are on the page."""
    page.set_default_timeout(LOAD_MS)
    page.goto(f"{stack.url}/runs/{rejected_file.run_id}")
    _dismiss_welcome(page)
    page.get_by_text("Failure", exact=True).first.wait_for(state="visible")
    page.get_by_text("missing required column(s)", exact=False).first.wait_for(state="visible")
    _shot(page, screenshots, "08-run-failure")
    assert (screenshots / "08-run-failure.png").stat().st_size > 0
