"""The operators' dashboard (/admin/operations) and the health checks (/healthz, /readyz,
``letterpress doctor``), against the real service in its own process, on SQLite and
PostgreSQL, with Redis and Celery's own queues: batches are put on the broker's queue by
the same dispatcher a worker's beat uses, and no worker takes them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import requests
import sqlalchemy as sa

from pipeline.ops import dashboard
from pipeline.ops.dashboard import Slow
from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef
from pipeline.sending.parts import SendingParts, enqueue
from pipeline.sending.prepare import prepare
from pipeline.statuses import BatchStatus, Role
from pipeline.store import db
from tests.cluster import seed_subscribers
from tests.conftest import SEEDS
from tests.service import RunningService, free_port, running_service
from tests.test_console import Console, add_user, text_of
from tests.test_service import service_for
from workers.broker import CeleryBroker

__all__ = ["service_for"]  # a fixture, imported for pytest

HTMX = {"HX-Request": "true"}


def operator(svc: RunningService) -> Console:
    add_user(svc, "otto@example.com", Role.OPERATOR)
    return Console(svc).signed_in("otto@example.com")


def started(svc: RunningService, subject: str, batch_size: int = 50) -> tuple[int, list[int]]:
    """An issue that started sending, its batches frozen; returns it and its batches."""
    engine = svc.engine
    issue_id = issues.create(
        engine, subject=subject, audience=("main",), articles=[ArticleRef(SEEDS[0], True)]
    )
    issues.schedule(engine, issue_id, None)
    issues.claim_due(engine, timedelta(hours=6))
    parts = SendingParts(svc.settings)
    return issue_id, prepare(engine, svc.settings, parts.catalog(), issue_id, batch_size)


def test_the_dashboard_shows_what_needs_an_operator(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    seed_subscribers(database_url, 120)
    sending, batches = started(svc, "K2 this week")  # 3 batches of 50, 50 and 20
    broker = CeleryBroker(svc.settings)
    enqueue(svc.engine, broker.dispatcher(), batches[1:])  # on the queue; no worker takes them
    paused = issues.create(svc.engine, subject="Held back", articles=[ArticleRef(SEEDS[1], True)])
    issues.schedule(svc.engine, paused, datetime.now(UTC) + timedelta(days=1))
    issues.pause(svc.engine, paused, "paused by the editor: the offer ends early")
    with svc.engine.begin() as conn:  # what a worker lost mid-call leaves (test_chaos)
        conn.execute(
            sa.update(db.batches)
            .where(db.batches.c.id == batches[0])
            .values(status=BatchStatus.AMBIGUOUS)
        )
        issues.event(conn, sending, "error", "batch 1: sendgrid answered 503")
    SendingParts(svc.settings).limiter.penalise(30.0)  # a 429 said "retry after 30 s"

    browser = operator(svc)
    page = browser.get("/admin/operations")
    assert page.status_code == 200, page.text
    assert page.headers["vary"] == "HX-Request"
    html = page.text

    send = text_of(html, rf'<li class="send" id="send-{sending}">(.*?)</li>')[0]
    assert "K2 this week" in send and "0% of 120" in send and "120 queued" in send
    assert text_of(html, r'<li id="no-workers">(.*?)</li>') == [
        "No worker is online while 2 message(s) wait on the queue: start one with"
        " letterpress worker."
    ]
    queue = svc.settings.redis_prefix + ".default"
    assert f"<tr><td>{queue}</td><td>0</td><td>2</td></tr>" in html
    assert text_of(html, r'<li class="ambiguous-issue">(.*?)</li>') == [
        f"Issue {sending}, “K2 this week”: 1 ambiguous batch — the provider may or may not"
        " have taken it. Reconcile it from the issue's batches."
    ]
    assert text_of(html, r'<li class="paused-issue">(.*?)</li>') == [
        f"Issue {paused}, “Held back” is paused: paused by the editor: the offer ends early."
    ]
    assert (
        "batch 1: sendgrid answered 503"
        in text_of(html, r'<table class="log" id="errors">(.*?)</table>')[0]
    )
    hold = text_of(html, r'<dd id="hold">(.*?)</dd>')[0]
    assert re.fullmatch(r"(2[0-9]|30) s left", hold), hold  # Redis time runs on meanwhile
    counts = dict(re.findall(r"<div><dt>(\w+)</dt><dd>([\d,]+)</dd></div>", html))
    assert counts["active"] == "120" and counts["unsubscribed"] == "0"
    assert text_of(html, r'<p id="workers-none">(.*?)</p>')[0].startswith("No worker answers")

    fragment = browser.get("/admin/operations", headers=HTMX)
    assert fragment.text.lstrip().startswith('<div id="live" hx-get="/admin/operations"')
    assert "<html" not in fragment.text and "K2 this week" in fragment.text


def test_only_owners_and_operators_open_the_dashboard(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    for role in Role:
        email = f"{role.value}@example.com"
        add_user(svc, email, role)
        browser = Console(svc).signed_in(email)
        home = browser.get("/admin/")
        answer = browser.get("/admin/operations")
        fragment = browser.get("/admin/operations", headers=HTMX)
        if role in (Role.OWNER, Role.OPERATOR):
            assert answer.status_code == 200 and fragment.status_code == 200
            assert 'href="/admin/operations"' in home.text
        else:
            assert answer.status_code == 403, role
            assert fragment.status_code == 403, role
            assert "You cannot watch the sending machinery" in answer.text
            assert "an operator or owner watches the sending machinery" in answer.text
            assert 'href="/admin/operations"' not in home.text


def test_without_redis_the_dashboard_says_sends_run_in_the_service(
    tmp_path: Path, sqlite_url: str
) -> None:
    with running_service(tmp_path, sqlite_url, None) as svc:
        html = operator(svc).get("/admin/operations").text
        assert text_of(html, r'<p id="no-broker">(.*?)</p>') == [
            "No broker: REDIS_URL is not set, so sends run inside this service's own process"
            " and there are no queues or workers to show."
        ]
        assert "This service's own bucket" in html
        ready = requests.get(svc.url + "/readyz", timeout=10)
        assert ready.status_code == 200
        assert ready.json()["checks"]["broker"] == {
            "ok": True,
            "detail": "not configured (no REDIS_URL): sending runs in the service's own process",
        }


def test_readyz_names_what_fails_and_healthz_stays_alive(tmp_path: Path, sqlite_url: str) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with running_service(tmp_path, sqlite_url, nobody) as svc:
        assert requests.get(svc.url + "/healthz", timeout=10).json() == {"status": "ok"}
        ready = requests.get(svc.url + "/readyz", timeout=30)
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert ready.json()["status"] == "not ready"
        assert checks["database"]["ok"] and checks["migrations"]["ok"]
        assert not checks["redis"]["ok"] and "Connection refused" in checks["redis"]["detail"]
        assert not checks["broker"]["ok"]

        db.downgrade(sqlite_url, "0005")  # someone ran an older release's migrations
        checks = requests.get(svc.url + "/readyz", timeout=30).json()["checks"]
        assert checks["migrations"] == {
            "ok": False,
            "detail": f"at migration 0005, not {db.head_revision()}: run `letterpress db upgrade`",
        }
        assert requests.get(svc.url + "/healthz", timeout=10).status_code == 200


def doctor(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers", "doctor"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_doctor_says_what_to_fix_then_that_all_is_ready(tmp_path: Path, redis_url: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'new.db'}"  # made, never migrated
    base = {k: v for k, v in os.environ.items() if not k.startswith("LETTERPRESS_")}
    base.pop("REDIS_URL", None)
    config = tmp_path / "letterpress.toml"
    config.write_text('provider = "mailgun"\nmailgun_domain = "mg.example.org"\n')
    env = {**base, "DATABASE_URL": sqlite_url, "LETTERPRESS_CONFIG": str(config)}

    first = doctor(tmp_path, env)
    assert first.returncode == 1, first.stdout + first.stderr
    out = first.stdout
    assert "FAIL migrations: at migration none" in out
    assert "FIX  provider: mailgun at https://api.mailgun.net; MAILGUN_API_KEY is not set" in out
    assert "FIX  signing: LETTERPRESS_SECRET_KEY is not set" in out
    assert "FIX  sender: postal address: not set; CAN-SPAM wants one" in out
    assert "A send would stop at once:" in out
    assert out.rstrip().endswith("Not ready: fix what is marked FAIL or FIX above.")

    db.upgrade(sqlite_url)
    config.write_text(
        'provider = "mailgun"\nmailgun_domain = "mg.example.org"\n'
        'base_url = "https://news.example.org"\npostal_address = "1 Test Street"\n'
        'sender_email = "news@example.org"\n'
    )
    secrets = {
        "LETTERPRESS_SECRET_KEY": "a" * 40,
        "MAILGUN_API_KEY": "key-secret-value-123",
        "MAILGUN_WEBHOOK_SIGNING_KEY": "signing-secret-456",
        "REDIS_URL": redis_url,
    }
    second = doctor(tmp_path, {**env, **secrets})
    out = second.stdout
    assert "ok   broker: redis transport answers" in out
    assert "FIX  workers: no worker answers on redis://127.0.0.1:" in out  # none started
    assert second.returncode == 1
    assert "Nothing stops a send." in out
    for secret in secrets.values():
        if not secret.startswith("redis"):
            assert secret not in out + second.stderr  # said to be set, never shown


def test_slow_answers_come_from_the_background_and_keep_the_last_one() -> None:
    calls: list[int] = []

    def ask() -> int:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the broker went away")
        return len(calls)

    slow: Slow[int] = Slow(ask, ttl=3600.0)
    first = slow.get(wait=5.0)
    assert first is not None and first.value == 1
    assert slow.get() is first and len(calls) == 1  # fresh: not asked again

    slow.ttl = 0.0  # stale: the next get asks again in the background
    assert slow.get() is first
    assert slow._running is not None
    slow._running.join(5.0)
    slow.ttl = 3600.0
    assert slow.error == "the broker went away"
    assert slow.get() is first  # the last answer is kept beside the error


def test_the_chart_counts_each_day_and_every_status_is_counted(database_url: str) -> None:
    db.upgrade(database_url)
    engine = db.engine(database_url)
    seed_subscribers(database_url, 3)
    today = date(2026, 11, 30)
    at = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    with engine.begin() as conn:
        issue_id = conn.execute(
            sa.insert(db.issues)
            .values(
                subject="Sent",
                audience=["main"],
                status="sent",
                created_at=at,
                updated_at=at,
                started_at=at,
                sent=3,
            )
            .returning(db.issues.c.id)
        ).scalar_one()
        clicks = [(at, 1), (at + timedelta(hours=20), 2), (at - timedelta(days=40), 3)]
        for when, who in clicks:
            conn.execute(
                sa.insert(db.clicks).values(
                    issue_id=issue_id, subscriber_id=who, position=0, at=when, engaged=True
                )
            )
    days = dashboard.chart(engine, days=30, today=today)
    assert len(days) == 30 and days[0].day == date(2026, 11, 1) and days[-1].day == today
    by_day = {d.day: (d.sent, d.clicks) for d in days if d.sent or d.clicks}
    assert by_day == {date(2026, 11, 28): (3, 1), date(2026, 11, 29): (0, 1)}
    counts = dashboard.subscriber_counts(engine)
    assert counts["active"] == 3 and set(counts) >= {"pending", "unsubscribed", "bounced"}
