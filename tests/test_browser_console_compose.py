"""Composing an issue in a real headless Chromium (Debian's, through Playwright): an
editor picks the two seed articles with the form's buttons, types, and the preview
beside the form follows without the page reloading, at 600 and 375 px; then axe-core
checks the articles, issues and compose pages at desktop and phone widths."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from pipeline.sending import issues
from pipeline.statuses import Role
from tests.conftest import SEEDS
from tests.service import RunningService
from tests.test_browser import browser, open_page
from tests.test_browser_console import (
    PHONE_WIDTH,
    AxeChecks,
    add_user,
    axe_script,
    csp_free_page,
    looks_right,
    sign_in_by_keyboard,
)
from tests.test_service import service_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser", "service_for"]  # fixtures, imported for pytest

FIRST_TITLE = "Vitamin K2 for Directing Calcium to Bones"
SECOND_TITLE = "The Role of Vitamin K2 in Calcium Distribution"


def test_an_editor_composes_and_the_preview_follows_without_a_reload(
    sqlite_url: str, service_for: Callable[..., RunningService], browser: Browser, tmp_path: Path
) -> None:
    svc = service_for(sqlite_url, console_totp_roles=[])
    add_user(svc, "edna@example.com", Role.EDITOR, "Edna Editor")
    with open_page(browser) as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in_by_keyboard(page, svc.url, "edna@example.com")
        expect(page).to_have_url(svc.url + "/admin/")
        page.get_by_role("navigation", name="Console").get_by_role("link", name="Issues").click()
        page.get_by_role("link", name="Compose a new issue").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Compose a new issue")

        # The buttons are plain form submits: each comes back with the change.
        page.get_by_label("Add an article").select_option(label=FIRST_TITLE)
        page.get_by_role("button", name="Add", exact=True).click()
        page.get_by_label("Add an article").select_option(label=SECOND_TITLE)
        page.get_by_role("button", name="Add", exact=True).click()
        expect(page.locator(".pick-title")).to_have_text([FIRST_TITLE, SECOND_TITLE])
        page.get_by_role("button", name=f"Up {SECOND_TITLE}").click()
        expect(page.locator(".pick-title")).to_have_text([SECOND_TITLE, FIRST_TITLE])
        page.get_by_label(f"In the email for {FIRST_TITLE}").select_option("full")

        # Typing: the preview follows, and the page is the same page (no reload).
        page.evaluate("() => { window.stillHere = true }")
        page.get_by_label("Subject").fill("K2, twice over")
        page.get_by_label("Intro").fill("<p>Typed a moment ago</p>")
        expect(page.locator("#inbox .subject")).to_have_text("K2, twice over")
        for kind in ("desktop", "mobile"):
            frame = page.frame_locator(f"iframe.frame-{kind}")
            expect(frame.locator("body")).to_contain_text("Typed a moment ago")
        assert page.evaluate("() => window.stillHere") is True
        widths = page.evaluate(
            "() => [...document.querySelectorAll('#preview iframe')].map(f => f.clientWidth)"
        )
        assert [round(w) for w in widths] == [600, 375] or widths[0] >= 590, widths
        assert page.locator("#preview iframe").first.get_attribute("sandbox") == ""
        expect(page.locator("#size")).to_contain_text("of Gmail's clip")
        expect(page.locator("#notices")).to_contain_text("Affiliate disclosure")
        looks_right(page, "compose", tmp_path / "shots")

        page.get_by_role("button", name="Create the draft").click()
        expect(page.get_by_role("status").first).to_contain_text("Saved draft issue")
        assert not errors, errors
    (issue,) = issues.list_issues(svc.engine)
    assert issue.subject == "K2, twice over"
    assert [(a.slug, a.full) for a in issue.articles] == [(SEEDS[1], False), (SEEDS[0], True)]


def test_the_compose_pages_pass_axe_at_desktop_and_phone_widths(
    sqlite_url: str, service_for: Callable[..., RunningService], browser: Browser, tmp_path: Path
) -> None:
    script = axe_script()
    svc = service_for(sqlite_url, console_totp_roles=[])
    add_user(svc, "edna@example.com", Role.EDITOR, "Edna Editor")
    issues.create(svc.engine, subject="A draft", articles=[issues.ArticleRef(SEEDS[0], True)])
    axe = AxeChecks(script, tmp_path)
    for width in (1280, PHONE_WIDTH):
        with csp_free_page(browser, width) as page:
            sign_in_by_keyboard(page, svc.url, "edna@example.com")
            expect(page).to_have_url(svc.url + "/admin/")
            for name, path in (
                ("articles", "/admin/articles"),
                ("issues", "/admin/issues"),
                ("compose", "/admin/issues/new"),
                ("edit", "/admin/issues/1/edit"),
            ):
                page.goto(svc.url + path)
                expect(page.locator("h1")).to_have_count(1)
                if name == "edit":
                    expect(page.locator("#preview iframe")).to_have_count(2)
                axe.check(page, name, width)
    assert len(axe.found) == 2 * 4
    assert axe.problems() == {}
