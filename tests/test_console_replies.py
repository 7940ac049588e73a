"""Moderating replies in the console (/admin/replies) against the real service: the
queue with each reply's context, approving, rejecting and marking as spam in bulk,
banning by address and IP range, closing an article's replies, the article list's reply
counts, escaping everywhere a reply is shown, and the roles and CSRF check."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import requests
import sqlalchemy as sa

from pipeline.people import audit
from pipeline.replies import moderation
from pipeline.replies.text import check
from pipeline.replies.threads import NewReply, post
from pipeline.statuses import ReplyStatus, Role
from pipeline.store import db
from tests.conftest import SEEDS
from tests.service import RunningService
from tests.test_console import Console, add_user
from tests.test_service import service_for

__all__ = ["service_for"]  # a fixture, imported for pytest

SLUG = SEEDS[1]
XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def reply(
    svc: RunningService, email: str, body: str, answers: int | None = None, name: str = "Reader"
) -> int:
    fields = check(svc.settings, name, email, "", body)
    with svc.engine.begin() as conn:
        posted = post(conn, svc.settings, NewReply(SLUG, fields, answers, False, "range-1"))
    return posted.id  # type: ignore[union-attr]


def ids_on(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'name="ids" value="(\d+)"', page)]


def editor(svc: RunningService) -> Console:
    add_user(svc, "eddie@example.com", Role.EDITOR)
    return Console(svc).signed_in("eddie@example.com")


def test_a_moderator_works_the_queue_in_bulk_with_each_replys_context(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    first = reply(svc, "ann@example.org", "A first question")
    moderation.decide(svc.engine, [first], "approve", "mod", None)
    answer = reply(svc, "bob@example.org", f"An answer {XSS}", answers=first, name=f"Bob {XSS}")
    spam = reply(svc, "spam@example.net", "Buy now https://spam.example")
    other = reply(svc, "cat@example.org", "Another question")
    con = editor(svc)
    page = con.get("/admin/replies")
    assert page.status_code == 200
    assert ids_on(page.text) == [answer, spam, other]  # waiting, oldest first
    assert "Waiting (3)" in page.text and "Approved (1)" in page.text
    # Escaped: the console shows the markup as text.
    assert "<script>alert(2)</script>" not in page.text and "&lt;script&gt;" in page.text
    assert 'onerror="alert(1)"' not in page.text
    assert "Answering Reader:" in page.text and "A first question" in page.text  # its context
    assert "bob@example.org" in page.text  # moderators see the address

    done = con.post(
        "/admin/replies/decide", {"action": "approve", "ids": [str(answer), str(other)]}
    )  # type: ignore[dict-item]
    assert done.status_code == 303 and "2+replies+approved" in done.headers["location"]
    con.get("/admin/replies")
    spammed = con.post("/admin/replies/decide", {"action": "spam", "ids": str(spam)})
    assert spammed.status_code == 303
    assert [r.status for r in _rows(svc)] == ["approved", "approved", "spam", "approved"]
    page = con.get("/admin/replies?status=spam")
    assert ids_on(page.text) == [spam]
    assert (
        con.post("/admin/replies/decide", {"action": "ban-address", "ids": str(spam)}).status_code
        == 303
    )
    bans = moderation.bans(svc.engine)
    assert [(b.kind, b.label) for b in bans] == [("address", "spam@example.net")]
    page = con.get("/admin/replies")
    assert "spam@example.net" in page.text and "Lift the ban" in page.text
    assert con.post(f"/admin/replies/bans/{bans[0].id}/delete").status_code == 303
    assert moderation.bans(svc.engine) == []
    con.get("/admin/replies")
    nothing = con.post("/admin/replies/decide", {"action": "approve"})
    assert nothing.status_code == 400 and "Tick the replies first" in nothing.text
    # A reader who is not a subscriber asks to be forgotten: every reply of the address.
    another = reply(svc, "cat@example.org", "A second question from Cat")
    con.get("/admin/replies")
    asked = con.post("/admin/replies/decide", {"action": "erase", "ids": str(another)})
    assert asked.status_code == 200  # it cannot be undone: the page says what goes first
    assert "<code>cat@example.org</code>: 2 replies" in asked.text
    assert "Confirm: erase 2 replies" in asked.text
    assert "cat@example.org" in [r.email for r in _rows(svc)]
    erased = con.post(
        "/admin/replies/decide", {"action": "erase", "ids": str(another), "confirmed": "1"}
    )
    assert erased.status_code == 303 and "done=2+replies+of" in erased.headers["location"]
    assert "cat@example.org" not in [r.email for r in _rows(svc)]
    assert len(_rows(svc)) == 3
    actions = [e.action for e in audit.recent(svc.engine)]
    assert {
        "reply approve",
        "reply spam",
        "reply ban address",
        "reply unban",
        "reply erase",
    } <= set(actions)


def test_closing_an_articles_replies_and_the_article_list_counts(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    first = reply(svc, "ann@example.org", "Approved one")
    moderation.decide(svc.engine, [first], "approve", "mod", None)
    reply(svc, "bob@example.org", "Waiting one")
    con = editor(svc)
    articles = con.get("/admin/articles").text
    block = articles[articles.index(f'id="article-{SLUG}"') :]
    assert "Replies: 1 approved, 1 waiting" in block[: block.index("</li>")]
    con.get("/admin/replies")
    closed = con.post(f"/admin/replies/articles/{SLUG}", {"closed": "1"})
    assert closed.status_code == 303
    assert moderation.closed_slugs(svc.engine) == {SLUG}
    assert "closed" in con.get("/admin/articles").text
    api = requests.get(f"{svc.url}/api/replies/{SLUG}", timeout=10).json()
    assert api["open"] is False and len(api["replies"]) == 1  # the approved ones stay
    con.get("/admin/replies")
    assert con.post(f"/admin/replies/articles/{SLUG}", {"closed": "0"}).status_code == 303
    assert moderation.closed_slugs(svc.engine) == set()
    con.get("/admin/replies")
    assert con.post("/admin/replies/articles/no-such-article", {"closed": "1"}).status_code == 404


def test_only_editors_and_owners_moderate_and_forged_posts_change_nothing(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    waiting = reply(svc, "ann@example.org", "Waiting")
    for role in (Role.AUTHOR, Role.VIEWER, Role.OPERATOR):
        add_user(svc, f"{role.value}@example.com", role)
        other = Console(svc).signed_in(f"{role.value}@example.com")
        assert "/admin/replies" not in other.get("/admin/").text
        refused = other.get("/admin/replies")
        assert refused.status_code == 403
        assert "an editor or owner moderates readers&#39; replies" in refused.text
        for path, form in (
            ("/admin/replies/decide", {"action": "approve", "ids": str(waiting)}),
            (f"/admin/replies/articles/{SLUG}", {"closed": "1"}),
            ("/admin/replies/bans/1/delete", {}),
        ):
            assert other.post(path, form).status_code == 403, (role, path)
    con = editor(svc)
    con.get("/admin/replies")
    assert (
        con.post(
            "/admin/replies/decide", {"action": "approve", "ids": str(waiting)}, token=None
        ).status_code
        == 403
    )
    evil = con.post(
        "/admin/replies/decide",
        {"action": "approve", "ids": str(waiting)},
        origin="https://evil.example",
    )
    assert evil.status_code == 403
    assert [r.status for r in _rows(svc)] == [ReplyStatus.PENDING]
    assert moderation.closed_slugs(svc.engine) == set()


def _rows(svc: RunningService) -> list[Any]:
    with svc.engine.connect() as conn:
        return list(conn.execute(sa.select(db.replies).order_by(db.replies.c.id)).all())
