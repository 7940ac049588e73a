"""The operators' dashboard in a real headless Chromium, against ``letterpress serve``,
Redis, a SQLite database and a real Celery worker process sending through the SendGrid
API of the loopback provider double.

An operator signs in with the keyboard and opens Operations. The worker is there with
how many tasks it runs at once; an issue is scheduled; the send shows up and moves on
the page without a reload (htmx swaps the live part in every 5 seconds) until it is
gone from the sends, and the chart's table counts what was sent. axe-core finds
nothing on the page at 1280 and 375 px, and neither width scrolls sideways.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef
from pipeline.statuses import Role
from tests.cluster import Cluster, Double, seed_subscribers, wait_for
from tests.conftest import CONTENT, SEEDS
from tests.service import RunningService, with_workers
from tests.test_browser import browser, open_page
from tests.test_browser_console import (
    AxeChecks,
    axe_script,
    csp_free_page,
    sign_in_by_keyboard,
)
from tests.test_console import add_user
from workers.broker import CeleryBroker

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser"]  # a fixture, imported for pytest

READERS = 150  # three batches of 50 at 25 a second: about six seconds of sending


@pytest.fixture
def publisher(
    tmp_path: Path, sqlite_url: str, redis_url: str, redis_client: Any
) -> Iterator[tuple[RunningService, Cluster]]:
    double = Double(tmp_path / "double.log")
    sending = {
        "provider": "sendgrid",
        "sendgrid_base_url": double.url,
        "sender_email": "newsletter@news.example.org",
        "content_dir": str(CONTENT),
        "batch_size": 50,
        "send_rate": 25.0,
        "send_burst": 5,
    }
    try:
        with with_workers(tmp_path, sqlite_url, redis_url, double, sending) as started:
            svc, cluster = started
            cluster.worker("w1", concurrency=2)
            cluster.beat()
            yield svc, cluster
    finally:
        double.close()  # after the workers and the service have stopped


def test_an_operator_watches_workers_and_a_send_on_the_dashboard(
    publisher: tuple[RunningService, Cluster], sqlite_url: str, browser: Browser, tmp_path: Path
) -> None:
    svc, cluster = publisher
    seed_subscribers(sqlite_url, READERS)
    add_user(svc, "otto@example.com", Role.OPERATOR)
    broker = CeleryBroker(cluster.settings)
    wait_for(lambda: bool(broker.workers_online()), 60, "the worker to answer")
    axe = AxeChecks(axe_script(), tmp_path)

    with open_page(browser) as page, csp_free_page(browser, 1280) as checked:
        sign_in_by_keyboard(checked, svc.url, "otto@example.com")  # for axe, an inline script
        expect(checked).to_have_url(svc.url + "/admin/")
        sign_in_by_keyboard(page, svc.url, "otto@example.com")
        page.get_by_role("navigation", name="Console").get_by_role(
            "link", name="Operations"
        ).click()
        expect(page).to_have_url(f"{svc.url}/admin/operations")
        workers = page.locator("#workers")
        expect(workers).to_contain_text("w1@", timeout=15_000)
        row = workers.locator("tbody tr").first
        expect(row.locator("td").nth(1)).to_have_text("2")  # runs two at once
        expect(page.locator("#no-sends")).to_be_visible()

        issue_id = issues.create(
            svc.engine,
            subject="K2 on the dashboard",
            audience=("main",),
            articles=[ArticleRef(SEEDS[0], True)],
        )
        issues.schedule(svc.engine, issue_id, None)  # for now, as the console does
        send = page.locator(f"#send-{issue_id}")
        expect(send).to_contain_text("K2 on the dashboard", timeout=15_000)  # no reload
        expect(send).to_contain_text(f"of {READERS}")
        checked.goto(svc.url + "/admin/operations")
        expect(checked.locator(f"#send-{issue_id}")).to_be_visible()
        axe.check(checked, "operations-sending", 1280)

        wait_for(
            lambda: issues.get(svc.engine, issue_id).status == "sent", 60, "the send to finish"
        )
        expect(send).to_have_count(0, timeout=15_000)  # done: gone from the sends
        expect(page.locator("#no-sends")).to_be_visible()
        page.get_by_text("The figures as a table").click()
        expect(page.locator("#chart-table tbody tr")).to_have_count(30)

    with csp_free_page(browser, 375) as phone:
        sign_in_by_keyboard(phone, svc.url, "otto@example.com")
        expect(phone).to_have_url(svc.url + "/admin/")
        phone.goto(svc.url + "/admin/operations")
        expect(phone.locator("#workers")).to_contain_text("w1@")
        axe.check(phone, "operations", 375)

    assert axe.problems() == {}
