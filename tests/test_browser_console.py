"""The editors' console in a real headless Chromium (Debian's), used the way a person
uses it: an owner signs in, adds an editor and an author from the users page with the
keyboard and the mouse, changes a role (htmx, under the console's strict CSP), and signs
out; the author signs in and has no way to manage users. Then axe-core checks every
console page at 1280 and 375 pixels, and none scrolls sideways on a phone.

axe-core comes from the npm registry into ``.cache/npm`` (``scripts/services``); without
it the axe test is skipped, except in CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from pipeline.people import users
from pipeline.statuses import Role
from tests.service import RunningService
from tests.test_browser import browser
from tests.test_browser_service import PHONE_WIDTH, UNLABELLED_JS, watched
from tests.test_service import service_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser", "service_for"]  # fixtures, imported for pytest

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / ".cache" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
PASSWORD = "correct horse battery staple"
BACKGROUND = "rgb(247, 247, 244)"  # console.css: the stylesheet came through the CSP


def add_user(svc: RunningService, email: str, role: Role, name: str = "") -> users.User:
    return users.add(svc.engine, email, role, PASSWORD, name=name)


def looks_right(page: Page, name: str, shots: Path) -> None:
    """Basic accessibility (lang, one h1, a label for every field, named buttons, a main
    landmark), the stylesheet applied, and a screenshot named ``name``."""
    assert (page.locator("html").get_attribute("lang") or "").strip(), name
    expect(page.locator("h1"), f"{name}: one h1").to_have_count(1)
    expect(page.get_by_role("main")).to_have_count(1)
    assert page.evaluate(UNLABELLED_JS) == [], f"{name}: fields without a label"
    for button in page.get_by_role("button").all():
        assert (button.get_attribute("aria-label") or button.inner_text()).strip(), name
    expect(page.locator("body")).to_have_css("background-color", BACKGROUND)
    shots.mkdir(exist_ok=True)
    page.screenshot(path=shots / f"{name}.png", full_page=True)


def sign_in_by_keyboard(page: Page, url: str, email: str) -> None:
    """Type the address, Tab to the password, type it, press Enter: as a person does."""
    page.goto(url + "/admin/")
    expect(page).to_have_url(re.compile(r"/admin/sign-in"))
    page.get_by_label("Email address").fill(email)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")


# -- a person's way through -----------------------------------------------------------------------


def test_an_owner_adds_people_and_an_author_cannot_manage_them(
    sqlite_url: str,
    service_for: Callable[..., RunningService],
    browser: Browser,
    tmp_path: Path,
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "olive@example.com", Role.OWNER, "Olive Owner")
    shots = tmp_path / "screenshots"
    with watched(browser, tmp_path) as w:
        page = w.page
        page.goto(svc.url + "/admin/sign-in")
        looks_right(page, "sign-in", shots)

        # A wrong password first: the page says so and keeps the address.
        w.allow(400, "/admin/sign-in")
        page.get_by_label("Email address").fill("olive@example.com")
        page.get_by_label("Password").fill("not the password at all")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("Wrong address or password.")
        expect(page.get_by_label("Email address")).to_have_value("olive@example.com")
        looks_right(page, "sign-in-wrong", shots)

        sign_in_by_keyboard(page, svc.url, "olive@example.com")
        expect(page).to_have_url(svc.url + "/admin/")
        expect(page.get_by_role("heading", level=1)).to_have_text("Test Health console")
        expect(page.get_by_text("Signed in as Olive Owner")).to_be_visible()
        looks_right(page, "home-owner", shots)

        page.get_by_role("navigation", name="Console").get_by_role("link", name="Users").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Users")
        looks_right(page, "users", shots)

        # The editor: with the mouse, choosing the role from the list.
        page.get_by_label("Email address").fill("edna@example.com")
        page.get_by_label("Name").fill("Edna Editor")
        page.get_by_label("Role", exact=True).select_option("editor")
        page.get_by_label("First password").fill(PASSWORD)
        page.get_by_role("button", name="Add user").click()
        expect(page.get_by_role("status")).to_have_text("Added edna@example.com as editor.")

        # The author: with the keyboard only, from the address field to Enter.
        page.get_by_label("Email address").focus()
        page.keyboard.type("arthur@example.com")
        page.keyboard.press("Tab")
        page.keyboard.type("Arthur Author")
        page.keyboard.press("Tab")
        expect(page.get_by_label("Role", exact=True)).to_be_focused()
        expect(page.get_by_label("Role", exact=True)).to_have_value("author")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        expect(page.get_by_role("status")).to_have_text("Added arthur@example.com as author.")
        expect(page.get_by_role("heading", level=3)).to_have_text(
            ["Arthur Author", "Edna Editor", "Olive Owner"]
        )
        looks_right(page, "users-added", shots)

        # A role changed in place (htmx): the card and the status line, not a new page.
        arthur = users.by_email(svc.engine, "arthur@example.com")
        assert arthur is not None
        card = page.locator(f"#user-{arthur.id}")
        address = page.url
        card.get_by_label("Role of arthur@example.com").select_option("viewer")
        card.get_by_role("button", name="Change role of arthur@example.com").click()
        expect(page.get_by_role("status")).to_have_text("arthur@example.com is now viewer.")
        expect(card).to_contain_text("arthur@example.com · viewer")
        expect(card.get_by_role("button", name="Change role of arthur@example.com")).to_be_focused()
        assert page.url == address
        assert users.get(svc.engine, arthur.id).role == Role.VIEWER
        card.get_by_label("Role of arthur@example.com").select_option("author")
        card.get_by_role("button", name="Change role of arthur@example.com").click()
        expect(page.get_by_role("status")).to_have_text("arthur@example.com is now author.")
        assert users.get(svc.engine, arthur.id).role == Role.AUTHOR

        page.get_by_role("link", name="Audit log").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Audit log")
        first = page.locator("table.log tbody tr").first
        expect(first).to_contain_text("arthur@example.com: viewer → author")
        looks_right(page, "audit", shots)

        page.get_by_role("button", name="Sign out", exact=True).click()
        expect(page.get_by_role("status")).to_have_text("You are signed out.")
        page.goto(svc.url + "/admin/users")
        expect(page).to_have_url(re.compile(r"/admin/sign-in\?next=/admin/users$"))

        # The author: no way to manage users, and the page itself says why not.
        sign_in_by_keyboard(page, svc.url, "arthur@example.com")
        expect(page).to_have_url(svc.url + "/admin/")
        nav = page.get_by_role("navigation", name="Console")
        expect(nav.get_by_role("link", name="Audit log")).to_be_visible()
        expect(page.get_by_role("link", name="Users")).to_have_count(0)
        expect(page.get_by_role("main")).not_to_contain_text("Add a user")
        looks_right(page, "home-author", shots)
        w.allow(403, "/admin/users")
        page.goto(svc.url + "/admin/users")
        expect(page.get_by_role("heading", level=1)).to_have_text("You cannot manage users")
        expect(page.get_by_role("main")).to_contain_text("only an owner manages users")
        expect(page.get_by_role("button", name="Add user")).to_have_count(0)
        looks_right(page, "forbidden", shots)
    assert sorted(u.email for u in users.all_users(svc.engine)) == [
        "arthur@example.com",
        "edna@example.com",
        "olive@example.com",
    ]


# -- axe-core on every page, at two widths ----------------------------------------------------------


def axe_script() -> Path:
    if AXE.is_file():
        return AXE
    why = f"axe-core is not installed at {AXE.relative_to(ROOT)}: scripts/services installs it"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(why)
    pytest.skip(why)


@contextmanager
def csp_free_page(browser: Browser, width: int) -> Iterator[Page]:
    # add_script_tag(path=...) puts axe in as an inline script, which the console's CSP
    # (script-src 'self') blocks, as it should: this context bypasses the CSP for the axe
    # checks only. The test above runs the same pages under the CSP.
    context = browser.new_context(viewport={"width": width, "height": 800}, bypass_csp=True)
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def axe_violations(page: Page, script: Path) -> list[str]:
    page.add_script_tag(path=str(script))
    result: dict[str, Any] = page.evaluate("async () => await axe.run(document)")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n["target"]) for n in v["nodes"][:3])
        for v in result["violations"]
    ]


class AxeChecks:
    """What axe-core finds on each page checked (``name@width``), plus any page that
    scrolls sideways at its width; a full-page screenshot of each, in ``shots``."""

    def __init__(self, script: Path, shots: Path) -> None:
        self.script = script
        self.shots = shots
        self.found: dict[str, list[str]] = {}

    def check(self, page: Page, name: str, width: int) -> None:
        expect(page.locator("h1")).to_have_count(1)
        key = f"{name}@{width}"
        self.found[key] = axe_violations(page, self.script)
        scroll = page.evaluate("() => document.documentElement.scrollWidth")
        if scroll > width:
            self.found[key].append(f"scrolls sideways: {scroll}px wide")
        page.screenshot(path=self.shots / f"axe-{key}.png", full_page=True)

    def problems(self) -> dict[str, list[str]]:
        return {page: found for page, found in self.found.items() if found}


def test_every_console_page_passes_axe_at_desktop_and_phone_widths(
    sqlite_url: str,
    service_for: Callable[..., RunningService],
    browser: Browser,
    tmp_path: Path,
) -> None:
    script = axe_script()
    svc = service_for(sqlite_url, console_totp_roles=["viewer"])
    add_user(svc, "olive@example.com", Role.OWNER, "Olive Owner")
    add_user(svc, "arthur@example.com", Role.AUTHOR, "Arthur Author")
    add_user(svc, "vera@example.com", Role.VIEWER, "Vera Viewer")  # must set up TOTP
    edna = add_user(svc, "edna@example.com", Role.EDITOR, "Edna Editor")
    secret = users.new_totp_secret()
    users.enable_totp(svc.engine, edna.id, secret, pyotp.TOTP(secret).now())
    users.add(svc.engine, "gone@example.com", Role.VIEWER, PASSWORD)
    gone = users.by_email(svc.engine, "gone@example.com")
    assert gone is not None
    users.disable(svc.engine, gone.id, by=None)  # a disabled card on the users page

    axe = AxeChecks(script, tmp_path)
    for width in (1280, PHONE_WIDTH):

        def check(page: Page, name: str, width: int = width) -> None:
            axe.check(page, name, width)

        with csp_free_page(browser, width) as page:
            page.goto(svc.url + "/admin/sign-in")
            check(page, "sign-in")
            page.get_by_label("Email address").fill("olive@example.com")
            page.get_by_label("Password").fill("wrong password, surely")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_be_visible()
            check(page, "sign-in-wrong")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(svc.url + "/admin/")
            check(page, "home")
            page.goto(svc.url + "/admin/users")
            check(page, "users")
            page.get_by_label("Email address").fill("not-quite@localhost")
            page.get_by_label("First password").fill("short but long enough!")
            page.get_by_role("button", name="Add user").click()
            expect(page.get_by_role("alert")).to_be_visible()
            check(page, "users-error")
            page.goto(svc.url + "/admin/audit")
            check(page, "audit")
            page.goto(svc.url + "/admin/totp")
            check(page, "totp-optional")

        with csp_free_page(browser, width) as page:  # two-factor sign-in: the code step
            page.goto(svc.url + "/admin/sign-in")
            page.get_by_label("Email address").fill("edna@example.com")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Your sign-in code")
            check(page, "sign-in-code")

        with csp_free_page(browser, width) as page:  # a role that must set it up
            page.goto(svc.url + "/admin/sign-in")
            page.get_by_label("Email address").fill("vera@example.com")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(svc.url + "/admin/totp")
            check(page, "totp-required")

        with csp_free_page(browser, width) as page:  # an author: the 403 page
            page.goto(svc.url + "/admin/sign-in")
            page.get_by_label("Email address").fill("arthur@example.com")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(svc.url + "/admin/")
            page.goto(svc.url + "/admin/users")
            expect(page.get_by_role("heading", level=1)).to_have_text("You cannot manage users")
            check(page, "forbidden")

    assert len(axe.found) == 2 * 10
    assert axe.problems() == {}
