"""The subscriber service end to end: ``letterpress serve`` in its own process, real
HTTP, Redis and SQL (SQLite and PostgreSQL), and issues really sent through the outbox,
whose emails provide the links a subscriber would follow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa

from pipeline.render.hot import Engagement
from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef
from pipeline.sending.parts import SendingParts
from pipeline.sending.prepare import prepare
from pipeline.sending.sender import unsubscribe_list
from pipeline.store import db
from tests.cluster import seed_subscribers
from tests.conftest import CONTENT, SEEDS
from tests.service import SECRET, RunningService, running_service

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Firefox/128.0"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def service_for(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> Iterator[Callable[..., RunningService]]:
    started: list[Any] = []

    def start(database_url: str, **settings: Any) -> RunningService:
        values = {
            "content_dir": str(CONTENT),
            "public_lists": ["main", "deals"],
            "batch_size": 50,
            **settings,
        }
        context = running_service(tmp_path, database_url, redis_url, settings=values)
        started.append(context)
        return context.__enter__()

    yield start
    for context in reversed(started):
        context.__exit__(None, None, None)


def mails(folder: Path, timeout: float = 10.0, count: int = 1) -> list[EmailMessage]:
    """The messages in an outbox folder, once there are ``count`` (sent after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(folder.glob("*.eml")) if folder.is_dir() else []
        if len(files) >= count or time.monotonic() > deadline:
            return [message_from_bytes(f.read_bytes(), policy=default) for f in files]
        time.sleep(0.05)


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body(preferencelist=(kind,))
    assert part is not None
    return str(part.get_content())


def mail_to(svc: RunningService, folder: str, address: str) -> EmailMessage:
    for message in mails(svc.settings.outbox_dir / folder, count=1):
        if address in str(message["To"]):
            return message
    raise AssertionError(f"no mail to {address} in {folder}")


def status_of(svc: RunningService, address: str) -> str | None:
    with svc.engine.connect() as conn:
        return conn.scalar(
            sa.select(db.subscribers.c.status).where(db.subscribers.c.email == address)
        )


def events_of(svc: RunningService, subscriber_id: int) -> list[str]:
    e = db.subscriber_events.c
    with svc.engine.connect() as conn:
        return list(
            conn.scalars(sa.select(e.kind).where(e.subscriber_id == subscriber_id).order_by(e.id))
        )


def send_issue(
    svc: RunningService, audience: tuple[str, ...] = ("main",), first_batch_only: bool = False
) -> tuple[int, list[int], SendingParts]:
    """Start an issue and send it through the outbox (all of it, or its first batch)."""
    rt = SendingParts(svc.settings)
    issue_id = issues.create(
        rt.engine,
        subject="Vitamin K2 this week",
        audience=audience,
        articles=[ArticleRef(SEEDS[0], True), ArticleRef(SEEDS[1], False)],
    )
    issues.schedule(rt.engine, issue_id, None)
    assert issues.claim_due(rt.engine, timedelta(hours=6)) == [issue_id]
    batches = prepare(rt.engine, rt.settings, rt.catalog(), issue_id, rt.batch_size)
    for batch in batches[:1] if first_batch_only else batches:
        assert rt.sender.send_batch(batch).status == "sent"
    return issue_id, batches, rt


def issue_mail(svc: RunningService, issue_id: int, address: str) -> EmailMessage:
    return mail_to(svc, f"issue-{issue_id}", address)


def delivery_row(svc: RunningService, issue_id: int, subscriber_id: int) -> Any:
    d = db.deliveries.c
    with svc.engine.connect() as conn:
        return conn.execute(
            sa.select(db.deliveries).where(d.issue_id == issue_id, d.subscriber_id == subscriber_id)
        ).first()


# -- sign-up --------------------------------------------------------------------------------


def test_sign_up_becomes_active_only_when_the_confirmation_is_posted(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    answer = requests.post(
        svc.url + "/api/subscribe",
        json={"email": "Ada@Example.com", "name": "Ada Lovelace", "lists": ["deals"]},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "pending"
    assert status_of(svc, "ada@example.com") == "pending"

    message = mail_to(svc, "signup-confirm", "ada@example.com")
    assert "Confirm your subscription" in str(message["Subject"])
    confirm_url = re.search(r"(http://\S+/confirm/\S+)", body(message, "plain"))
    assert confirm_url is not None
    assert confirm_url.group(1) in body(message, "html")

    # A GET (a link scanner, or the person) shows a button and changes nothing.
    page = requests.get(confirm_url.group(1), timeout=10)
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert status_of(svc, "ada@example.com") == "pending"

    done = requests.post(confirm_url.group(1), timeout=10)
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert status_of(svc, "ada@example.com") == "active"
    sid = svc.signer.verify("confirm", confirm_url.group(1).rsplit("/", 1)[1])
    assert sid is not None
    assert events_of(svc, sid.subscriber_id) == ["signup", "confirmed"]
    with svc.engine.connect() as conn:
        lists = conn.scalars(
            sa.select(db.lists.c.name)
            .join(db.memberships, db.memberships.c.list_id == db.lists.c.id)
            .where(db.memberships.c.subscriber_id == sid.subscriber_id)
        ).all()
    assert lists == ["deals"]

    # The form does the same.
    form = requests.post(svc.url + "/subscribe", data={"email": "bo@example.com"}, timeout=10)
    assert form.status_code == 200 and "Check your inbox" in form.text
    assert status_of(svc, "bo@example.com") == "pending"


def test_the_answer_never_tells_whether_an_address_is_known(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    seed_subscribers(sqlite_url, 2)  # reader1 and reader2, active
    with svc.engine.begin() as conn:
        conn.execute(
            sa.update(db.subscribers)
            .where(db.subscribers.c.email == "reader2@example.com")
            .values(status="bounced")
        )
    answers = [
        requests.post(svc.url + "/api/subscribe", json={"email": a}, timeout=10)
        for a in ("new@example.com", "reader1@example.com", "reader2@example.com")
    ]
    assert {a.status_code for a in answers} == {202}
    assert len({a.text for a in answers}) == 1
    assert len({a.headers.get("content-length") for a in answers}) == 1
    # The new address gets a confirmation; the known one a note with its preferences
    # link; the bounced one nothing, and it stays bounced.
    assert mail_to(svc, "signup-confirm", "new@example.com")
    known = mail_to(svc, "signup-known", "reader1@example.com")
    assert "/preferences/" in body(known, "plain")
    time.sleep(0.5)  # what is tested is an absence: time for a wrong mail to arrive
    outbox = svc.settings.outbox_dir
    sent_to = [str(m["To"]) for f in outbox.iterdir() for m in mails(f)]
    assert not any("reader2" in to for to in sent_to)
    assert status_of(svc, "reader2@example.com") == "bounced"


def test_bad_sign_ups_get_a_clear_4xx_and_change_nothing(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    api = svc.url + "/api/subscribe"
    cases = [
        ({"email": "not-an-address"}, 400, "not a valid email address"),
        ({"email": "x@example.com", "name": "Eve\r\nBcc: all@example.com"}, 400, "control"),
        ({"email": "x@example.com", "lists": ["secret-vip"]}, 400, "unknown list"),
        ({"email": "x" * 400 + "@example.com"}, 422, "email"),
        ({"name": "no address"}, 422, "email"),
    ]
    for payload, code, words in cases:
        answer = requests.post(api, json=payload, timeout=10)
        assert answer.status_code == code, (payload, answer.text)
        assert words in answer.text
    broken = requests.post(
        api, data=b'{"email": ', headers={"content-type": "application/json"}, timeout=10
    )
    assert broken.status_code == 422
    huge = requests.post(api, json={"email": "a@example.com", "name": "x" * 70_000}, timeout=10)
    assert huge.status_code == 413
    form = requests.post(
        svc.url + "/subscribe", data={"email": "nope"}, headers={"accept": "text/html"}, timeout=10
    )
    assert form.status_code == 400 and "not a valid email address" in form.text
    assert 'value="nope"' in form.text  # the form comes back filled in
    with svc.engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(db.subscribers)) == 0


def test_sign_ups_are_rate_limited_per_address_and_per_ip(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url, signup_per_address_per_day=2, signup_per_ip_per_hour=5)
    api = svc.url + "/api/subscribe"
    for _ in range(4):  # the same address, again and again (list bombing)
        assert (
            requests.post(api, json={"email": "victim@example.com"}, timeout=10).status_code == 202
        )
    time.sleep(0.5)  # what is tested is an absence: time for a third mail to arrive
    assert len(mails(svc.settings.outbox_dir / "signup-confirm", count=2)) == 2
    # The fifth request from this IP passes; the sixth is refused, with when to retry.
    assert requests.post(api, json={"email": "fifth@example.com"}, timeout=10).status_code == 202
    refused = requests.post(api, json={"email": "sixth@example.com"}, timeout=10)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert status_of(svc, "fifth@example.com") == "pending"
    assert status_of(svc, "sixth@example.com") is None


# -- unsubscribe --------------------------------------------------------------------------------


def test_one_click_unsubscribe_is_a_post_answered_200_and_a_get_changes_nothing(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    seed_subscribers(database_url, 3)
    issue_id, _, _ = send_issue(svc)
    message = issue_mail(svc, issue_id, "reader2@example.com")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = str(message["List-Unsubscribe"]).strip(" <>")
    assert url.startswith(svc.url + "/unsubscribe/")
    assert url in body(message, "html")

    page = requests.get(url, timeout=10)
    assert page.status_code == 200
    assert re.search(r"r•+@example\.com", page.text) and "Unsubscribe</button>" in page.text
    assert "reader2@" not in page.text  # a forwarded email must not show the address
    assert status_of(svc, "reader2@example.com") == "active"

    for _ in range(2):  # idempotent
        answer = requests.post(url, data=ONE_CLICK, allow_redirects=False, timeout=10)
        assert answer.status_code == 200
        assert "set-cookie" not in answer.headers
        assert answer.headers["referrer-policy"] == "no-referrer"
    assert status_of(svc, "reader2@example.com") == "unsubscribed"
    assert status_of(svc, "reader1@example.com") == "active"

    token = url.rsplit("/", 1)[1]
    sid, ref, mac = token.split(".")
    forged = [f"{int(sid) + 1}.{ref}.{mac}", f"{sid}.{ref}.{mac[:-2]}AA", f"{sid}.{ref}", "x"]
    for bad in forged:
        answer = requests.post(f"{svc.url}/unsubscribe/{bad}", data=ONE_CLICK, timeout=10)
        assert answer.status_code == 404, bad
    assert status_of(svc, "reader1@example.com") == "active"
    assert status_of(svc, "reader3@example.com") == "active"


def test_an_unsubscribe_is_honoured_from_the_next_batch_of_a_running_send(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    seed_subscribers(database_url, 120)
    issue_id, batches, rt = send_issue(svc, first_batch_only=True)
    assert len(batches) == 3
    # The first 50 have their email; reader110, in the last batch, leaves meanwhile.
    token = svc.signer.sign("unsubscribe", 110, unsubscribe_list(svc.engine, issue_id))
    assert requests.post(f"{svc.url}/unsubscribe/{token}", data=ONE_CLICK, timeout=10).ok
    for batch in batches[1:]:
        assert rt.sender.send_batch(batch).status == "sent"
    row = delivery_row(svc, issue_id, 110)
    assert row is None or row.status == "skipped"
    recipients = {str(m["To"]) for m in mails(svc.settings.outbox_dir / f"issue-{issue_id}")}
    assert len(recipients) == 119
    assert not any("reader110@" in r for r in recipients)


def test_leaving_one_list_keeps_the_others(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    seed_subscribers(sqlite_url, 2)
    with svc.engine.begin() as conn:
        deals = conn.execute(
            sa.insert(db.lists).values(name="deals", created_at=db.now()).returning(db.lists.c.id)
        ).scalar_one()
        conn.execute(
            sa.insert(db.memberships).values(list_id=deals, subscriber_id=1, created_at=db.now())
        )
    issue_id, _, _ = send_issue(svc, audience=("main",))
    url = str(issue_mail(svc, issue_id, "reader1@example.com")["List-Unsubscribe"]).strip(" <>")
    assert "the <strong>main</strong> list" in requests.get(url, timeout=10).text
    assert requests.post(url, data=ONE_CLICK, timeout=10).status_code == 200
    assert status_of(svc, "reader1@example.com") == "active"  # still on "deals"
    assert "left-list" in events_of(svc, 1)
    second, _, _ = send_issue(svc, audience=("main",))
    assert delivery_row(svc, second, 1) is None  # not in the audience any more
    assert delivery_row(svc, second, 2).status == "sent"


# -- preferences and data ---------------------------------------------------------------------


def _preferences_url(svc: RunningService, issue_id: int, address: str) -> str:
    found = re.search(
        r"(http://\S+/preferences/\S+)", body(issue_mail(svc, issue_id, address), "plain")
    )
    assert found is not None
    return found.group(1)


def test_preferences_choose_lists_time_zone_and_pause(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    seed_subscribers(database_url, 3)
    issue_id, _, _ = send_issue(svc)
    url = _preferences_url(svc, issue_id, "reader1@example.com")
    page = requests.get(url, timeout=10)
    assert page.status_code == 200 and "reader1@example.com" in page.text
    assert page.headers["cache-control"] == "no-store"

    saved = requests.post(
        url,
        data={
            "name": "Reader One",
            "lists": ["main", "deals"],
            "time_zone": "Europe/Paris",
            "paused": "1",
        },
        timeout=10,
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    with svc.engine.connect() as conn:
        row = conn.execute(sa.select(db.subscribers).where(db.subscribers.c.id == 1)).one()
    assert (row.name, row.time_zone, row.paused, row.status) == (
        "Reader One",
        "Europe/Paris",
        True,
        "active",
    )

    bad = requests.post(url, data={"lists": ["main"], "time_zone": "Mars/Olympus"}, timeout=10)
    assert bad.status_code == 400 and "Mars/Olympus" in bad.text

    # Paused: the next issue skips them; resumed: it reaches them again.
    second, _, _ = send_issue(svc)
    assert delivery_row(svc, second, 1).status == "skipped"
    assert delivery_row(svc, second, 1).reason == "paused"
    assert requests.post(url, data={"lists": ["main"], "time_zone": "UTC"}, timeout=10).ok
    third, _, _ = send_issue(svc)
    assert delivery_row(svc, third, 1).status == "sent"

    # No list at all is leaving.
    assert requests.post(url, data={"time_zone": "UTC"}, timeout=10).ok
    assert status_of(svc, "reader1@example.com") == "unsubscribed"
    # Choosing a list again is coming back: the signed link proves the address.
    assert requests.post(url, data={"lists": ["main"], "time_zone": "UTC"}, timeout=10).ok
    assert status_of(svc, "reader1@example.com") == "active"
    assert requests.get(url[:-3] + "abc", timeout=10).status_code == 404


def test_export_and_deletion_of_a_subscribers_data(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    seed_subscribers(database_url, 2)
    issue_id, _, _ = send_issue(svc)
    page = requests.get(_preferences_url(svc, issue_id, "reader1@example.com"), timeout=10).text
    export = re.search(r'href="(/export/[^"]+)"', page)
    delete = re.search(r'href="(/delete/[^"]+)"', page)
    assert export and delete

    data = requests.get(svc.url + export.group(1), timeout=10)
    assert data.status_code == 200
    assert data.headers["content-disposition"].startswith("attachment")
    exported = data.json()
    assert exported["email"] == "reader1@example.com"
    assert exported["lists"] == ["main"]
    assert exported["deliveries"][0]["issue"] == issue_id

    assert "Delete my data" in requests.get(svc.url + delete.group(1), timeout=10).text
    assert status_of(svc, "reader1@example.com") == "active"  # a GET deletes nothing
    gone = requests.post(svc.url + delete.group(1), timeout=10)
    assert gone.status_code == 200
    assert status_of(svc, "reader1@example.com") is None
    assert status_of(svc, "reader2@example.com") == "active"
    assert events_of(svc, 1) == []
    assert requests.get(svc.url + export.group(1), timeout=10).status_code == 404

    # Export and delete links expire.
    stale = svc.signer.sign("export", 2, int(time.time() // 3600) - 60)  # 60 hours old
    assert requests.get(f"{svc.url}/export/{stale}", timeout=10).status_code == 404


# -- the archive and the web version -------------------------------------------------------------


def test_every_sent_issue_has_a_stable_web_version(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    seed_subscribers(sqlite_url, 2)
    issue_id, _, _ = send_issue(svc)
    message = issue_mail(svc, issue_id, "reader1@example.com")
    view = f"{svc.url}/issues/{issue_id}/"
    assert view in body(message, "plain")  # in the HTML, through the click redirect
    with svc.engine.connect() as conn:
        assert (
            view
            in conn.scalars(
                sa.select(db.issue_links.c.url).where(db.issue_links.c.issue_id == issue_id)
            ).all()
        )
    page = requests.get(view, timeout=10)
    assert page.status_code == 200
    assert "Vitamin K2" in page.text
    assert "%%" not in page.text and "/r/" not in page.text and "Reader 1" not in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    archive = requests.get(svc.url + "/issues/", timeout=10)
    assert f'href="/issues/{issue_id}/"' in archive.text
    assert requests.get(f"{svc.url}/issues/{issue_id + 1}/", timeout=10).status_code == 404


# -- click tracking ----------------------------------------------------------------------------


def _tracked_links(message: EmailMessage) -> list[str]:
    return re.findall(r'href="(http://[^"]+/r/[^"]+)"', body(message, "html"))


def test_clicks_redirect_only_to_the_issues_links_and_rank_hot_articles(
    database_url: str, service_for: Callable[..., RunningService], redis_url: str
) -> None:
    svc = service_for(database_url)
    seed_subscribers(database_url, 2)
    issue_id, _, _ = send_issue(svc)
    message = issue_mail(svc, issue_id, "reader1@example.com")
    links = _tracked_links(message)
    assert links and all("%%" not in link for link in links)
    with svc.engine.connect() as conn:
        targets = dict(
            conn.execute(
                sa.select(db.issue_links.c.position, db.issue_links.c.url).where(
                    db.issue_links.c.issue_id == issue_id
                )
            ).all()
        )
        slugs = dict(
            conn.execute(
                sa.select(db.issue_links.c.position, db.issue_links.c.slug).where(
                    db.issue_links.c.issue_id == issue_id, db.issue_links.c.slug.is_not(None)
                )
            ).all()
        )
    assert slugs, "the issue links to its articles"
    position, slug = next(iter(slugs.items()))
    link = next(k for k in links if k.endswith(f"/{position}"))
    engagement = Engagement(redis.Redis.from_url(redis_url), svc.settings)

    def click(url: str, agent: str = BROWSER, method: str = "GET") -> requests.Response:
        return requests.request(
            method, url, headers={"user-agent": agent}, allow_redirects=False, timeout=10
        )

    def clicks() -> list[tuple[int, bool]]:
        c = db.clicks.c
        with svc.engine.connect() as conn:
            return [
                (r.position, bool(r.engaged))
                for r in conn.execute(sa.select(c.position, c.engaged).order_by(c.id))
            ]

    # Seconds after delivery: a gateway's scanner, recorded but not engagement.
    first = click(link)
    assert first.status_code == 302 and first.headers["location"] == targets[position]
    assert clicks() == [(position, False)]
    assert engagement.scores().get(slug, 0) == 0

    with svc.engine.begin() as conn:  # the delivery was a minute ago
        conn.execute(
            sa.update(db.deliveries)
            .where(db.deliveries.c.issue_id == issue_id)
            .values(updated_at=db.now() - timedelta(minutes=1))
        )
    assert click(link).status_code == 302
    assert clicks()[-1] == (position, True)
    assert engagement.scores()[slug] > 0

    assert click(link, method="HEAD").status_code == 302  # checked, not counted
    assert click(link, agent="Mozilla/5.0 (compatible; Barracuda Sentinel)").status_code == 302
    assert click(link, agent="").status_code == 302
    assert clicks()[2:] == [(position, False), (position, False)]

    # Nothing else is a link of ours: no open redirect, no forged or borrowed token.
    token = link.split("/r/", 1)[1].split("/")[0]
    sid, ref, mac = token.split(".")
    bad = [
        f"{svc.url}/r/{token}/{len(targets)}",
        f"{svc.url}/r/{token}/-1",
        f"{svc.url}/r/{sid}.{int(ref) + 1}.{mac}/0",
        f"{svc.url}/r/{int(sid) + 1}.{ref}.{mac}/0",
        f"{svc.url}/r/{token}/0?url=https://evil.example.com",
    ]
    for url in bad[:4]:
        assert click(url).status_code in (404, 422), url
    assert click(bad[4]).headers.get("location") == targets[0]
    assert len(clicks()) == 5


def test_page_view_beacon_counts_each_reader_once(
    sqlite_url: str, service_for: Callable[..., RunningService], redis_url: str
) -> None:
    svc = service_for(sqlite_url)
    engagement = Engagement(redis.Redis.from_url(redis_url), svc.settings)
    headers = {"user-agent": BROWSER}
    for _ in range(3):
        answer = requests.post(f"{svc.url}/v/{SEEDS[0]}", headers=headers, timeout=10)
        assert answer.status_code == 204
    assert (
        requests.post(f"{svc.url}/v/no-such-article", headers=headers, timeout=10).status_code
        == 204
    )
    requests.post(f"{svc.url}/v/{SEEDS[1]}", headers={"user-agent": "Googlebot/2.1"}, timeout=10)
    scores = engagement.scores()
    assert set(scores) == {SEEDS[0]}
    views = engagement.client.zscore(engagement.keys.hot_views, SEEDS[0])
    assert views is not None and float(views) > 0


# -- the service itself ---------------------------------------------------------------------------


def test_openapi_describes_the_service_and_logs_hold_no_tokens(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    spec = requests.get(svc.url + "/openapi.json", timeout=10).json()
    for path in (
        "/api/subscribe",
        "/unsubscribe/{token}",
        "/preferences/{token}",
        "/r/{token}/{position}",
        "/issues/{issue_id}/",
    ):
        assert path in spec["paths"], path
    assert set(spec["paths"]["/unsubscribe/{token}"]) == {"get", "post"}
    token = svc.signer.sign("unsubscribe", 12345, 0)
    requests.post(f"{svc.url}/unsubscribe/{token}", data=ONE_CLICK, timeout=10)
    requests.post(svc.url + "/api/subscribe", json={"email": "private@example.com"}, timeout=10)
    log = svc.output_once("/api/subscribe")
    assert "/unsubscribe/…" in log
    assert token not in log and "private@example.com" not in log
    page = requests.get(svc.url + "/subscribe", timeout=10)
    for header in (
        "content-security-policy",
        "x-content-type-options",
        "referrer-policy",
        "x-frame-options",
    ):
        assert header in page.headers
    assert json.loads(requests.get(svc.url + "/healthz", timeout=10).text) == {"status": "ok"}


# -- bad form input and previews ----------------------------------------------------------

NOT_UTF8 = [
    ("application/x-www-form-urlencoded", b"email=%FF%FEann%40example.org&name=Ann"),
    ("application/x-www-form-urlencoded", b"email=ann%40example.org&name=Ann\xe9"),
    (
        "multipart/form-data; boundary=XyZ",
        b'--XyZ\r\nContent-Disposition: form-data; name="email"\r\n\r\nann@example.org\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="name"\r\n\r\nAnn\xe9\r\n--XyZ--\r\n',
    ),
    (  # a transfer encoding means nothing to the form parser: the raw bytes are checked
        "multipart/form-data; boundary=XyZ",
        b'--XyZ\r\nContent-Disposition: form-data; name="email"\r\n\r\nann@example.org\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="name"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nQW5u\xff\xfe\r\n--XyZ--\r\n",
    ),
]


def table_rows(svc: RunningService) -> tuple[Any, ...]:
    with svc.engine.connect() as conn:
        return tuple(
            tuple(conn.execute(sa.select(table)).all())
            for table in (db.subscribers, db.memberships, db.subscriber_events)
        )


@pytest.mark.parametrize(("content_type", "payload"), NOT_UTF8)
def test_form_fields_that_are_not_utf8_are_refused_and_nothing_is_stored(
    sqlite_url: str, service_for: Callable[..., RunningService], content_type: str, payload: bytes
) -> None:
    svc = service_for(sqlite_url)
    seed_subscribers(sqlite_url, 1)
    token = svc.signer.sign("preferences", 1)
    before = table_rows(svc)
    field = "email" if b"%FF" in payload else "name"
    for path in ("/subscribe", f"/preferences/{token}"):
        for accept, kind in (("text/html", "text/html"), ("*/*", "application/json")):
            answer = requests.post(
                svc.url + path,
                data=payload,
                headers={"content-type": content_type, "accept": accept},
                timeout=10,
            )
            assert answer.status_code == 400, (path, answer.text)
            assert answer.headers["content-type"].startswith(kind)
            assert f"the form field {field} is not valid UTF-8" in answer.text
    assert table_rows(svc) == before
    # The same form in UTF-8 goes through.
    good = requests.post(
        svc.url + "/subscribe",
        data={"email": "ann@example.org", "name": "Anné"},
        headers={"accept": "text/html"},
        timeout=10,
    )
    assert good.status_code == 200 and status_of(svc, "ann@example.org") == "pending"
    # Raw UTF-8 bytes in a urlencoded body (curl -d) arrive as sent, not read as Latin-1.
    raw = requests.post(
        svc.url + "/subscribe",
        data="email=zoe%40example.org&name=Zoë".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert raw.status_code == 200, raw.text
    with svc.engine.connect() as conn:
        name = conn.scalar(
            sa.select(db.subscribers.c.name).where(db.subscribers.c.email == "zoe@example.org")
        )
    assert name == "Zoë"


def test_the_links_of_a_preview_lead_to_pages_that_say_so(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    seed_subscribers(sqlite_url, 2)
    before = table_rows(svc)
    for link in ("unsubscribe", "preferences"):
        page = requests.get(f"{svc.url}/preview/{link}", timeout=10)
        assert page.status_code == 200
        assert "This is a preview" in page.text and "Nothing has changed" in page.text
    assert requests.get(f"{svc.url}/preview/other", timeout=10).status_code == 404
    # A mail client's one-click unsubscribe on an opened message.eml is a POST.
    one_click = requests.post(f"{svc.url}/preview/unsubscribe", data=ONE_CLICK, timeout=10)
    assert one_click.status_code == 200 and "This is a preview" in one_click.text
    assert table_rows(svc) == before


def test_without_redis_the_service_runs_one_process(
    make_settings: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without Redis the limits and previews live in the process: two processes would
    each allow the whole limit. One runs, and asking for more says what to do."""
    from pipeline.cli.serve import processes_for
    from pipeline.errors import ConfigError

    alone = make_settings(serve_workers=3, redis_url=None)
    assert processes_for(alone, None) == 1
    assert "one process, not serve_workers (3), since REDIS_URL is not set" in (
        capsys.readouterr().err
    )
    assert processes_for(alone, 1) == 1
    with pytest.raises(ConfigError, match=r"--workers 2 needs REDIS_URL.*--workers 1"):
        processes_for(alone, 2)
    shared = make_settings(serve_workers=3, redis_url="redis://127.0.0.1:6379/15")
    assert (processes_for(shared, None), processes_for(shared, 2)) == (3, 2)
    assert capsys.readouterr().err == ""

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    db.upgrade(url)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATABASE_URL=url, LETTERPRESS_SECRET_KEY=SECRET, LETTERPRESS_CONFIG="")
    done = subprocess.run(
        [sys.executable, "-m", "workers", "serve", "--port", "0", "--workers", "2"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--workers 2 needs REDIS_URL" in done.stderr


def test_serve_refuses_a_site_dir_that_is_not_there(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    db.upgrade(url)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    missing = tmp_path / "not-built"
    env.update(
        DATABASE_URL=url,
        LETTERPRESS_SECRET_KEY=SECRET,
        LETTERPRESS_CONFIG="",
        LETTERPRESS_SITE_DIR=str(missing),
    )
    done = subprocess.run(
        [sys.executable, "-m", "workers", "serve", "--port", "0", "--workers", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"site_dir {missing} is not a folder: build the site into it first" in done.stderr
