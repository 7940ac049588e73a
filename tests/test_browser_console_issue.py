"""axe-core on every state of an issue's page in the editors' console, at desktop and
phone widths, in a real headless Chromium: a draft as an editor and as an author (the
controls disabled, with their reasons), a test send's result, a refused schedule, the
schedule confirmation, a scheduled issue and its pause confirmation, and a sent issue's
report with failures, clicks and a batch in doubt. None of them may scroll sideways."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, expect

from pipeline.sending import issues
from pipeline.statuses import BatchStatus, DeliveryStatus, Role
from pipeline.store import db
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
from tests.test_console_issue import new_issue, send_due
from tests.test_service import service_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser", "service_for"]  # fixtures, imported for pytest


def a_sent_issue_with_trouble(svc: RunningService, url: str) -> int:
    """Sent to 60 readers in two batches; then, as the provider and the workers would
    have left it, three failed deliveries and the second batch in doubt."""
    issue_id = new_issue(svc, url, 60)
    issues.schedule(svc.engine, issue_id, None)
    assert send_due(svc) == [issue_id]
    d, b = db.deliveries.c, db.batches.c
    with svc.engine.begin() as conn:
        conn.execute(
            sa.update(db.deliveries)
            .where(d.issue_id == issue_id, d.subscriber_id.in_([1, 2, 3]))
            .values(status=DeliveryStatus.FAILED, reason="550 5.1.1 mailbox unavailable")
        )
        conn.execute(
            sa.update(db.batches)
            .where(b.issue_id == issue_id, b.seq == 2)
            .values(status=BatchStatus.AMBIGUOUS, error="the connection broke off")
        )
    return issue_id


def test_every_state_of_an_issue_page_passes_axe_at_both_widths(
    sqlite_url: str, service_for: Callable[..., RunningService], browser: Browser, tmp_path: Path
) -> None:
    script = axe_script()
    svc = service_for(sqlite_url, console_totp_roles=[])
    add_user(svc, "edna@example.com", Role.EDITOR, "Edna Editor")
    add_user(svc, "arthur@example.com", Role.AUTHOR, "Arthur Author")
    sent_id = a_sent_issue_with_trouble(svc, sqlite_url)
    axe = AxeChecks(script, tmp_path)
    for width in (1280, PHONE_WIDTH):

        def check(page: Page, name: str, width: int = width) -> None:
            axe.check(page, name, width)

        draft_id = issues.create(
            svc.engine,
            subject=f"A draft at {width}",
            audience=("main",),
            articles=issues.get(svc.engine, sent_id).articles,
        )
        with csp_free_page(browser, width) as page:
            sign_in_by_keyboard(page, svc.url, "edna@example.com")
            expect(page).to_have_url(svc.url + "/admin/")
            page.goto(f"{svc.url}/admin/issues/{draft_id}")
            check(page, "draft")
            page.get_by_label("Addresses").fill("proof@example.net, not an address")
            page.get_by_role("button", name="Send test").click()
            expect(page.get_by_role("alert")).to_be_visible()
            check(page, "test-refused")
            page.get_by_label("Addresses").fill("proof@example.net")
            page.get_by_role("button", name="Send test").click()
            expect(page.locator(".result")).to_contain_text("Sent")
            check(page, "test-sent")
            page.get_by_label("At a date and time").check()
            page.get_by_label("Date", exact=True).fill("2020-01-01")
            page.get_by_label("Time", exact=True).fill("07:00")
            page.get_by_role("button", name="Review and schedule").click()
            expect(page.get_by_role("alert")).to_contain_text("has already passed")
            check(page, "schedule-refused")
            page.get_by_label("Date", exact=True).fill("2099-12-24")
            page.get_by_label("Time zone").fill("Europe/London")
            page.get_by_role("button", name="Review and schedule").click()
            expect(page.locator("#sentence")).to_contain_text("London time")
            check(page, "schedule-confirm")
            page.get_by_role("button", name="Confirm: schedule it").click()
            expect(page.locator("#progress [data-status]")).to_have_text("scheduled")
            check(page, "scheduled")
            page.get_by_role("link", name="Pause…").click()
            expect(page.locator("#does")).to_be_visible()
            check(page, "pause-confirm")
            page.goto(f"{svc.url}/admin/issues/{sent_id}")
            expect(page.locator("#failures tbody tr")).to_have_count(3)
            expect(page.locator("#reconcile-sent")).to_be_visible()
            check(page, "report")
        with csp_free_page(browser, width) as page:
            sign_in_by_keyboard(page, svc.url, "arthur@example.com")
            expect(page).to_have_url(svc.url + "/admin/")
            other = issues.create(
                svc.engine,
                subject="The author's",
                audience=("main",),
                articles=issues.get(svc.engine, sent_id).articles,
            )
            page.goto(f"{svc.url}/admin/issues/{other}")
            expect(page.get_by_role("button", name="Review and schedule")).to_be_disabled()
            check(page, "draft-author")
            page.goto(f"{svc.url}/admin/issues/{sent_id}")
            expect(page.locator("#reconcile-sent")).to_be_disabled()
            check(page, "report-author")
    assert len(axe.found) == 2 * 10
    assert axe.problems() == {}
