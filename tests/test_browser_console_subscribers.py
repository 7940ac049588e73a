"""The console's subscribers in a real headless Chromium, against the real service
(``letterpress serve``, SQLite, Redis) with 100,000 subscribers: an operator finds one
by the start of their address (htmx asks as they type, under the console's CSP), opens
their page, whose history shows the delivery of a real send and the click on a link of
the sent message (through the service's /r/ redirect), and erases them after the
confirmation. axe-core checks the search, the subscriber's page, the erase
confirmation, the suppression list and a refused search at 1280 and 375 pixels; none
scrolls sideways.

The HTTP tests (``test_console_subscribers.py``) cover the rest on both databases.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from pipeline.audience import changes, directory, feedback
from pipeline.audience.webhooks import Event
from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef
from pipeline.statuses import Role
from tests.cluster import seed_subscribers
from tests.conftest import SEEDS
from tests.service import RunningService
from tests.test_browser import browser
from tests.test_browser_console import (
    PHONE_WIDTH,
    AxeChecks,
    add_user,
    axe_script,
    csp_free_page,
    sign_in_by_keyboard,
)
from tests.test_browser_service import watched
from tests.test_console_issue import send_due
from tests.test_service import body, mails, service_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser", "service_for"]  # fixtures, imported for pytest

CROWD = 100_000
TARGET = "walk.target@example.org"
TWIN = "walk.twin@example.org"  # the same start, until the "ta"


def one_sent_to_two(svc: RunningService) -> tuple[int, int]:
    """An issue sent to the list ``vip`` (the target and the twin) through the outbox;
    the provider reports the target's delivery and the twin's hard bounce; the target
    follows a link of the message they were sent. The target's id and the issue's."""
    target = changes.add(
        svc.engine,
        TARGET,
        via=changes.COMMAND_LINE,
        name="Walk Target",
        lists=["vip"],
        status="active",
        attributes={"plan": "yearly"},
    ).subscriber_id
    twin = changes.add(
        svc.engine, TWIN, via=changes.COMMAND_LINE, lists=["vip"], status="active"
    ).subscriber_id
    issue_id = issues.create(
        svc.engine,
        subject="Vitamin K2 this week",
        audience=("vip",),
        articles=[ArticleRef(SEEDS[0], True)],
    )
    issues.schedule(svc.engine, issue_id, None)
    assert send_due(svc) == [issue_id]
    feedback.apply(
        svc.engine,
        svc.settings,
        "mailgun",
        [
            Event("d1", "delivered", TARGET, target, issue_id),
            Event("b1", "bounced", TWIN, twin, issue_id, "550 5.1.1 mailbox unavailable"),
        ],
    )
    sent = mails(svc.settings.outbox_dir / f"issue-{issue_id}", count=2)
    message = next(m for m in sent if TARGET in str(m["To"]))
    link = re.findall(r'href="(http://[^"]+/r/[^"]+)"', body(message, "html"))[0]
    assert requests.get(link, allow_redirects=False, timeout=10).status_code == 302
    return target, issue_id


def test_an_operator_finds_one_among_100000_sees_a_delivery_and_a_click_and_erases_them(
    sqlite_url: str, service_for: Callable[..., RunningService], browser: Browser, tmp_path: Path
) -> None:
    script = axe_script()
    svc = service_for(sqlite_url, console_totp_roles=[])
    seed_subscribers(sqlite_url, CROWD)
    target, issue_id = one_sent_to_two(svc)
    add_user(svc, "opal@example.com", Role.OPERATOR, "Opal Operator")

    axe = AxeChecks(script, tmp_path)
    for width in (1280, PHONE_WIDTH):

        def check(page: Page, name: str, width: int = width) -> None:
            axe.check(page, name, width)

        with csp_free_page(browser, width) as page:
            sign_in_by_keyboard(page, svc.url, "opal@example.com")
            expect(page).to_have_url(svc.url + "/admin/")
            page.goto(f"{svc.url}/admin/subscribers?q=walk.")
            expect(page.locator("#found tbody tr")).to_have_count(2)
            check(page, "subscribers")
            page.goto(f"{svc.url}/admin/subscribers?from=2026-99-01")
            expect(page.get_by_role("alert")).to_contain_text("is not a day")
            check(page, "subscribers-refused")
            page.goto(f"{svc.url}/admin/subscribers/{target}")
            expect(page.locator("#history tbody tr").first).to_be_visible()
            check(page, "subscriber")
            page.goto(f"{svc.url}/admin/subscribers/{target}/erase")
            check(page, "subscriber-erase")
            page.goto(f"{svc.url}/admin/suppressions")
            expect(page.locator("#suppressed tbody tr")).to_have_count(1)
            check(page, "suppressions")
    assert len(axe.found) == 2 * 5
    assert axe.problems() == {}

    # The walk, under the console's CSP, as a person does it.
    with watched(browser, tmp_path) as w:
        page = w.page
        sign_in_by_keyboard(page, svc.url, "opal@example.com")
        expect(page).to_have_url(svc.url + "/admin/")
        nav = page.get_by_role("navigation", name="Console")
        nav.get_by_role("link", name="Subscribers").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Subscribers")
        expect(page.locator("#found tbody tr")).to_have_count(50)  # newest first
        address = page.url
        page.get_by_label("Address").press_sequentially("walk.t", delay=30)
        results = page.locator("#found tbody tr")
        expect(results).to_have_count(2)  # htmx, as typed: the page did not reload
        page.get_by_label("Address").press_sequentially("a", delay=30)
        expect(results).to_have_count(1)
        assert page.url == address
        page.get_by_role("link", name=TARGET).click()

        expect(page.get_by_role("heading", level=1)).to_have_text(TARGET)
        expect(page.locator("#subscriber-lists")).to_have_text("vip")
        expect(page.locator("#attributes")).to_contain_text("yearly")
        history = page.locator("#history")
        expect(history.locator("tr.h-delivery")).to_contain_text("delivery: sent")
        expect(history.locator("tr.h-delivery")).to_contain_text(f"Issue {issue_id}")
        expect(history.locator("tr.h-report")).to_contain_text("mailgun reported delivered")
        expect(history.locator("tr.h-click")).to_have_count(1)
        expect(history.locator("tr.h-click")).to_contain_text(f"{svc.url}/")

        page.get_by_role("link", name="Erase…").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Erase {TARGET}?")
        assert directory.detail(svc.engine, target) is not None  # asking changes nothing
        page.get_by_role("button", name=f"Confirm: erase {TARGET}").click()
        expect(page.get_by_role("status")).to_have_text(
            "The subscriber is erased: nothing that names them is left."
        )
        page.get_by_label("Address").fill(TARGET)
        page.get_by_label("is exactly this").check()
        page.get_by_role("button", name="Search").click()
        expect(page.get_by_role("heading", level=2, name="Nobody matches")).to_be_visible()
    assert directory.detail(svc.engine, target) is None
