"""The subscriber service in a real headless Chromium, used the way a person uses it:
typing into the forms, ticking boxes, clicking buttons and the links of the emails.

``letterpress serve`` runs in its own process (``service_for`` from test_service) on
SQLite and Redis; the links come from the emails it writes to the outbox. Every page is
watched for console errors and failed requests, checked for basic accessibility (lang,
one h1, a label for every field) and photographed into the test's tmp_path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect

from pipeline.store import db
from tests.cluster import seed_subscribers
from tests.service import RunningService
from tests.test_browser import browser, open_page, png_dimensions
from tests.test_service import body, issue_mail, mails, send_issue, service_for, status_of

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser", "service_for"]  # fixtures, imported for pytest

PHONE_WIDTH = 375

# Fields without a label: neither a <label> (for= or around it) nor an ARIA name.
UNLABELLED_JS = """() => Array.from(document.querySelectorAll('input, select, textarea'))
    .filter(el => el.type !== 'hidden')
    .filter(el => !Array.from(el.labels || []).some(l => l.textContent.trim())
        && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
    .map(el => el.outerHTML)"""


FAVICON = "/favicon.ico"


@dataclass
class Watched:
    """A page, and what happened while it was open."""

    page: Page
    shots: Path
    console: list[tuple[str, str, str]] = field(default_factory=list)  # type, text, url
    failed: list[tuple[str, str]] = field(default_factory=list)  # url, failure
    errors: list[str] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    allowed: set[tuple[int, str]] = field(default_factory=set)

    def allow(self, status: int, path: str) -> None:
        """An answer with this status is the expected one (Chromium logs every 4xx)."""
        self.allowed.add((status, path))

    def problems(self) -> list[str]:
        found = [f"page error: {e}" for e in self.errors]
        for kind, text, url in self.console:
            path = urlsplit(url).path
            status = re.search(r"status of (\d{3})", text)
            if status and (int(status.group(1)), path) in self.allowed:
                continue
            found.append(f"console {kind}: {text} ({url})")
        for url, failure in self.failed:
            # A link answered as an attachment ends its navigation there: not a failure.
            if not (url in self.downloads and failure == "net::ERR_ABORTED"):
                found.append(f"request failed: {url} {failure}")
        return found

    def check(self, name: str) -> None:
        """Basic accessibility, the stylesheet applied, and a screenshot named ``name``."""
        page = self.page
        lang = page.locator("html").get_attribute("lang")
        assert lang and lang.strip(), f"{name}: <html> has no lang"
        expect(page.locator("h1"), f"{name}: one h1").to_have_count(1)
        assert page.evaluate(UNLABELLED_JS) == [], f"{name}: fields without a label"
        for button in page.get_by_role("button").all():
            assert button.inner_text().strip(), f"{name}: a button without a name"
        # The stylesheet came through the Content-Security-Policy.
        expect(page.locator("body")).to_have_css("background-color", "rgb(250, 250, 247)")
        self.shots.mkdir(exist_ok=True)
        path = self.shots / f"{name}.png"
        width, height = png_dimensions(page.screenshot(path=path, full_page=True))
        viewport = page.viewport_size
        assert viewport is not None
        assert width == viewport["width"] and height > 100, (name, width, height)


@contextmanager
def watched(browser: Browser, tmp: Path, width: int = 1280) -> Iterator[Watched]:
    """A page in a fresh context; at the end, no console error or warning, no script
    error and no failed request."""
    with open_page(browser, width=width) as page:
        seen = Watched(page, tmp / "screenshots")

        def console(message: ConsoleMessage) -> None:
            if message.type in ("error", "warning"):
                url = message.location.get("url") or page.url
                seen.console.append((message.type, message.text, url))

        def failed(request: Request) -> None:
            seen.failed.append((request.url, request.failure or ""))

        page.on("console", console)
        page.on("pageerror", lambda error: seen.errors.append(str(error)))
        page.on("requestfailed", failed)
        page.on("download", lambda download: seen.downloads.append(download.url))
        yield seen
        problems = seen.problems()
        assert not problems, "\n".join(problems)


def confirm_link(svc: RunningService, address: str) -> str:
    for message in mails(svc.settings.outbox_dir / "signup-confirm"):
        if address in str(message["To"]):
            found = re.search(r"(http://\S+/confirm/\S+)", body(message, "plain"))
            assert found is not None
            return found.group(1)
    raise AssertionError(f"no confirmation email to {address}")


def preferences_link(svc: RunningService, issue_id: int, address: str) -> str:
    found = re.search(
        r"(http://\S+/preferences/\S+)", body(issue_mail(svc, issue_id, address), "plain")
    )
    assert found is not None
    return found.group(1)


def subscriber(svc: RunningService, address: str) -> Any:
    with svc.engine.connect() as conn:
        return conn.execute(
            sa.select(db.subscribers).where(db.subscribers.c.email == address)
        ).one()


def lists_of(svc: RunningService, address: str) -> list[str]:
    with svc.engine.connect() as conn:
        return list(
            conn.scalars(
                sa.select(db.lists.c.name)
                .join(db.memberships, db.memberships.c.list_id == db.lists.c.id)
                .join(db.subscribers, db.subscribers.c.id == db.memberships.c.subscriber_id)
                .where(db.subscribers.c.email == address)
                .order_by(db.lists.c.name)
            )
        )


def count_subscribers(svc: RunningService) -> int:
    with svc.engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(db.subscribers)) or 0)


# -- sign-up, confirmation, preferences, export -------------------------------------------------


def test_sign_up_confirm_and_choose_preferences(
    sqlite_url: str,
    service_for: Callable[..., RunningService],
    browser: Browser,
    tmp_path: Path,
) -> None:
    svc = service_for(sqlite_url)
    with watched(browser, tmp_path) as w:
        page = w.page
        page.goto(svc.url + "/subscribe")
        expect(page.get_by_role("heading", level=1)).to_have_text("Subscribe to Test Health")
        w.check("subscribe")

        page.get_by_label("Email address").fill("Ada@Example.com")
        page.get_by_label("Name").fill("Ada Lovelace")
        main, deals = (page.get_by_role("checkbox", name=n) for n in ("main", "deals"))
        expect(main).to_be_checked()
        expect(deals).to_be_checked()
        main.uncheck()
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
        expect(page.locator("p.message")).to_contain_text("confirm the subscription")
        w.check("check-your-inbox")
        assert status_of(svc, "ada@example.com") == "pending"

        # The link of the confirmation email shows a button, and changes nothing.
        page.goto(confirm_link(svc, "ada@example.com"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your subscription")
        w.check("confirm")
        assert status_of(svc, "ada@example.com") == "pending"
        page.get_by_role("button", name="Confirm my subscription").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed")
        w.check("subscribed")
        row = subscriber(svc, "ada@example.com")
        assert (row.status, row.name) == ("active", "Ada Lovelace")
        assert lists_of(svc, "ada@example.com") == ["deals"]

        page.get_by_role("link", name="Choose what you receive").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Your preferences")
        expect(page.get_by_text("For ada@example.com")).to_be_visible()
        w.check("preferences")

        # Change everything the form offers, then save.
        expect(page.get_by_label("Name", exact=True)).to_have_value("Ada Lovelace")
        page.get_by_label("Name", exact=True).fill("Ada King")
        page.get_by_role("checkbox", name="main").check()
        page.get_by_role("checkbox", name="deals").uncheck()
        page.get_by_label("Time zone").select_option("Europe/Paris")
        page.get_by_role("checkbox", name="Pause").check()
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status")).to_have_text("Saved.")
        w.check("preferences-saved")
        # The page shows what was saved.
        expect(page.get_by_label("Name", exact=True)).to_have_value("Ada King")
        expect(page.get_by_role("checkbox", name="main")).to_be_checked()
        expect(page.get_by_role("checkbox", name="deals")).not_to_be_checked()
        expect(page.get_by_label("Time zone")).to_have_value("Europe/Paris")
        expect(page.get_by_role("checkbox", name="Pause")).to_be_checked()
        row = subscriber(svc, "ada@example.com")
        assert (row.name, row.time_zone, bool(row.paused), row.status) == (
            "Ada King",
            "Europe/Paris",
            True,
            "active",
        )
        assert lists_of(svc, "ada@example.com") == ["main"]

        # Everything held about them, as a JSON download.
        with page.expect_download() as info:
            page.get_by_role("link", name="Download everything we hold about you").click()
        download = info.value
        assert download.failure() is None
        assert download.suggested_filename == "my-data.json"
        exported = json.loads(Path(download.path()).read_text(encoding="utf-8"))
        assert exported["email"] == "ada@example.com"
        assert exported["name"] == "Ada King"
        assert exported["lists"] == ["main"]
        expect(page.get_by_role("heading", level=1)).to_have_text("Your preferences")


def test_the_form_refuses_bad_addresses_and_keeps_what_was_typed(
    sqlite_url: str,
    service_for: Callable[..., RunningService],
    browser: Browser,
    tmp_path: Path,
) -> None:
    svc = service_for(sqlite_url)
    with watched(browser, tmp_path) as w:
        page = w.page
        page.goto(svc.url + "/subscribe")
        email = page.get_by_label("Email address")

        # Not an address at all: the browser's own validation keeps the form here.
        requests_sent: list[str] = []
        page.on("request", lambda r: requests_sent.append(r.method))
        email.fill("not-an-address")
        page.get_by_role("button", name="Subscribe").click()
        assert email.evaluate("el => el.validity.typeMismatch") is True
        assert "POST" not in requests_sent
        expect(page.get_by_role("heading", level=1)).to_have_text("Subscribe to Test Health")

        # An address the browser accepts (no dot after the @) but the server refuses.
        w.allow(400, "/subscribe")
        email.fill("bob@localhost")
        page.get_by_label("Name").fill("Bob Example")
        page.get_by_role("checkbox", name="main").uncheck()
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.get_by_role("button", name="Subscribe").click()
        assert answer.value.status == 400
        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("'bob@localhost' is not a valid email address")
        expect(alert).to_contain_text("It should have a period")
        w.check("subscribe-error")
        # The form comes back as it was sent.
        expect(page.get_by_label("Email address")).to_have_value("bob@localhost")
        expect(page.get_by_label("Name")).to_have_value("Bob Example")
        expect(page.get_by_role("checkbox", name="main")).not_to_be_checked()
        expect(page.get_by_role("checkbox", name="deals")).to_be_checked()
        assert count_subscribers(svc) == 0

        # Corrected, it goes through.
        page.get_by_label("Email address").fill("bob@example.com")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
        assert status_of(svc, "bob@example.com") == "pending"


# -- unsubscribe and deletion ---------------------------------------------------------------------


def test_unsubscribe_from_an_issue_and_delete_data(
    sqlite_url: str,
    service_for: Callable[..., RunningService],
    browser: Browser,
    tmp_path: Path,
) -> None:
    svc = service_for(sqlite_url)
    seed_subscribers(sqlite_url, 3)
    issue_id, _, _ = send_issue(svc)
    message = issue_mail(svc, issue_id, "reader2@example.com")
    unsubscribe = str(message["List-Unsubscribe"]).strip(" <>")
    assert unsubscribe.startswith(svc.url + "/unsubscribe/")

    with watched(browser, tmp_path) as w:
        page = w.page
        page.goto(unsubscribe)
        expect(page.get_by_role("heading", level=1)).to_have_text("Unsubscribe")
        expect(page.locator("main")).to_contain_text("the main list")
        expect(page.locator("main")).not_to_contain_text("reader2@")  # the address is masked
        w.check("unsubscribe")
        assert status_of(svc, "reader2@example.com") == "active"  # the page changed nothing

        page.get_by_role("button", name="Unsubscribe").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
        w.check("unsubscribed")
        assert status_of(svc, "reader2@example.com") == "unsubscribed"
        assert status_of(svc, "reader1@example.com") == "active"

        # Reader 3 deletes their data from their preferences page.
        page.goto(preferences_link(svc, issue_id, "reader3@example.com"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Your preferences")
        page.get_by_role("link", name="Delete your data").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Delete your data")
        w.check("delete")
        assert status_of(svc, "reader3@example.com") == "active"  # the page changed nothing
        page.get_by_role("button", name="Delete my data").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Your data is deleted")
        w.check("deleted")
        assert status_of(svc, "reader3@example.com") is None
        assert status_of(svc, "reader1@example.com") == "active"


# -- a phone ---------------------------------------------------------------------------------------


def test_the_forms_fit_a_phone_screen(
    sqlite_url: str,
    service_for: Callable[..., RunningService],
    browser: Browser,
    tmp_path: Path,
) -> None:
    svc = service_for(sqlite_url)
    seed_subscribers(sqlite_url, 1)
    issue_id, _, _ = send_issue(svc)
    pages = {
        "subscribe": svc.url + "/subscribe",
        "preferences": preferences_link(svc, issue_id, "reader1@example.com"),
        "unsubscribe": str(
            issue_mail(svc, issue_id, "reader1@example.com")["List-Unsubscribe"]
        ).strip(" <>"),
    }
    with watched(browser, tmp_path, width=PHONE_WIDTH) as w:
        page = w.page
        for name, url in pages.items():
            page.goto(url)
            form = page.locator("main form")
            expect(form).to_be_visible()
            box = form.bounding_box()
            assert box is not None and box["width"] > 0 and box["height"] > 0, name
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE_WIDTH, (name, box)
            for field_ in page.locator("main form input:visible, main form select").all():
                inner = field_.bounding_box()
                assert inner is not None and inner["width"] > 0, name
                assert inner["x"] + inner["width"] <= PHONE_WIDTH, (name, inner)
            scroll = page.evaluate("() => document.documentElement.scrollWidth")
            assert scroll <= PHONE_WIDTH, f"{name} scrolls sideways ({scroll}px)"
            w.check(f"phone-{name}")
    assert status_of(svc, "reader1@example.com") == "active"


def test_the_browsers_favicon_request_is_answered(
    sqlite_url: str, service_for: Callable[..., RunningService], browser: Browser
) -> None:
    svc = service_for(sqlite_url)
    with open_page(browser) as page:
        page.goto(svc.url + "/subscribe")
        # What Chromium asks for on every page of the service (no <link rel="icon">).
        answer = page.request.get(svc.url + FAVICON)
        assert answer.status < 400, answer.status
