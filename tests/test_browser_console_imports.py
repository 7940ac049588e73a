"""An import from the console in a real headless Chromium, with everything a publisher
runs: ``letterpress serve`` in its own process with Redis, a Celery worker in a process
of its own (the task is given the job's id; both share the data directory), SQLite.

An operator uploads a CSV file of 150,000 long rows, three of them bad, large enough that
the worker validates it in processes of its own (``imports.PARALLEL_BYTES``); the page
shows the progress bar as the worker moves on, without a reload, then the report: the
three bad rows with their lines and what is wrong. axe-core checks the import pages at
1280 and 375 pixels, and neither scrolls sideways on a phone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from pipeline.audience import imports
from pipeline.people import users
from pipeline.statuses import Role
from tests.cluster import Double
from tests.conftest import CONTENT
from tests.service import RunningService, with_workers
from tests.test_browser import browser, open_page
from tests.test_browser_console import PASSWORD, AxeChecks, axe_script, sign_in_by_keyboard
from tests.test_browser_service import PHONE_WIDTH

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser"]  # a fixture, imported for pytest

ROWS = 150_000  # enough that the import lasts a few of the page's one-second polls
PLAN = "gold, renewed yearly; " * 6  # long rows: the file is over PARALLEL_BYTES
BAD = {  # line in the file -> the row there
    2_001: f'not-an-address,Nobody,"{PLAN}"',
    20_001: f'reader17@example.com,Reader again,"{PLAN}"',
    29_999: f'reader29999@example.com,Reader,"{PLAN}",extra',
}


def big_file() -> bytes:
    lines = ["email,name,plan"]
    for line in range(2, ROWS + 2):
        lines.append(BAD.get(line) or f'reader{line}@example.com,Reader number {line},"{PLAN}"')
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def publisher(
    tmp_path: Path, sqlite_url: str, redis_url: str, redis_client: object
) -> Iterator[RunningService]:
    """The service and one worker, sharing the database, Redis and the data directory."""
    shared = {"content_dir": str(CONTENT), "data_dir": str(tmp_path / "data")}
    double = Double(tmp_path / "double.log")
    service_settings = {"console_totp_roles": []}
    try:
        with with_workers(
            tmp_path, sqlite_url, redis_url, double, shared, service_settings
        ) as started:
            svc, cluster = started
            cluster.worker(concurrency=1)
            yield svc
    finally:
        double.close()  # after the workers and the service have stopped


def test_an_upload_with_bad_rows_shows_progress_then_the_report(
    publisher: RunningService, browser: Browser, tmp_path: Path
) -> None:
    svc = publisher
    content = big_file()
    assert len(content) > imports.PARALLEL_BYTES
    users.add(svc.engine, "opal@example.com", Role.OPERATOR, PASSWORD, name="Opal Operator")
    with open_page(browser) as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in_by_keyboard(page, svc.url, "opal@example.com")
        nav = page.get_by_role("navigation", name="Console")
        nav.get_by_role("link", name="Import and export").click()
        chosen = tmp_path / "readers.csv"
        chosen.write_bytes(content)
        page.get_by_label("CSV file", exact=True).set_input_files(chosen)
        page.get_by_role("button", name="Upload and import").click()
        expect(page).to_have_url(re.compile(r"/admin/imports/\d+$"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Import 1: readers.csv")

        # The bar moves while the worker imports, and the page is never reloaded.
        bar = page.get_by_label("Rows read")
        expect(bar).to_be_visible()
        expect(page.locator("[data-status]")).to_have_text("running", timeout=20_000)
        expect(bar).to_have_attribute("max", str(ROWS))
        page.evaluate("() => { window.notReloaded = true }")
        expect(page.locator("#import-count")).to_contain_text(f"of about {ROWS:,} rows")

        expect(page.locator("[data-status]")).to_have_text("done", timeout=30_000)
        assert page.evaluate("() => window.notReloaded") is True
        expect(bar).to_have_attribute("value", str(ROWS))
        expect(page.locator("#import-count")).to_have_text(f"{ROWS:,} of {ROWS:,} rows (100%)")
        expect(page.get_by_text(f"Done: imported {ROWS:,} rows: {ROWS - 3:,} new")).to_be_visible()
        expect(page.get_by_role("heading", name="Bad rows: 3, not imported")).to_be_visible()
        rows = page.locator("#bad-rows tbody tr")
        expect(rows).to_have_count(3)
        expect(rows.locator("td:first-child")).to_have_text(["2001", "20001", "29999"])
        expect(rows.nth(0)).to_contain_text("not-an-address")
        expect(rows.nth(1)).to_contain_text("reader17@example.com is repeated")
        expect(rows.nth(2)).to_contain_text("4 fields")
        link = page.get_by_role("link", name="Download every bad row (CSV: line, message)")
        with page.expect_download() as download:
            link.click()
        report = Path(download.value.path()).read_text().splitlines()
        assert [r.split(",", 1)[0] for r in report] == ["line", "2001", "20001", "29999"]
        assert errors == []
        state = page.context.storage_state()

    script = axe_script()
    axe = AxeChecks(script, tmp_path)
    for width in (1280, PHONE_WIDTH):
        context = browser.new_context(
            viewport={"width": width, "height": 800}, bypass_csp=True, storage_state=state
        )
        try:
            page = context.new_page()
            page.goto(svc.url + "/admin/imports")
            expect(page.get_by_role("link", name="Import 1")).to_be_visible()
            axe.check(page, "imports", width)
            page.goto(svc.url + "/admin/imports/1")
            check_job(page, axe, width)
        finally:
            context.close()
    assert axe.problems() == {}


def check_job(page: Page, axe: AxeChecks, width: int) -> None:
    expect(page.locator("#bad-rows")).to_be_visible()
    axe.check(page, "import-job", width)
