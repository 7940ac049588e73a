"""Readers' replies in a real Chromium, on the built site served by ``letterpress serve``
itself (``site_dir``: one origin, under the site's strict Content-Security-Policy).

One reader replies without JavaScript and is told the reply awaits moderation; a
moderator approves it in the console and it is on the page; the same reader, with
JavaScript, replies again and it appears at once, in place; a second reader answers
it, the moderator approves, and the first reader gets an email; bots (the honeypot
filled, or too fast) are refused and nothing is stored; a banned address is refused;
erasing the first reader's data takes their replies off the page. axe-core checks the
article page, the service's replies page and the console's, at 1280 and 375 px.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, expect

from pipeline.audience import consent
from pipeline.site.build import Builder
from pipeline.statuses import Role
from pipeline.store import db
from tests.conftest import CONTENT, SEEDS
from tests.service import RunningService
from tests.test_browser import CHROMIUM_ARGS, browser
from tests.test_browser_console import (
    AxeChecks,
    add_user,
    axe_script,
    csp_free_page,
    sign_in_by_keyboard,
)
from tests.test_browser_service import PHONE_WIDTH, watched
from tests.test_service import mails, service_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser", "service_for"]  # fixtures, imported for pytest

SLUG = SEEDS[1]
MIN_SECONDS = 1.5
ANN = "ann@example.org"
BOB = "bob@example.org"

assert CHROMIUM_ARGS  # the same Chromium the other browser tests drive


@pytest.fixture
def site(tmp_path: Path, service_for: Callable[..., RunningService]) -> RunningService:
    out = tmp_path / "site"
    out.mkdir()
    content = tmp_path / "content"
    shutil.copytree(CONTENT, content)
    svc = service_for(
        f"sqlite:///{tmp_path / 'letterpress.db'}",
        content_dir=str(content),
        site_dir=str(out),
        reply_min_seconds=MIN_SECONDS,
    )
    # Built with the service's own settings: its address, its secret (the form's token).
    report = Builder(svc.settings, out, content_dir=content).build()
    assert report.ok, report.problems
    return svc


def replies(svc: RunningService) -> list[Any]:
    with svc.engine.connect() as conn:
        return list(conn.execute(sa.select(db.replies).order_by(db.replies.c.id)).all())


@contextmanager
def without_javascript(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def fill(page: Page, name: str, email: str, comment: str, notify: bool = False) -> None:
    form = page.locator("#reply-form")
    form.get_by_label(re.compile(r"^Comment\s*\*?$")).fill(comment)
    form.get_by_label(re.compile(r"^Name\s*\*?$")).fill(name)
    form.get_by_label(re.compile(r"^Email\s*\*?$")).fill(email)
    if notify:
        form.get_by_label("Email me when someone answers my reply").check()


def loaded(page: Page, svc: RunningService) -> None:
    """The article page with its replies loaded in place (the token swapped in)."""
    page.goto(f"{svc.url}/articles/{SLUG}/")
    expect(page.locator("[data-replies] a", has_text="Read the readers' replies")).to_have_count(0)


def approve(page: Page, svc: RunningService, reply_id: int) -> None:
    page.goto(f"{svc.url}/admin/replies")
    page.locator(f"#pick-{reply_id}").check()
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_have_text(re.compile(r"1 reply approved"))


def test_a_reader_replies_a_moderator_approves_and_the_page_shows_it(
    site: RunningService, browser: Browser, tmp_path: Path
) -> None:
    svc = site
    ann_sid = consent.signup(svc.engine, svc.settings, ANN, "Ann", []).subscriber_id
    consent.confirm(svc.engine, ann_sid)  # a subscriber: her notices need no confirming
    add_user(svc, "mod@example.com", Role.EDITOR, name="Mo")

    # 1. Without JavaScript: the form posts to the service, which says it waits.
    with without_javascript(browser) as page:
        page.goto(f"{svc.url}/articles/{SLUG}/")
        expect(page.get_by_role("heading", name="Leave a Reply")).to_be_visible()
        expect(
            page.get_by_text(
                "Your email address will not be published. Required fields are marked *"
            )
        ).to_be_visible()
        fill(page, "Ann Reader", ANN, "Does K2 need vitamin D3 <b>too</b>?", notify=True)
        page.get_by_role("button", name="Post Reply").click()
        expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
        expect(page.get_by_text("your reply awaits moderation")).to_be_visible()
    (first,) = replies(svc)
    assert (first.status, first.email, first.notify) == ("pending", ANN, "on")

    with watched(browser, tmp_path) as moderator, watched(browser, tmp_path) as reader:
        mod = moderator.page
        sign_in_by_keyboard(mod, svc.url, "mod@example.com")
        expect(mod).to_have_url(re.compile(r"/admin/$"))
        # 2. The moderator approves it in the console.
        mod.goto(f"{svc.url}/admin/replies")
        expect(mod.locator(".reply-text")).to_contain_text("Does K2 need vitamin D3 <b>too</b>?")
        approve(mod, svc, first.id)

        # 3. It is on the page (loaded in place), escaped.
        page = reader.page
        loaded(page, svc)
        ann_reply = page.locator(f"#reply-{first.id}")
        expect(ann_reply).to_contain_text("Does K2 need vitamin D3 <b>too</b>?")
        expect(ann_reply).to_contain_text("Ann Reader")
        assert ANN not in page.content()

        # 4. Her next reply, with JavaScript, is published at once, in place.
        time.sleep(MIN_SECONDS)
        fill(page, "Ann Reader", ANN, "Found it: K2 with D3 works best, see https://example.org/k2")
        page.get_by_role("button", name="Post Reply").click()
        expect(page.get_by_role("status")).to_have_text("Thank you: your reply is published.")
        assert page.url.endswith(f"/articles/{SLUG}/")  # no page was loaded
        second = replies(svc)[-1]
        assert second.status == "approved"
        link = page.locator(f"#reply-{second.id} a", has_text="https://example.org/k2")
        expect(link).to_have_attribute("rel", "ugc nofollow noopener")

        # 5. Bob answers her first reply: he is new, so it waits; approved, Ann is told.
        bob = page.context.browser.new_context()  # type: ignore[union-attr]
        try:
            bob_page = bob.new_page()
            loaded(bob_page, svc)
            bob_page.get_by_role("button", name="Reply to Ann Reader").first.click()
            expect(bob_page.locator("[data-answering]")).to_contain_text("Answering Ann Reader.")
            expect(bob_page.get_by_label(re.compile(r"^Comment"))).to_be_focused()
            time.sleep(MIN_SECONDS)
            fill(bob_page, "Bob", BOB, "Yes, and magnesium helps.")
            bob_page.get_by_role("button", name="Post Reply").click()
            expect(bob_page.get_by_role("status")).to_have_text(re.compile("awaits moderation"))
            bob_reply = replies(svc)[-1]
            assert (bob_reply.answers_id, bob_reply.status) == (first.id, "pending")
            approve(mod, svc, bob_reply.id)
            (notice,) = mails(svc.settings.outbox_dir / "reply-notice")
            assert ANN in str(notice["To"]) and "Bob answered your reply" in str(notice["Subject"])

            # 6. Bots: the honeypot filled, or sent quicker than anyone types.
            count = len(replies(svc))
            loaded(bob_page, svc)
            fill(bob_page, "Bot", "bot@example.net", "Great post! https://spam.example")
            bob_page.get_by_role("button", name="Post Reply").click()
            expect(bob_page.get_by_role("status")).to_have_text(re.compile("quicker than anyone"))
            reader.allow(400, f"/api/replies/{SLUG}")
            time.sleep(MIN_SECONDS)
            bob_page.locator(".reply-extra input").evaluate(
                "(input) => { input.value = 'http://spam.example' }"
            )
            bob_page.get_by_role("button", name="Post Reply").click()
            expect(bob_page.get_by_role("status")).to_have_text("Your reply could not be accepted.")
            assert len(replies(svc)) == count

            # 7. The moderator bans Bob's address: his next reply is refused.
            mod.goto(f"{svc.url}/admin/replies?status=approved")
            mod.locator(f"#pick-{bob_reply.id}").check()
            mod.get_by_role("button", name="Ban the address").click()
            expect(mod.get_by_role("status")).to_have_text(re.compile("banned by address"))
            loaded(bob_page, svc)
            time.sleep(MIN_SECONDS)
            fill(bob_page, "Bob", BOB, "Me again")
            bob_page.get_by_role("button", name="Post Reply").click()
            expect(bob_page.get_by_role("status")).to_have_text(
                "Replies from this address are not accepted."
            )
            assert len(replies(svc)) == count
        finally:
            bob.close()

        # 8. Ann erases her data: her replies leave the page; Bob's answer stays.
        page.goto(f"{svc.url}/delete/{svc.signer.sign_dated('delete', ann_sid)}")
        page.get_by_role("button", name="Delete my data").click()
        expect(page.get_by_role("heading", name="Your data is deleted")).to_be_visible()
        time.sleep(1.1)  # the service keeps an article's replies for a second
        loaded(page, svc)
        expect(page.locator(f"#reply-{bob_reply.id}")).to_contain_text("Yes, and magnesium helps.")
        expect(page.locator(f"#reply-{first.id}")).to_have_count(0)
        expect(page.locator(f"#reply-{second.id}")).to_have_count(0)
    assert [r.email for r in replies(svc)] == [BOB]


def test_the_reply_pages_pass_axe_at_desktop_and_phone_widths(
    site: RunningService, browser: Browser, tmp_path: Path
) -> None:
    svc = site
    script = axe_script()
    add_user(svc, "mod@example.com", Role.EDITOR, name="Mo")
    with watched(browser, tmp_path) as seen:
        page = seen.page
        loaded(page, svc)
        time.sleep(MIN_SECONDS)
        fill(page, "Ann Reader", ANN, "A question for the axe checks")
        page.get_by_role("button", name="Post Reply").click()
        expect(page.get_by_role("status")).to_have_text(re.compile("awaits moderation"))
    axe = AxeChecks(script, tmp_path)
    for width in (1280, PHONE_WIDTH):
        with csp_free_page(browser, width) as page:
            loaded(page, svc)
            axe.check(page, "article", width)
            page.goto(f"{svc.url}/replies/{SLUG}")
            axe.check(page, "replies-page", width)
            sign_in_by_keyboard(page, svc.url, "mod@example.com")
            expect(page).to_have_url(re.compile(r"/admin/$"))
            page.goto(f"{svc.url}/admin/replies")
            expect(page.locator(".held .reply")).to_have_count(1)
            axe.check(page, "console-replies", width)
            page.locator(".held .reply input[type=checkbox]").check()
            page.get_by_role("button", name="Erase the writers' replies").click()
            expect(page.get_by_role("heading", level=1)).to_have_text(
                "Erase these writers' replies?"
            )
            axe.check(page, "console-reply-erase", width)
    assert axe.problems() == {}
