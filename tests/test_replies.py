"""Readers' replies: what a reply may say and how it is shown, and the service end to end
(``letterpress serve`` in its own process, real HTTP, Redis and SQL on both databases):
moderation, the guard against bots, bans and closing, limits, notifications, the data
rights, the moderators' digest and the ranking."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa

from pipeline.audience import consent
from pipeline.render.hot import Engagement
from pipeline.replies import digest, guard, moderation
from pipeline.replies.text import ReplyProblem, check, segments, to_html
from pipeline.sending.providers import create as create_provider
from pipeline.settings import Settings
from pipeline.store import db
from tests.conftest import SEEDS
from tests.service import RunningService
from tests.test_service import mails, service_for

SLUG = SEEDS[1]  # the seed with the "Leave a Reply" block
API = f"/api/replies/{SLUG}"

__all__ = ["service_for"]  # a fixture, imported for pytest


# -- what a reply may say -----------------------------------------------------------------------


def test_reply_text_is_plain_and_its_web_addresses_are_ugc_links(settings: Settings) -> None:
    body = (
        '<script>alert("x")</script> **bold** ![img](https://e.example/i.png)\n'
        "see https://example.org/a?b=1&c=2 and www.example.com.\n\n"
        "mail me at ann@example.org; javascript:alert(1)"
    )
    html = str(to_html(body))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and "<strong>" not in html and "**bold**" in html
    assert (
        '<a href="https://example.org/a?b=1&amp;c=2" rel="ugc nofollow noopener">'
        "https://example.org/a?b=1&amp;c=2</a>" in html
    )
    assert (
        '<a href="http://www.example.com" rel="ugc nofollow noopener">www.example.com</a>' in html
    )
    assert "mailto:" not in html and 'href="javascript' not in html
    assert html.count("<p>") == 2 and "<br>" in html
    paragraphs = segments("one\ntwo https://x.example\n\nthree")
    assert paragraphs == [
        [[("one", None)], [("two ", None), ("https://x.example", "https://x.example")]],
        [[("three", None)]],
    ]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"name": "  "}, "name", "enter your name"),
        ({"name": "x" * 101}, "name", "at most 100"),
        ({"email": ""}, "email", "not published"),
        ({"email": "not an address"}, "email", "not an email address"),
        ({"website": "javascript:alert(1)"}, "website", "web address"),
        ({"website": "https://no-dot"}, "website", "web address"),
        ({"comment": " \n "}, "comment", "write your reply"),
        ({"comment": "x" * 5001}, "comment", "at most 5000"),
        (
            {"comment": "a https://a.example b https://b.example c https://c.example"},
            "comment",
            "at most 2 web addresses",
        ),
    ],
)
def test_each_field_is_checked_with_a_sentence_for_the_reader(
    settings: Settings, fields: dict[str, str], field: str, words: str
) -> None:
    values = {
        "name": "Ann",
        "email": "ann@example.org",
        "website": "",
        "comment": "Hello",
        **fields,
    }
    with pytest.raises(ReplyProblem) as caught:
        check(settings, values["name"], values["email"], values["website"], values["comment"])
    assert caught.value.field == field
    assert words in caught.value.message


def test_fields_are_normalised(settings: Settings) -> None:
    f = check(settings, " Ann\u200b  Lee ", "Ann@Example.ORG", "example.org/me", "Hi\r\nthere\x00 ")
    assert (f.name, f.email, f.website, f.body) == (
        "Ann Lee",
        "ann@example.org",
        "https://example.org/me",
        "Hi\nthere",
    )


# -- the service --------------------------------------------------------------------------------


@pytest.fixture
def replies_service(service_for: Callable[..., RunningService]) -> Callable[..., RunningService]:
    """``service_for``, with a page-load time short enough for the tests to wait out."""

    def start(database_url: str, **settings: Any) -> RunningService:
        return service_for(database_url, **{"reply_min_seconds": 0.5, **settings})

    return start


def fresh_token(svc: RunningService) -> str:
    answer = requests.get(svc.url + API, timeout=10)
    assert answer.status_code == 200, answer.text
    token = answer.json()["token"]
    time.sleep(svc.settings.reply_min_seconds + 0.1)
    return str(token)


def post(svc: RunningService, token: str | None = None, **fields: Any) -> requests.Response:
    body = {
        "token": fresh_token(svc) if token is None else token,
        "name": "Ann Reader",
        "email": "ann@example.org",
        "comment": "Does K2 work without D3?",
        **fields,
    }
    return requests.post(svc.url + API, json=body, headers={"Origin": svc.url}, timeout=10)


def shown(svc: RunningService, wait_for: int | None = None) -> list[dict[str, Any]]:
    """The approved replies the public gets (waiting out the page's one-second cache)."""
    deadline = time.monotonic() + 5
    while True:
        answer = requests.get(svc.url + API, timeout=10)
        assert answer.status_code == 200
        threads: list[dict[str, Any]] = answer.json()["replies"]
        if wait_for is None or len(threads) == wait_for or time.monotonic() > deadline:
            return threads
        time.sleep(0.2)


def rows(svc: RunningService) -> list[Any]:
    with svc.engine.connect() as conn:
        return list(conn.execute(sa.select(db.replies).order_by(db.replies.c.id)).all())


def test_a_first_reply_waits_and_once_approved_the_address_is_published_at_once(
    database_url: str, replies_service: Callable[..., RunningService]
) -> None:
    svc = replies_service(database_url)
    first = post(svc, website="ann.example.org")
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "pending"
    assert "awaits moderation" in first.json()["message"]
    assert shown(svc) == []
    (held,) = rows(svc)
    assert (held.status, held.email, held.website) == (
        "pending",
        "ann@example.org",
        "https://ann.example.org",
    )
    assert held.range_hash and "127.0.0.1" not in held.range_hash

    decided = moderation.decide(svc.engine, [held.id], "approve", "mod@example.org", None)
    assert decided.approved == [held.id]
    (thread,) = shown(svc, wait_for=1)
    assert thread["name"] == "Ann Reader" and thread["answers"] == []
    assert thread["paragraphs"] == [[[["Does K2 work without D3?", None]]]]

    again = post(svc, comment="And with magnesium?")
    assert again.status_code == 201 and again.json()["status"] == "approved"
    assert again.json()["reply"]["name"] == "Ann Reader"
    answer = post(svc, email="bob@example.org", name="Bob", comment="Yes.", answers=held.id)
    assert answer.json()["status"] == "pending"
    moderation.decide(svc.engine, [rows(svc)[-1].id], "approve", "mod", None)
    threads = shown(svc, wait_for=2)
    assert [t["id"] for t in threads] == [held.id, rows(svc)[1].id]  # oldest first
    assert [a["name"] for a in threads[0]["answers"]] == ["Bob"]
    # A reply to an answer joins the thread of the reply it answers (one level).
    bob_id = threads[0]["answers"][0]["id"]
    deeper = post(svc, comment="Thanks, Bob.", answers=bob_id)
    assert deeper.json()["status"] == "approved"
    threads = shown(svc, wait_for=2)
    deadline = time.monotonic() + 5
    while len(threads[0]["answers"]) < 2 and time.monotonic() < deadline:
        threads = shown(svc)
    assert [a["name"] for a in threads[0]["answers"]] == ["Bob", "Ann Reader"]
    # Nothing the public gets names an address.
    for url in (API, f"/replies/{SLUG}"):
        text = requests.get(svc.url + url, timeout=10).text
        assert "ann@example.org" not in text and "bob@example.org" not in text
        assert "Bob" in text


@pytest.mark.parametrize(
    "moderation_mode, statuses",
    [("all", ["pending", "pending"]), ("none", ["approved", "approved"])],
)
def test_moderation_can_hold_every_reply_or_none(
    sqlite_url: str,
    replies_service: Callable[..., RunningService],
    moderation_mode: str,
    statuses: list[str],
) -> None:
    svc = replies_service(sqlite_url, reply_moderation=moderation_mode)
    first = post(svc)
    if moderation_mode == "all":
        moderation.decide(svc.engine, [rows(svc)[0].id], "approve", "mod", None)
    second = post(svc, comment="Again")
    assert [first.json()["status"], second.json()["status"]] == statuses


def test_bots_are_refused_and_nothing_is_stored(
    database_url: str, replies_service: Callable[..., RunningService]
) -> None:
    svc = replies_service(database_url, reply_min_seconds=2)
    token = requests.get(svc.url + API, timeout=10).json()["token"]
    too_fast = post(svc, token=token)
    assert too_fast.status_code == 400 and "quicker" in too_fast.json()["detail"]
    time.sleep(2.1)
    honeypot = post(svc, token=token, url="https://spam.example")
    assert honeypot.status_code == 400
    forged = post(svc, token=token[:-3] + "AAA")
    assert forged.status_code == 400 and "send your reply again" in forged.json()["detail"]
    other_article = guard.form_token(svc.signer, SEEDS[0], time.time() - 60)
    assert post(svc, token=other_article).status_code == 400
    foreign = requests.post(
        svc.url + API,
        json={"token": token, "name": "A", "email": "a@example.org", "comment": "x"},
        headers={"Origin": "https://evil.example"},
        timeout=10,
    )
    assert foreign.status_code == 403
    # The page's form without a token, as a bot that skips the page would send it.
    form = requests.post(
        svc.url + f"/replies/{SLUG}",
        data={"name": "A", "email": "a@example.org", "comment": "x"},
        timeout=10,
    )
    assert form.status_code == 400 and "send your reply again" in form.text
    assert 'name="token" value="' in form.text and "a@example.org" in form.text  # kept for them
    assert rows(svc) == []
    assert f"a reply to {SLUG} was refused: honeypot" in svc.output_once("honeypot")


def test_bans_and_closed_articles_refuse_replies(
    database_url: str, replies_service: Callable[..., RunningService]
) -> None:
    svc = replies_service(database_url)
    assert post(svc).status_code == 201
    assert post(svc, email="eve@example.org", name="Eve").status_code == 201
    ann, eve = rows(svc)
    assert moderation.ban(svc.engine, [eve.id], "address", "mod", None) == 1
    assert rows(svc)[1].status == "spam"  # the banned address's waiting reply
    banned = post(svc, email="eve@example.org", name="Eve", comment="again")
    assert banned.status_code == 403 and "not accepted" in banned.json()["detail"]
    assert post(svc, email="carl@example.org").status_code == 201
    # The IP range: everyone on loopback is in it.
    moderation.ban(svc.engine, [ann.id], "range", "mod", None)
    assert post(svc, email="dora@example.org").status_code == 403
    (lifted,) = [b for b in moderation.bans(svc.engine) if b.kind == "range"]
    assert moderation.unban(svc.engine, lifted.id, None)
    moderation.set_closed(svc.engine, SLUG, True, "mod", None)
    time.sleep(1.1)
    closed = post(svc, email="dora@example.org")
    assert closed.status_code == 403 and "closed" in closed.json()["detail"]
    assert requests.get(svc.url + API, timeout=10).json()["open"] is False
    assert len(rows(svc)) == 3


def test_rate_limits_per_ip_and_per_address(
    sqlite_url: str, replies_service: Callable[..., RunningService]
) -> None:
    svc = replies_service(sqlite_url, reply_per_ip_per_hour=3, reply_per_address_per_hour=2)
    token = fresh_token(svc)
    codes = [post(svc, token=token, comment=f"n{i}").status_code for i in range(2)]
    third = post(svc, token=token, comment="n3")
    assert codes == [201, 201] and third.status_code == 429
    assert 0 < int(third.headers["retry-after"]) <= 3600
    other = post(svc, token=token, email="bob@example.org", comment="n4")
    assert other.status_code == 429  # the fourth from this IP
    assert len(rows(svc)) == 2


def test_blocked_words_make_spam_kept_out_of_sight_and_purged_after_30_days(
    sqlite_url: str, replies_service: Callable[..., RunningService]
) -> None:
    svc = replies_service(sqlite_url, reply_blocklist=["casino"], reply_moderation="none")
    spam = post(svc, comment="Best CASINO bonus here")
    assert spam.status_code == 201 and spam.json()["status"] == "pending"  # it learns nothing
    assert post(svc, comment="A casinos review").json()["status"] == "approved"  # whole words
    assert len(shown(svc, wait_for=1)) == 1
    held, total = moderation.queue(svc.engine, moderation.ReplyStatus.SPAM)
    assert total == 1 and held[0].body == "Best CASINO bonus here"
    assert moderation.purge_spam(svc.engine, svc.settings) == 0
    later = db.now() + timedelta(days=31)
    assert moderation.purge_spam(svc.engine, svc.settings, now=later) == 1
    assert [r.status for r in rows(svc)] == ["approved"]


def test_bad_bodies_get_a_4xx_and_nothing_is_stored(
    database_url: str, replies_service: Callable[..., RunningService]
) -> None:
    svc = replies_service(database_url)
    url = svc.url + API
    assert (
        requests.post(
            url, data=b"{not json", headers={"content-type": "application/json"}, timeout=10
        ).status_code
        == 422
    )
    assert requests.post(url, json={"comment": 5, "answers": "x"}, timeout=10).status_code == 422
    assert (
        requests.post(
            url, data=b"x" * 70_000, headers={"content-type": "application/json"}, timeout=10
        ).status_code
        == 413
    )
    latin1 = "name=Jos\xe9&email=a@example.org&comment=hi".encode("latin-1")
    form = requests.post(
        svc.url + f"/replies/{SLUG}",
        data=latin1,
        headers={"content-type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert 400 <= form.status_code < 500
    assert requests.get(svc.url + "/api/replies/no-such-article", timeout=10).status_code == 404
    assert requests.get(svc.url + "/api/replies/Not_A_Slug", timeout=10).status_code == 422
    missing = post(svc, answers=987654)
    assert missing.status_code == 400 and "not on this page" in missing.json()["detail"]
    assert rows(svc) == []


def test_notifications_need_a_confirmed_address_and_stop_in_one_click(
    database_url: str, replies_service: Callable[..., RunningService]
) -> None:
    svc = replies_service(database_url, reply_moderation="none")
    asked = post(svc, notify=True)
    assert "confirm with the link" in asked.json()["message"]
    ann_id = asked.json()["reply"]["id"]
    (confirm_mail,) = mails(svc.settings.outbox_dir / "reply-confirm")
    assert "ann@example.org" in str(confirm_mail["To"])
    text = confirm_mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    link = next(w for w in text.split() if "/replies/notify/" in w)
    # Not yet confirmed: an answer tells nobody.
    post(svc, email="bob@example.org", name="Bob", comment="First answer", answers=ann_id)
    time.sleep(0.5)
    assert not (svc.settings.outbox_dir / "reply-notice").exists()
    assert requests.get(link, timeout=10).status_code == 200  # a GET changes nothing
    assert rows(svc)[0].notify == "unconfirmed"
    assert requests.post(link, timeout=10).status_code == 200
    assert rows(svc)[0].notify == "on"

    post(
        svc, email="bob@example.org", name="Bob <b>", comment="Second <i>answer</i>", answers=ann_id
    )
    (notice,) = mails(svc.settings.outbox_dir / "reply-notice")
    assert "ann@example.org" in str(notice["To"])
    html = notice.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert "Second &lt;i&gt;answer&lt;/i&gt;" in html and "Bob &lt;b&gt;" in html
    stop = str(notice["List-Unsubscribe"]).strip().lstrip("<").rstrip(">")
    assert notice["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (
        requests.post(stop, data={"List-Unsubscribe": "One-Click"}, timeout=10).status_code == 200
    )
    assert rows(svc)[0].notify == "off"
    post(svc, email="bob@example.org", name="Bob", comment="Third answer", answers=ann_id)
    # Her own answer to her own reply never notifies her either.
    post(svc, comment="Talking to myself", answers=ann_id)
    time.sleep(0.5)
    assert len(mails(svc.settings.outbox_dir / "reply-notice")) == 1


def test_a_confirmed_subscriber_gets_notices_without_another_confirmation(
    sqlite_url: str, replies_service: Callable[..., RunningService]
) -> None:
    svc = replies_service(sqlite_url, reply_moderation="none")
    signup = consent.signup(svc.engine, svc.settings, "ann@example.org", "Ann", [])
    consent.confirm(svc.engine, signup.subscriber_id)
    asked = post(svc, notify=True)
    assert "confirm" not in asked.json()["message"]
    post(
        svc,
        email="bob@example.org",
        name="Bob",
        comment="Hi Ann",
        answers=asked.json()["reply"]["id"],
    )
    assert len(mails(svc.settings.outbox_dir / "reply-notice")) == 1
    assert not (svc.settings.outbox_dir / "reply-confirm").exists()


@pytest.mark.parametrize("mode", ["remove", "anonymise"])
def test_the_data_export_holds_the_replies_and_erasure_removes_them(
    sqlite_url: str, replies_service: Callable[..., RunningService], mode: str
) -> None:
    svc = replies_service(sqlite_url, reply_moderation="none", reply_erasure=mode)
    signup = consent.signup(svc.engine, svc.settings, "ann@example.org", "Ann", [])
    consent.confirm(svc.engine, signup.subscriber_id)
    post(svc, comment="My reply", website="ann.example.org")
    post(svc, email="bob@example.org", name="Bob", comment="Not Ann's")
    data = consent.export(svc.engine, signup.subscriber_id)
    assert [(r["text"], r["article"], r["website"]) for r in data["replies"]] == [
        ("My reply", SLUG, "https://ann.example.org")
    ]
    assert consent.erase(svc.engine, signup.subscriber_id, svc.settings)
    left = [(r.name, r.email, r.website, r.body) for r in rows(svc)]
    if mode == "remove":
        assert left == [("Bob", "bob@example.org", "", "Not Ann's")]
    else:
        assert left == [
            ("a reader", "", "", "My reply"),
            ("Bob", "bob@example.org", "", "Not Ann's"),
        ]
    time.sleep(1.1)
    assert "ann@example.org" not in requests.get(svc.url + API, timeout=10).text


def test_the_moderators_get_one_digest_for_many_waiting_replies(
    sqlite_url: str, replies_service: Callable[..., RunningService]
) -> None:
    svc = replies_service(sqlite_url, reply_moderators=["mod@example.org", "ed@example.org"])
    for i in range(3):
        post(svc, email=f"r{i}@example.org", comment=f"Reply <b>{i}</b>")
    provider = create_provider(svc.settings)
    first = digest.tend(svc.engine, svc.settings, provider)
    assert (first.told, first.moderators) == (3, 2)
    assert digest.tend(svc.engine, svc.settings, provider).told == 0  # nothing new
    post(svc, email="r9@example.org")
    assert digest.tend(svc.engine, svc.settings, provider).told == 1
    sent = mails(svc.settings.outbox_dir / "reply-digest", count=4)
    assert len(sent) == 4
    html = sent[0].get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert "Reply &lt;b&gt;0&lt;/b&gt;" in html and "/admin/replies" in html
    assert {str(m["To"]) for m in sent} == {"mod@example.org", "ed@example.org"}


def test_approved_replies_rank_their_article(
    sqlite_url: str, replies_service: Callable[..., RunningService], redis_url: str
) -> None:
    svc = replies_service(sqlite_url, hot_reply_weight=5.0)
    engagement = Engagement(redis.Redis.from_url(redis_url), svc.settings)
    post(svc)
    assert engagement.scores().get(SLUG, 0.0) == 0.0  # waiting replies rank nothing
    moderation.decide(svc.engine, [rows(svc)[0].id], "approve", "mod", None)
    # The console ranks what a moderator approves; a reply published at once ranks itself.
    post(svc, comment="Published at once")
    deadline = time.monotonic() + 5
    while engagement.scores().get(SLUG, 0.0) < 5.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert engagement.scores()[SLUG] == pytest.approx(5.0, rel=0.01)


# -- which pages take replies ---------------------------------------------------------------


def test_front_matter_and_categories_say_which_pages_take_replies(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from pipeline.content.store import FileContentStore
    from pipeline.site.build import Builder
    from tests.conftest import front, write_article

    content = tmp_path / "content"
    write_article(content, "open-one", front("Open one"))
    write_article(content, "closed-one", front("Closed one", replies="false"))
    quiet = "category: Quiet\nstatus: published\npublished: 2026-01-02"
    write_article(content, "forced-one", f"title: Forced one\n{quiet}\nreplies: true")
    write_article(content, "quiet-one", f"title: Quiet one\n{quiet}")
    settings = make_settings(reply_categories=["Testing"], secret_key="s" * 20)
    out = tmp_path / "site"
    report = Builder(settings, out, content_dir=content).build()
    assert report.ok, report.problems
    for slug, takes in [("open-one", True), ("closed-one", False), ("forced-one", True),
                        ("quiet-one", False)]:  # fmt: skip
        html = (out / "articles" / slug / "index.html").read_text()
        assert ("Leave a Reply" in html) is takes, slug
        assert ("assets/replies.js" in html) is takes, slug
    html = (out / "articles" / "open-one" / "index.html").read_text()
    assert 'action="https://news.example.org/replies/open-one"' in html
    token = html.split('name="token" value="')[1].split('"')[0]
    claim = guard.Signer("s" * 20).verify("reply", token)
    assert claim is not None and claim.ref == guard.slug_check("open-one")

    write_article(content, "bad-one", front("Bad one", replies="maybe"))
    problems = FileContentStore(content, settings).catalog().problems
    assert [p.message for p in problems] == ["replies must be true or false"]
