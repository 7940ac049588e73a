"""One issue's page in the editors' console (/admin/issues/{id}) against the real
service (``letterpress serve`` in its own process, SQLite, Redis, the outbox provider):
test sends, scheduling in a time zone through a confirmation, roles refused by the
server, pausing, resuming and cancelling, the progress fragment, and the report (the
provider's feedback through ``feedback.apply``, clicks through the /r/ links of a sent
message).

The service has Redis, so it hands batches to workers; none run here, so the test
starts due issues and sends their batches in this process, as the beat and a worker do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from pipeline.audience import feedback
from pipeline.audience.webhooks import Event
from pipeline.broker import dispatcher_for
from pipeline.people import audit
from pipeline.sending import drafts, issues
from pipeline.sending.issues import ArticleRef
from pipeline.sending.parts import SendingParts
from pipeline.statuses import Role
from pipeline.web.console.issue import TESTS_PER_HOUR
from tests.cluster import seed_subscribers
from tests.conftest import SEEDS
from tests.service import RunningService
from tests.test_browser import browser, open_page
from tests.test_console import PASSWORD, Console, add_user, alerts, text_of
from tests.test_service import body, mails, service_for

__all__ = ["browser", "service_for"]  # fixtures, imported for pytest


def new_issue(svc: RunningService, url: str, readers: int = 1) -> int:
    """A draft to a list ``main`` of ``readers`` subscribers."""
    seed_subscribers(url, readers)
    return issues.create(
        svc.engine,
        subject="Vitamin K2 this week",
        audience=("main",),
        articles=[ArticleRef(SEEDS[0], True), ArticleRef(SEEDS[1], False)],
    )


def editor(svc: RunningService) -> Console:
    add_user(svc, "eddie@example.com", Role.EDITOR)
    return Console(svc).signed_in("eddie@example.com")


def status(svc: RunningService, issue_id: int) -> str:
    return issues.get(svc.engine, issue_id).status


def actions(svc: RunningService) -> list[str]:
    return [e.action for e in audit.recent(svc.engine)]


def send_due(svc: RunningService) -> list[int]:
    """What the beat and a worker do: start the due issues and send their batches."""
    parts = SendingParts(svc.settings)
    return parts.start_due(dispatcher_for(parts, None))


def sign_in_to(page: Page, svc: RunningService, issue_id: int) -> None:
    """Open the issue's page: the sign-in form first, as eddie, then back there."""
    page.goto(f"{svc.url}/admin/issues/{issue_id}")
    page.fill("#email", "eddie@example.com")
    page.fill("#password", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/admin/issues/{issue_id}")


def figure(html: str, name: str) -> str:
    found = text_of(html, rf'id="{name}">(.*?)</dd>')
    assert found, f"no figure {name}"
    return found[0]


def test_an_editor_sends_a_test_to_two_typed_addresses(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    issue_id = new_issue(svc, sqlite_url)
    browser = editor(svc)
    page = browser.get(f"/admin/issues/{issue_id}")
    assert page.status_code == 200, page.text
    assert page.headers["vary"] == "HX-Request"
    assert '<label for="test-addresses">' in page.text

    sent = browser.post(
        f"/admin/issues/{issue_id}/test",
        {"addresses": "Ann@Example.org, bob@example.net\nann@example.org"},
    )
    assert sent.status_code == 200, sent.text
    assert "to ann@example.org, bob@example.net" in sent.text
    messages = mails(svc.settings.outbox_dir / f"issue-{issue_id}-test", count=2)
    assert sorted(str(m["To"]) for m in messages) == ["ann@example.org", "bob@example.net"]
    assert all(str(m["Subject"]) == "[TEST] Vitamin K2 this week" for m in messages)
    assert status(svc, issue_id) == "draft"
    assert actions(svc)[0] == "tested"

    # Not an address, or too many: said in words, nothing sent.
    wrong = browser.post(f"/admin/issues/{issue_id}/test", {"addresses": "not-an-address"})
    assert wrong.status_code == 400
    assert "is not an email address" in alerts(wrong)[0]
    many = ",".join(f"p{i}@example.org" for i in range(11))
    assert browser.post(f"/admin/issues/{issue_id}/test", {"addresses": many}).status_code == 400
    assert len(list((svc.settings.outbox_dir / f"issue-{issue_id}-test").glob("*.eml"))) == 2

    # Tests go to any address, so each user has TESTS_PER_HOUR of them an hour.
    for _ in range(TESTS_PER_HOUR - 3):
        assert browser.post(f"/admin/issues/{issue_id}/test", {"addresses": "x"}).status_code == 400
    over = browser.post(f"/admin/issues/{issue_id}/test", {"addresses": "cy@example.org"})
    assert over.status_code == 429 and int(over.headers["retry-after"]) > 0
    assert f"You have sent {TESTS_PER_HOUR} tests this hour" in alerts(over)[0]
    assert len(list((svc.settings.outbox_dir / f"issue-{issue_id}-test").glob("*.eml"))) == 2


def test_scheduling_in_a_time_zone_is_confirmed_first(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    issue_id = new_issue(svc, database_url, 3)
    browser = editor(svc)
    browser.get(f"/admin/issues/{issue_id}")
    year = datetime.now(UTC).year + 1
    form = {"when": "later", "date": f"{year}-12-24", "time": "07:00", "time_zone": "Europe/London"}

    review = browser.post(f"/admin/issues/{issue_id}/schedule/review", form)
    assert review.status_code == 200, review.text
    day = datetime(year, 12, 24).strftime("%A")
    sentence = f"Sends {day} 24 December {year} at 07:00 London time, 07:00 UTC."
    assert text_of(review.text, r'<p id="sentence">(.*?)</p>') == [sentence]
    assert text_of(review.text, r'<p id="recipients">(.*?)</p>') == [
        "It goes to 3 subscribers: the list main."
    ]
    assert 'id="confirm"' in review.text and 'id="back"' in review.text
    assert status(svc, issue_id) == "draft"  # the review changes nothing

    # New York in winter: five hours behind UTC.
    other = browser.post(
        f"/admin/issues/{issue_id}/schedule/review", {**form, "time_zone": "America/New_York"}
    )
    assert "at 07:00 New York time, 12:00 UTC." in other.text
    bad = browser.post(
        f"/admin/issues/{issue_id}/schedule/review", {**form, "time_zone": "Mars/Olympus"}
    )
    assert bad.status_code == 400 and "unknown time zone" in alerts(bad)[0].lower()
    past = browser.post(f"/admin/issues/{issue_id}/schedule/review", {**form, "date": "2001-01-01"})
    assert past.status_code == 400 and "already passed" in alerts(past)[0]
    assert status(svc, issue_id) == "draft"

    browser.get(f"/admin/issues/{issue_id}")
    done = browser.post(f"/admin/issues/{issue_id}/schedule", form)
    assert done.status_code == 303, done.text
    issue = issues.get(svc.engine, issue_id)
    assert issue.status == "scheduled" and issue.time_zone == "Europe/London"
    assert issue.send_at == datetime(year, 12, 24, 7, 0, tzinfo=UTC)
    page = browser.get(done.headers["location"])
    assert sentence.rstrip(".") in page.text
    assert 'hx-trigger="every 2s"' in page.text  # scheduled: the progress polls
    assert actions(svc)[0] == "scheduled"


def test_an_edit_after_the_review_is_not_scheduled_unseen(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    """Confirm schedules what the confirmation showed: if the draft changed in between
    (another editor saved it), the editor is asked to review it again."""
    svc = service_for(sqlite_url)
    issue_id = new_issue(svc, sqlite_url)
    browser = editor(svc)
    browser.get(f"/admin/issues/{issue_id}")
    review = browser.post(f"/admin/issues/{issue_id}/schedule/review", {"when": "now"})
    seen = re.search(r'name="seen" value="([^"]+)"', review.text)
    assert seen is not None
    catalog = SendingParts(svc.settings).catalog()
    changed = drafts.Draft("Another subject", articles=[ArticleRef(SEEDS[0], True)])
    drafts.save(svc.engine, issue_id, changed, catalog, None)
    stale = browser.post(
        f"/admin/issues/{issue_id}/schedule", {"when": "now", "seen": seen.group(1)}
    )
    assert stale.status_code == 409
    assert "changed after you reviewed it" in alerts(stale)[0]
    assert status(svc, issue_id) == "draft"


def test_an_author_sees_the_controls_disabled_and_the_server_refuses_them(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    issue_id = new_issue(svc, sqlite_url)
    add_user(svc, "ada@example.com", Role.AUTHOR)
    author = Console(svc).signed_in("ada@example.com")
    page = author.get(f"/admin/issues/{issue_id}")
    assert page.status_code == 200
    assert re.search(r'id="schedule" disabled', page.text)
    assert "an editor or owner schedules them" in page.text
    assert not re.search(r'id="send-test"[^>]*disabled', page.text)  # authors may test

    forged = author.post(f"/admin/issues/{issue_id}/schedule", {"when": "now"})
    assert forged.status_code == 403
    assert "You cannot schedule issues" in forged.text
    assert author.post(f"/admin/issues/{issue_id}/schedule/review", {}).status_code == 403
    assert author.post(f"/admin/issues/{issue_id}/steer/cancel").status_code == 403
    assert author.get(f"/admin/issues/{issue_id}/steer/cancel").status_code == 403
    assert status(svc, issue_id) == "draft"
    assert "scheduled" not in actions(svc) and "cancelled" not in actions(svc)

    # Without the page's token, even an editor changes nothing.
    browser = editor(svc)
    assert (
        browser.post(f"/admin/issues/{issue_id}/schedule", {"when": "now"}, token=None).status_code
        == 403
    )
    assert status(svc, issue_id) == "draft"


def test_pause_resume_and_cancel_each_confirmed(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    issue_id = new_issue(svc, sqlite_url)
    issues.schedule(svc.engine, issue_id, datetime.now(UTC) + timedelta(days=2))
    browser = editor(svc)
    page = browser.get(f"/admin/issues/{issue_id}")
    assert 'id="steer-pause"' in page.text and 'id="steer-resume"' not in page.text

    confirm = browser.get(f"/admin/issues/{issue_id}/steer/pause")
    assert confirm.status_code == 200
    assert "No new batches start" in confirm.text and 'id="back"' in confirm.text
    assert status(svc, issue_id) == "scheduled"
    assert browser.post(f"/admin/issues/{issue_id}/steer/pause").status_code == 303
    assert status(svc, issue_id) == "paused"
    page = browser.get(f"/admin/issues/{issue_id}?done=paused")
    assert "Why: paused by the editor" in page.text
    assert 'id="steer-resume"' in page.text and 'id="steer-pause"' not in page.text

    # Pausing twice is refused in words.
    again = browser.post(f"/admin/issues/{issue_id}/steer/pause")
    assert again.status_code == 409 and "it can be paused only when" in alerts(again)[0]

    browser.get(f"/admin/issues/{issue_id}/steer/resume")
    assert browser.post(f"/admin/issues/{issue_id}/steer/resume").status_code == 303
    assert status(svc, issue_id) == "scheduled"  # it never started: it goes out now

    cancel = browser.get(f"/admin/issues/{issue_id}/steer/cancel")
    assert "This cannot be undone" in cancel.text and 'class="danger"' in cancel.text
    assert browser.post(f"/admin/issues/{issue_id}/steer/cancel").status_code == 303
    assert status(svc, issue_id) == "cancelled"
    page = browser.get(f"/admin/issues/{issue_id}")
    assert 'id="steer-' not in page.text
    assert actions(svc)[:3] == ["cancelled", "resumed", "paused"]
    assert browser.get(f"/admin/issues/{issue_id}/steer/explode").status_code == 404


def test_the_progress_fragment_and_the_report_follow_the_send(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    issue_id = new_issue(svc, database_url, 3)
    browser = editor(svc)
    browser.get(f"/admin/issues/{issue_id}")
    browser.post(f"/admin/issues/{issue_id}/schedule/review", {"when": "now"})
    assert browser.post(f"/admin/issues/{issue_id}/schedule", {"when": "now"}).status_code == 303

    htmx = {"HX-Request": "true"}
    fragment = browser.get(f"/admin/issues/{issue_id}/progress", headers=htmx)
    assert fragment.status_code == 200
    assert fragment.headers["vary"] == "HX-Request"
    assert fragment.text.lstrip().startswith('<div id="progress"')
    assert 'hx-trigger="every 2s"' in fragment.text and "<html" not in fragment.text

    assert send_due(svc) == [issue_id]
    fragment = browser.get(f"/admin/issues/{issue_id}/progress", headers=htmx)
    assert figure(fragment.text, "n-sent") == "3"
    assert figure(fragment.text, "n-queued") == "0"
    assert 'data-status="sent"' in fragment.text
    assert "hx-trigger" not in fragment.text  # sent: it stops asking

    # The provider's word, as its webhook would bring it, and a click on a link.
    sids = {f"reader{i}@example.com": i for i in (1, 2, 3)}
    feedback.apply(
        svc.engine,
        svc.settings,
        "mailgun",
        [
            Event("e1", "delivered", "reader1@example.com", sids["reader1@example.com"], issue_id),
            Event("e2", "delivered", "reader2@example.com", sids["reader2@example.com"], issue_id),
            Event("e3", "bounced", "reader3@example.com", sids["reader3@example.com"], issue_id),
        ],
    )
    message = next(
        m
        for m in mails(svc.settings.outbox_dir / f"issue-{issue_id}", count=3)
        if "reader1@" in str(m["To"])
    )
    link = re.findall(r'href="(http://[^"]+/r/[^"]+)"', body(message, "html"))[0]
    for _ in range(2):
        assert requests.get(link, allow_redirects=False, timeout=10).status_code == 302

    page = browser.get(f"/admin/issues/{issue_id}")
    assert figure(page.text, "f-delivered") == "2"
    assert figure(page.text, "f-bounced") == "1"
    assert figure(page.text, "f-complained") == "0"
    assert text_of(page.text, r'<p id="clicks-total">(.*?)</p>') == ["2 clicks by 1 subscribers."]
    assert 'id="article-clicks"' in page.text and 'id="link-clicks"' in page.text
    assert f'href="/issues/{issue_id}/"' in page.text
    assert '<h3 id="failures-title">Failures <span class="hint">(0)</span></h3>' in page.text


@pytest.mark.slow
@pytest.mark.browser
def test_in_a_browser_an_editor_schedules_now_and_watches_it_go(
    sqlite_url: str, service_for: Callable[..., RunningService], browser: Browser
) -> None:
    """At phone width: the confirmation, then the progress updating itself to "sent"
    with no reload of the page (htmx asks for the fragment every 2 seconds)."""
    svc = service_for(sqlite_url)
    issue_id = new_issue(svc, sqlite_url, 3)
    add_user(svc, "eddie@example.com", Role.EDITOR)
    with open_page(browser, width=375) as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        sign_in_to(page, svc, issue_id)
        page.get_by_label("Now").check()
        page.get_by_role("button", name="Review and schedule").click()
        expect(page.locator("#recipients")).to_have_text("It goes to 3 subscribers: the list main.")
        page.get_by_role("button", name="Confirm: schedule it").click()
        page.wait_for_url(f"**/admin/issues/{issue_id}?done=scheduled")
        loads: list[str] = []
        page.on("load", lambda p: loads.append(p.url))
        assert send_due(svc) == [issue_id]
        expect(page.locator('#progress [data-status="sent"]')).to_be_visible(timeout=15_000)
        expect(page.locator("#n-sent")).to_have_text("3")
        assert loads == [], "the page was reloaded"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"the page is {width} px wide at 375 px"
        assert errors == []


@pytest.mark.slow
@pytest.mark.browser
def test_the_schedule_form_starts_in_the_editors_own_time_zone(
    sqlite_url: str, service_for: Callable[..., RunningService], browser: Browser
) -> None:
    """The browser's IANA zone (console.js) is the default; the sentence says the time
    back in that zone and in UTC; without JavaScript the field says UTC."""
    svc = service_for(sqlite_url)
    issue_id = new_issue(svc, sqlite_url, 2)
    add_user(svc, "eddie@example.com", Role.EDITOR)
    context = browser.new_context(timezone_id="America/New_York")
    try:
        page = context.new_page()
        sign_in_to(page, svc, issue_id)
        expect(page.get_by_label("Time zone")).to_have_value("America/New_York")
        page.get_by_label("At a date and time").check()
        page.get_by_label("Date", exact=True).fill("2099-07-04")
        page.get_by_label("Time", exact=True).fill("08:30")
        page.get_by_role("button", name="Review and schedule").click()
        expect(page.locator("#sentence")).to_have_text(
            "Sends Saturday 4 July 2099 at 08:30 New York time, 12:30 UTC."
        )
    finally:
        context.close()
    without = browser.new_context(java_script_enabled=False)
    try:
        page = without.new_page()
        sign_in_to(page, svc, issue_id)
        expect(page.get_by_label("Time zone")).to_have_value("UTC")
    finally:
        without.close()
