"""The editors' console from end to end, in a real headless Chromium (Debian's, through
Playwright), against everything a publisher runs: ``letterpress serve`` in its own
process, Redis, a SQLite database, a Celery worker and beat in processes of their own,
and the SendGrid API of the loopback provider double, which keeps what it was sent.

An owner (added with ``letterpress users add``) signs in and adds an editor and an
author. The editor composes an issue of the two seed articles for the list ``main``,
checks both preview widths, sends a test to two typed addresses, schedules the issue
for now, and watches it go out without reloading the page; then readers click links
taken from the messages the provider was given, and the report shows the clicks per
link and per article. The author cannot schedule: the button says why and a forged
POST is refused with 403, changing nothing. A form on another site that posts to the
console is refused; a session that ended sends its browser to sign in again and back;
too many wrong passwords lock the account out and the page says so.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from pipeline.people import audit, users
from pipeline.sending import issues
from tests.cluster import SENDGRID_KEY, Cluster, Double, seed_subscribers, wait_for
from tests.conftest import CONTENT
from tests.service import RunningService, with_workers
from tests.test_browser import browser, open_page
from tests.test_browser_console import PASSWORD, sign_in_by_keyboard
from tests.test_console import age_sessions
from tests.test_service import BROWSER

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser"]  # a fixture, imported for pytest

READERS = 120  # three batches of 50 at 20 a second: about six seconds to watch
FIRST_TITLE = "Vitamin K2 for Directing Calcium to Bones"
SECOND_TITLE = "The Role of Vitamin K2 in Calcium Distribution"
SUBJECT = "Vitamin K2, and where your calcium goes"
TEST_TO = ["proofreader@example.net", "Editor.Home@Example.org"]


@pytest.fixture
def publisher(
    tmp_path: Path, sqlite_url: str, redis_url: str, redis_client: Any
) -> Iterator[tuple[RunningService, Cluster]]:
    """The service, a worker and the beat, all sending through one provider double."""
    double = Double(tmp_path / "double.log", keep_messages=True)
    sending = {
        "provider": "sendgrid",
        "sendgrid_base_url": double.url,
        "sender_email": "newsletter@news.example.org",
        "content_dir": str(CONTENT),
        "batch_size": 50,
        "send_rate": 20.0,
        "send_burst": 5,
    }
    service_settings = {"console_totp_roles": [], "public_lists": ["main"]}
    env = {"SENDGRID_API_KEY": SENDGRID_KEY}
    try:
        with with_workers(
            tmp_path, sqlite_url, redis_url, double, sending, service_settings, env
        ) as started:
            svc, cluster = started
            cluster.worker()
            cluster.beat()
            yield svc, cluster
    finally:
        double.close()  # after the workers and the service have stopped


def add_owner_with_the_cli(cluster: Cluster, email: str) -> None:
    command = ["users", "add", email, "--role", "owner", "--name", "Olive Owner"]
    done = subprocess.run(
        [sys.executable, "-m", "workers", *command, "--password-stdin"],
        input=PASSWORD + "\n",
        env=cluster.env,
        cwd=cluster.tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")


def add_user_in_the_console(page: Page, email: str, name: str, role: str) -> None:
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Name").fill(name)
    page.get_by_label("Role", exact=True).select_option(role)
    page.get_by_label("First password").fill(PASSWORD)
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("status")).to_have_text(f"Added {email} as {role}.")


def compose(page: Page, subject: str, intro: str) -> int:
    """Compose an issue of both seed articles for the list main; its id."""
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Issues").click()
    page.get_by_role("link", name="Compose a new issue").click()
    page.get_by_label("Subject").fill(subject)
    page.get_by_label("Preheader").fill("What K2 does, and how to get enough")
    page.get_by_label("Intro").fill(intro)
    for title in (FIRST_TITLE, SECOND_TITLE):
        page.get_by_label("Add an article").select_option(label=title)
        page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator(".pick-title")).to_have_text([FIRST_TITLE, SECOND_TITLE])
    page.get_by_label("main", exact=True).check()
    expect(page.locator("#recipients")).to_have_text(f"{READERS} recipients if it were sent now.")
    page.get_by_role("button", name="Create the draft").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved draft issue")
    found = re.search(r"/admin/issues/(\d+)/edit", page.url)
    assert found, page.url
    return int(found.group(1))


@contextmanager
def another_site(target: str) -> Iterator[str]:
    """A page on another origin (another loopback port) whose form posts to ``target``
    on its own as soon as it loads, as a cross-site request forgery would."""
    page = (
        "<!doctype html><html lang=en><title>Win a prize</title>"
        f'<form id=f method=post action="{target}">'
        '<input name=email value="mallory@example.com"><input name=role value=owner>'
        '<input name=password value="mallory-password-123"><input name=csrf value=guess>'
        "</form><script>document.getElementById('f').submit()</script>"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_an_issue_from_compose_to_clicks_with_real_workers(
    publisher: tuple[RunningService, Cluster], browser: Browser, sqlite_url: str
) -> None:
    svc, cluster = publisher
    seed_subscribers(sqlite_url, READERS)
    add_owner_with_the_cli(cluster, "olive@example.com")
    with open_page(browser) as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        # The owner adds an editor and an author, and a forged form from elsewhere fails.
        sign_in_by_keyboard(page, svc.url, "olive@example.com")
        expect(page.get_by_text("Signed in as Olive Owner")).to_be_visible()
        page.get_by_role("navigation", name="Console").get_by_role("link", name="Users").click()
        add_user_in_the_console(page, "edna@example.com", "Edna Editor", "editor")
        add_user_in_the_console(page, "arthur@example.com", "Arthur Author", "author")
        with another_site(svc.url + "/admin/users") as evil:
            page.goto(evil)
            expect(page).to_have_url(svc.url + "/admin/users")
            expect(page.get_by_role("heading", level=1)).to_have_text(
                "This request did not come from a page of the console"
            )
        assert users.by_email(svc.engine, "mallory@example.com") is None
        page.goto(svc.url + "/admin/")
        sign_out(page)

        # The editor composes, previews at both widths, and sends a test.
        sign_in_by_keyboard(page, svc.url, "edna@example.com")
        issue_id = compose(page, SUBJECT, "<p>Two pieces on vitamin K2 this week.</p>")
        expect(page.locator("#inbox .subject")).to_have_text(SUBJECT)
        for kind in ("desktop", "mobile"):
            frame = page.frame_locator(f"iframe.frame-{kind}")
            expect(frame.locator("body")).to_contain_text("Two pieces on vitamin K2")
            expect(frame.locator("body")).to_contain_text(FIRST_TITLE)
        widths = page.evaluate(
            "() => [...document.querySelectorAll('#preview iframe')].map(f => f.clientWidth)"
        )
        assert widths == [600, 375], widths
        page.get_by_role("link", name=f"Test, schedule and follow issue {issue_id}").click()
        page.get_by_label("Addresses").fill(", ".join(TEST_TO))
        page.get_by_role("button", name="Send test").click()
        expect(page.locator(".result")).to_contain_text(
            f"Sent “[TEST] {SUBJECT}” through sendgrid to proofreader@example.net"
        )
        tests = cluster.double.messages()
        assert sorted(tests) == ["editor.home@example.org", "proofreader@example.net"]
        assert all(m["subject"] == f"[TEST] {SUBJECT}" for ms in tests.values() for m in ms)

        # Scheduled for now, confirmed, and watched until sent: no reload.
        page.get_by_label("Now").check()
        page.get_by_role("button", name="Review and schedule").click()
        expect(page.locator("#recipients")).to_have_text(
            f"It goes to {READERS} subscribers: the list main."
        )
        page.get_by_role("button", name="Confirm: schedule it").click()
        page.wait_for_url(f"**/admin/issues/{issue_id}?done=scheduled")
        page.evaluate("() => { window.stillHere = true }")
        first = page.locator("#progress [data-status]").get_attribute("data-status")
        assert first in ("scheduled", "sending"), first
        seen = page.evaluate(
            """() => { window.seen = []; new MutationObserver(() => {
                 const s = document.querySelector('#n-sent');
                 if (s) window.seen.push(s.textContent) }).observe(document.body,
                 {childList: true, subtree: true}); return true }"""
        )
        assert seen
        expect(page.locator('#progress [data-status="sent"]')).to_be_visible(timeout=60_000)
        expect(page.locator("#n-sent")).to_have_text(str(READERS))
        expect(page.locator("#n-failed")).to_have_text("0")
        assert page.evaluate("() => window.stillHere") is True, "the page was reloaded"
        counts = [int(n.replace(",", "")) for n in page.evaluate("() => window.seen")]
        assert len(counts) >= 2 and counts == sorted(counts) and counts[-1] == READERS, counts
        assert cluster.deliveries(issue_id) == {"sent": READERS}

        # Readers click links from the messages the provider was sent.
        kept = cluster.double.messages()
        readers = sorted(a for a in kept if a.startswith("reader"))
        assert len(readers) == READERS and all(len(kept[a]) == 1 for a in readers)
        links = {
            a: re.findall(r'href="(http://127\.0\.0\.1:\d+/r/[^"]+)"', kept[a][0]["html"])
            for a in readers[:3]
        }
        assert all(links.values()), links
        by_target: dict[str, set[str]] = {}  # who clicked through to each address
        clicks: dict[str, int] = {}
        for address, found in links.items():
            for link in found[:2]:
                answer = requests.get(
                    link.replace("&amp;", "&"),
                    headers={"User-Agent": BROWSER},
                    allow_redirects=False,
                    timeout=10,
                )
                assert answer.status_code == 302, (link, answer.status_code)
                target = answer.headers["location"]
                by_target.setdefault(target, set()).add(address)
                clicks[target] = clicks.get(target, 0) + 1
        page.get_by_role("link", name="Refresh").click()
        expect(page.locator("#clicks-total")).not_to_have_text(re.compile(r"^0 clicks"))
        rows = page.locator("#link-clicks tbody tr").evaluate_all(
            "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))"
        )
        shown = {url: (int(who), int(n)) for url, who, n in rows}  # every link of the email
        assert len(shown) == len(rows) > len(by_target), rows
        assert {url: shown[url] for url in by_target} == {
            url: (len(who), clicks[url]) for url, who in by_target.items()
        }
        assert all(shown[url] == (0, 0) for url in shown.keys() - by_target.keys()), shown
        expect(page.locator("#clicks-total")).to_have_text(
            f"{sum(clicks.values())} clicks by {len(links)} subscribers."
        )
        expect(page.locator("#article-clicks tbody tr")).not_to_have_count(0)
        sign_out(page)

        # The author may compose and test, never schedule.
        sign_in_by_keyboard(page, svc.url, "arthur@example.com")
        draft_id = compose(page, "An author's draft", "<p>Not for sending by me.</p>")
        page.goto(f"{svc.url}/admin/issues/{draft_id}")
        schedule = page.get_by_role("button", name="Review and schedule")
        expect(schedule).to_be_disabled()
        expect(schedule).to_have_accessible_description(
            "Authors can compose and test issues; an editor or owner schedules them."
        )
        token = page.locator("input[name=csrf]").first.get_attribute("value")
        before = len(audit.recent(svc.engine, limit=1000))
        for path in ("schedule/review", "schedule"):
            forged = page.request.post(
                f"{svc.url}/admin/issues/{draft_id}/{path}",
                form={"csrf": token or "", "when": "now"},
                headers={"Origin": svc.url},
                max_redirects=0,
            )
            assert forged.status == 403, (path, forged.status)
        assert issues.get(svc.engine, draft_id).status == "draft"
        assert len(audit.recent(svc.engine, limit=1000)) == before

        # A session that ended: the next click asks to sign in again, then comes back.
        age_sessions(svc)
        page.get_by_role("navigation", name="Console").get_by_role("link", name="Articles").click()
        expect(page).to_have_url(re.compile(r"/admin/sign-in\?next=/admin/articles&out=ended$"))
        expect(page.get_by_role("status")).to_have_text(
            "Your session has ended: sign in again to go on."
        )
        page.get_by_label("Email address").fill("arthur@example.com")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(svc.url + "/admin/articles")
        sign_out(page)

        # Too many wrong passwords: locked out, and told for how long.
        limit = svc.settings.console_signin_per_account_per_15min
        for _ in range(limit):
            page.get_by_label("Email address").fill("arthur@example.com")
            page.get_by_label("Password").fill("not the password, sorry")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_have_text("Wrong address or password.")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text(
            re.compile(r"Too many sign-in attempts for this account: try again in 1[0-5] minutes\.")
        )
        expect(page).to_have_url(re.compile(r"/admin/sign-in"))
        assert errors == [], errors
    wait_for(lambda: cluster.issue_status(issue_id) == "sent", 5, "the issue's status")
