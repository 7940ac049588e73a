"""Subscribers in the editors' console (/admin/subscribers, /admin/suppressions) against
the real service (``letterpress serve`` in its own process, Redis), on SQLite and
PostgreSQL: the search by address prefix, exact address, status, list and signup date,
a page at a time; a subscriber's page with the history of a real send (the delivery,
the provider's report through ``feedback.apply``, a click through the /r/ link of the
sent message); changing status and lists, downloading their data and erasing them,
each in the audit log; the suppression list; and (on SQLite) the roles and the CSRF
check, which refuse everything to everyone but owners and operators.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import requests
import sqlalchemy as sa

from pipeline.audience import changes, directory, feedback
from pipeline.audience import subscribers as domain
from pipeline.audience.webhooks import Event
from pipeline.people import audit
from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef
from pipeline.statuses import Role
from pipeline.store import db
from tests.cluster import seed_subscribers
from tests.conftest import SEEDS
from tests.service import RunningService
from tests.test_console import Console, add_user, alerts, text_of
from tests.test_console_issue import send_due
from tests.test_service import body, mails, service_for

__all__ = ["service_for"]  # a fixture, imported for pytest

HTMX = {"HX-Request": "true"}


def operator(svc: RunningService) -> Console:
    add_user(svc, "opal@example.com", Role.OPERATOR)
    return Console(svc).signed_in("opal@example.com")


def addresses(html: str) -> list[str]:
    return text_of(html, r'<td><a href="/admin/subscribers/\d+">(.*?)</a>')


def next_page(html: str) -> str | None:
    found = re.search(r'<a href="([^"]+)"[^>]*id="next-page"', html)
    return None if found is None else found.group(1).replace("&amp;", "&")


def actions(svc: RunningService) -> list[tuple[str, str]]:
    return [(e.action, e.detail) for e in audit.recent(svc.engine)]


def test_the_search_by_address_status_list_and_signup_date_a_page_at_a_time(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    seed_subscribers(database_url, 120)  # reader1..reader120@example.com, an hour ago
    changes.add(svc.engine, "Ann@Example.org", via=changes.COMMAND_LINE, lists=["deals"])
    feedback.apply(
        svc.engine,
        svc.settings,
        "mailgun",
        [
            Event("b5", "bounced", "reader5@example.com", detail="550 5.1.1 no such mailbox"),
            Event("c6", "complained", "reader6@example.com"),
        ],
    )
    browser = operator(svc)

    # Everyone, newest first, 50 a page; each next page starts before the last id shown.
    first = browser.get("/admin/subscribers")
    assert first.status_code == 200, first.text
    assert first.headers["vary"] == "HX-Request"
    shown = addresses(first.text)
    assert shown[:2] == ["ann@example.org", "reader120@example.com"] and len(shown) == 50
    seen = list(shown)
    url = next_page(first.text)
    while url is not None:
        assert "after=" in url
        page = browser.get(url)
        seen += addresses(page.text)
        url = next_page(page.text)
    assert len(seen) == 121 and len(set(seen)) == 121
    assert seen[-1] == "reader1@example.com"

    # A prefix, in address order (any case); an exact address, in any spelling.
    prefix = browser.get("/admin/subscribers?q=READER11")
    assert addresses(prefix.text) == [f"reader11{d}@example.com" for d in range(10)] + [
        "reader11@example.com"
    ]
    every: list[str] = []
    url = "/admin/subscribers?q=reader"
    while url is not None:
        page = browser.get(url)
        every += addresses(page.text)
        url = next_page(page.text)
    assert every == sorted(f"reader{i}@example.com" for i in range(1, 121))
    exact = browser.get("/admin/subscribers?q=Reader7@EXAMPLE.com&match=exact")
    assert addresses(exact.text) == ["reader7@example.com"]
    assert addresses(browser.get("/admin/subscribers?q=reader7@example.co&match=exact").text) == []

    # Status, list and signup date; and what they combine to.
    assert addresses(browser.get("/admin/subscribers?status=bounced").text) == [
        "reader5@example.com"
    ]
    assert addresses(browser.get("/admin/subscribers?list=deals").text) == ["ann@example.org"]
    on_main: list[str] = []
    url = "/admin/subscribers?list=main"
    while url is not None:  # a list's pages run down its memberships
        page = browser.get(url)
        on_main += addresses(page.text)
        url = next_page(page.text)
    assert on_main == [f"reader{i}@example.com" for i in range(120, 0, -1)]
    both = browser.get("/admin/subscribers?list=main&status=complained&q=reader")
    assert addresses(both.text) == ["reader6@example.com"]
    today = datetime.now(UTC).date()
    tomorrow = (today + timedelta(days=1)).isoformat()
    nobody = browser.get(f"/admin/subscribers?from={tomorrow}")
    assert addresses(nobody.text) == [] and "Nobody matches" in nobody.text
    seeded_day = (datetime.now(UTC) - timedelta(hours=1)).date().isoformat()
    joined = browser.get(f"/admin/subscribers?from={seeded_day}&to={today}&q=reader120")
    assert addresses(joined.text) == ["reader120@example.com"]
    by_signup: list[str] = []
    url = f"/admin/subscribers?from={seeded_day}&to={today}"
    while url is not None:  # newest signup first; the seeded ones signed up together
        page = browser.get(url)
        by_signup += addresses(page.text)
        url = next_page(page.text)
    assert by_signup == ["ann@example.org"] + [f"reader{i}@example.com" for i in range(120, 0, -1)]

    # With htmx: the results alone.
    fragment = browser.get("/admin/subscribers?q=ann", headers=HTMX)
    assert fragment.text.lstrip().startswith('<section id="results"')
    assert "<html" not in fragment.text and addresses(fragment.text) == ["ann@example.org"]

    # What makes no sense is said, with where.
    for query, said in (
        ("q=not-an-address&match=exact", "is not a valid email address"),
        ("q=ann smith", "An address has no spaces"),
        ("list=nope", "No list named 'nope'"),
        ("from=2026-13-01", "Signed up from: '2026-13-01' is not a day"),
        (f"from={tomorrow}&to={today}", "The signup dates run backwards"),
        ("status=lost", "Status: choose one of"),
        ("after=abc", "'abc' is not where a page of subscribers starts"),
        (f"from={today}&after=12", "'12' is not where a page of subscribers starts"),
    ):
        refused = browser.get(f"/admin/subscribers?{query}")
        assert refused.status_code == 400, query
        assert said in html.unescape(alerts(refused)[0]), (query, alerts(refused))

    # The suppression list: the reason and the date, newest first; one kind at a time.
    suppressed = browser.get("/admin/suppressions")
    assert suppressed.status_code == 200
    rows = text_of(suppressed.text, r"<tr>\s*(<td>.*?)</tr>")
    assert len(rows) == 2
    assert rows[0].split()[:2] == ["reader6@example.com", "complained"]
    assert "mailgun: complained" in rows[0]
    assert rows[1].split()[:2] == ["reader5@example.com", "bounced"]
    assert "550 5.1.1 no such mailbox" in rows[1]
    assert today.isoformat() in rows[1]
    first_one = directory.suppressed(svc.engine, limit=1)  # a page of one: the newest
    assert [s.email for s in first_one.items] == ["reader6@example.com"]
    assert first_one.next == first_one.items[0].id
    older = browser.get(f"/admin/suppressions?after={first_one.next}")
    assert addresses(older.text) == ["reader5@example.com"] and "The newest" in older.text
    bounced = browser.get("/admin/suppressions?status=bounced")
    assert addresses(bounced.text) == ["reader5@example.com"]
    wrong = browser.get("/admin/suppressions?status=active")
    assert wrong.status_code == 400 and "not a suppression" in alerts(wrong)[0]


def a_sent_issue(svc: RunningService) -> tuple[int, int]:
    """An issue sent to ann (bob, on the lists too, never confirmed); the provider reports ann's
    delivery and ann follows a link of the message she was sent. Ann's id, the issue's."""
    ann = changes.add(
        svc.engine, "ann@example.org", via=changes.COMMAND_LINE, lists=["main"], status="active"
    ).subscriber_id
    changes.add(svc.engine, "bob@example.org", via=changes.COMMAND_LINE, lists=["main", "deals"])
    issue_id = issues.create(
        svc.engine,
        subject="Vitamin K2 this week",
        audience=("main",),
        articles=[ArticleRef(SEEDS[0], True)],
    )
    issues.schedule(svc.engine, issue_id, None)
    assert send_due(svc) == [issue_id]
    feedback.apply(
        svc.engine,
        svc.settings,
        "mailgun",
        [Event("d1", "delivered", "ann@example.org", ann, issue_id)],
    )
    message = next(
        m for m in mails(svc.settings.outbox_dir / f"issue-{issue_id}") if "ann@" in str(m["To"])
    )
    link = re.findall(r'href="(http://[^"]+/r/[^"]+)"', body(message, "html"))[0]
    assert requests.get(link, allow_redirects=False, timeout=10).status_code == 302
    return ann, issue_id


def test_a_subscribers_page_shows_their_history_and_changes_exports_and_erases(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    ann, issue_id = a_sent_issue(svc)
    browser = operator(svc)

    page = browser.get(f"/admin/subscribers/{ann}")
    assert page.status_code == 200, page.text
    assert text_of(page.text, r"<h1>(.*?)</h1>") == ["ann@example.org"]
    assert text_of(page.text, r'id="subscriber-lists">(.*?)</dd>') == ["main"]
    history = text_of(page.text, r'<tr class="h-(\w+)">')
    assert set(history) == {"event", "delivery", "report", "click"}
    rows = [" ".join(r.split()) for r in text_of(page.text, r'<tr class="h-\w+">(.*?)</tr>')]
    assert any(f"delivery: sent Issue {issue_id} “Vitamin K2 this week”" in r for r in rows)
    assert any("provider: delivered" in r and "mailgun reported delivered" in r for r in rows)
    # Seconds after the delivery, a click is kept but is not counted as engagement.
    clicked = [r for r in rows if " click (a link scanner, or seconds after delivery)" in r]
    assert len(clicked) == 1 and f"Issue {issue_id} {svc.url}/issues/{issue_id}/" in clicked[0]
    assert any("added" in r and "command line, active; lists: main" in r for r in rows)

    # Status and lists, as the form has them: one change, one event, one audit entry.
    browser.get(f"/admin/subscribers/{ann}")
    done = browser.post(
        f"/admin/subscribers/{ann}",
        {"status": "unsubscribed", "lists": "deals", "shown": ["deals", "main"]},  # type: ignore[dict-item]
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/admin/subscribers/{ann}?done=changed"
    found = domain.get(svc.engine, ann)
    assert found is not None and found.status == "unsubscribed" and found.lists == ("deals",)
    said = "status active -> unsubscribed; joined deals; left main"
    assert actions(svc)[0] == ("subscriber changed", f"subscriber {ann}: {said}")
    shown = browser.get(done.headers["location"])
    assert "Saved." in shown.text and f"console: {said}" in html.unescape(shown.text)
    again = browser.post(
        f"/admin/subscribers/{ann}",
        {"status": "unsubscribed", "lists": "deals", "shown": ["deals", "main"]},  # type: ignore[dict-item]
    )
    assert again.headers["location"].endswith("done=unchanged")
    assert [a for a, _ in actions(svc)].count("subscriber changed") == 1
    wrong = browser.post(f"/admin/subscribers/{ann}", {"status": "gone"})
    assert wrong.status_code == 400
    assert "Unknown status 'gone'" in html.unescape(alerts(wrong)[0])

    # Their data, as their own link gives it; recorded.
    data = browser.post(f"/admin/subscribers/{ann}/export")
    assert data.status_code == 200
    assert data.headers["content-disposition"].startswith("attachment;")
    exported = data.json()
    assert exported["email"] == "ann@example.org"
    assert exported["deliveries"][0]["feedback"] == "delivered"
    assert exported["events"][-1]["kind"] == "exported" and len(exported["clicks"]) == 1
    assert actions(svc)[0] == ("subscriber exported", f"subscriber {ann}")

    # Erasure: a confirmation first, which changes nothing; then nothing names them.
    confirm = browser.get(f"/admin/subscribers/{ann}/erase")
    assert confirm.status_code == 200 and 'id="confirm"' in confirm.text
    assert "This cannot be undone" in confirm.text
    assert domain.get(svc.engine, ann) is not None
    erased = browser.post(f"/admin/subscribers/{ann}/erase")
    assert erased.status_code == 303 and erased.headers["location"].endswith("done=erased")
    assert domain.get(svc.engine, ann) is None
    assert actions(svc)[0] == ("subscriber erased", f"subscriber {ann}")
    assert not any("ann@example.org" in detail for _, detail in actions(svc))
    with svc.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).where(db.clicks.c.subscriber_id == ann)) == 0
        assert (
            conn.scalar(
                sa.select(sa.func.count()).where(db.subscriber_events.c.subscriber_id == ann)
            )
            == 0
        )
        assert (
            conn.scalar(sa.select(sa.func.count()).where(db.provider_events.c.subscriber_id == ann))
            == 0
        )
        kept = conn.execute(
            sa.select(db.deliveries.c.status).where(db.deliveries.c.issue_id == issue_id)
        ).scalars()
        assert list(kept) == ["sent"]  # ann's, naming nobody now: the totals keep counting
    assert "erased" in browser.get(erased.headers["location"]).text
    gone = browser.get(f"/admin/subscribers/{ann}")
    assert gone.status_code == 404 and "or they were erased" in gone.text
    browser.get("/admin/subscribers")
    assert browser.post(f"/admin/subscribers/{ann}/erase").status_code == 404
    assert browser.post(f"/admin/subscribers/{ann}", {"status": "active"}).status_code == 404


def test_only_owners_and_operators_look_after_subscribers_and_forged_posts_change_nothing(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    """On SQLite only: the refusals come before any SQL of the pages (the two tests
    above run those on both databases)."""
    svc = service_for(sqlite_url)
    ann = changes.add(
        svc.engine, "ann@example.org", via=changes.COMMAND_LINE, lists=["main"], status="active"
    ).subscriber_id
    for role in (Role.EDITOR, Role.AUTHOR, Role.VIEWER):
        add_user(svc, f"{role.value}@example.com", role)
        other = Console(svc).signed_in(f"{role.value}@example.com")
        assert "/admin/subscribers" not in other.get("/admin/").text
        for path in (
            "/admin/subscribers",
            "/admin/subscribers?q=ann",
            f"/admin/subscribers/{ann}",
            f"/admin/subscribers/{ann}/erase",
            "/admin/suppressions",
        ):
            refused = other.get(path)
            assert refused.status_code == 403, (role, path)
            assert "You cannot look after subscribers" in refused.text
            assert "an operator or owner manages subscribers" in refused.text
        for path, form in (
            (f"/admin/subscribers/{ann}", {"status": "bounced"}),
            (f"/admin/subscribers/{ann}/export", {}),
            (f"/admin/subscribers/{ann}/erase", {}),
        ):
            assert other.post(path, form).status_code == 403, (role, path)
    add_user(svc, "olive@example.com", Role.OWNER)
    owner = Console(svc).signed_in("olive@example.com")
    assert 'href="/admin/subscribers"' in owner.get("/admin/").text
    assert owner.get(f"/admin/subscribers/{ann}").status_code == 200

    # Without the page's token, or from another site, even an owner changes nothing.
    assert owner.post(f"/admin/subscribers/{ann}/erase", token=None).status_code == 403
    assert owner.post(f"/admin/subscribers/{ann}/erase", token="forged").status_code == 403
    evil = owner.post(f"/admin/subscribers/{ann}/erase", origin="https://evil.example")
    assert evil.status_code == 403
    assert (
        owner.post(f"/admin/subscribers/{ann}", {"status": "bounced"}, token=None).status_code
        == 403
    )
    found = domain.get(svc.engine, ann)
    assert found is not None and found.status == "active"
    assert not [a for a, _ in actions(svc) if a.startswith("subscriber")]
    assert directory.detail(svc.engine, ann) is not None
    operator_ = operator(svc)
    assert operator_.get(f"/admin/subscribers/{ann}/erase").status_code == 200
    assert operator_.post(f"/admin/subscribers/{ann}/erase").status_code == 303
    assert domain.get(svc.engine, ann) is None
