"""Delivery in one process: the snapshot, the batches, the log, faults and reconcile,
through the real provider adapters and the loopback double, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from letterpress_testing.server import DoubleServer
from pipeline.audience import changes, subscribers
from pipeline.audience.tokens import Signer
from pipeline.sending import issues, lease
from pipeline.sending.batches import Outcome, mark_enqueued
from pipeline.sending.issues import ArticleRef
from pipeline.sending.parts import SendingParts
from pipeline.sending.prepare import prepare
from pipeline.sending.recover import reconcile, sweep
from pipeline.settings import Settings
from pipeline.store import db
from tests.cluster import SECRET, seed_subscribers
from tests.conftest import CONTENT, SEEDS
from tests.test_providers import SmtpServer, smtp_server  # noqa: F401 (a fixture)


@pytest.fixture
def double() -> Iterator[DoubleServer]:
    with DoubleServer(keep_messages=True) as server:
        yield server


@pytest.fixture
def runtime_for(
    make_settings: Callable[..., Settings], double: DoubleServer, tmp_path: Path
) -> Iterator[Callable[..., SendingParts]]:
    made: list[SendingParts] = []

    def make(url: str, **overrides: Any) -> SendingParts:
        values: dict[str, Any] = {
            "database_url": url,
            "content_dir": CONTENT,
            "secret_key": SECRET,
            "sender_email": "newsletter@news.example.org",
            "provider": "sendgrid",
            "sendgrid_base_url": double.url,
            "sendgrid_api_key": double.sendgrid_key,
            "mailgun_base_url": double.url,
            "mailgun_api_key": double.mailgun_key,
            "mailgun_domain": "mg.example.org",
            "postmark_base_url": double.url,
            "postmark_server_token": double.postmark_token,
            "outbox_dir": tmp_path / "outbox",
            "batch_size": 50,
            "retry_base_seconds": 0.01,
            "retry_max_seconds": 0.05,
            "retry_attempts": 8,
            "lease_seconds": 60,
            "redis_url": None,
        }
        values.update(overrides)
        rt = SendingParts(make_settings(**values))
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


def start(rt: SendingParts, audience: tuple[str, ...] = ("main",)) -> tuple[int, list[int]]:
    """Create and start an issue; returns its id and its pending batches (not sent)."""
    issue_id = issues.create(
        rt.engine,
        subject="Vitamin K2",
        audience=audience,
        articles=[ArticleRef(SEEDS[0], True), ArticleRef(SEEDS[1], False)],
    )
    issues.schedule(rt.engine, issue_id, None)
    assert issues.claim_due(rt.engine, timedelta(hours=6)) == [issue_id]
    batches = prepare(rt.engine, rt.settings, rt.catalog(), issue_id, rt.batch_size)
    return issue_id, batches


def send_all(rt: SendingParts, batches: list[int]) -> list[Outcome]:
    return [rt.sender.send_batch(b) for b in batches]


def log(rt: SendingParts, issue_id: int) -> dict[str, int]:
    with rt.engine.connect() as conn:
        return dict(
            conn.execute(
                sa.select(db.deliveries.c.status, sa.func.count())
                .where(db.deliveries.c.issue_id == issue_id)
                .group_by(db.deliveries.c.status)
            ).all()
        )


def test_an_issue_reaches_every_subscriber_once_personalised(
    database_url: str, runtime_for: Callable[..., SendingParts], double: DoubleServer
) -> None:
    seed_subscribers(database_url, 120)
    rt = runtime_for(database_url)
    issue_id, batches = start(rt)
    assert len(batches) == 3  # 50 + 50 + 20
    outcomes = send_all(rt, batches)
    assert [o.status for o in outcomes] == ["sent"] * 3
    assert double.recipients() == {f"reader{i}@example.com": 1 for i in range(1, 121)}
    assert log(rt, issue_id) == {"sent": 120}
    issue = issues.get(rt.engine, issue_id)
    assert issue.status == "sent"
    assert (issue.progress.recipients, issue.progress.sent, issue.progress.queued) == (120, 120, 0)

    message = double.messages["reader7@example.com"][0]
    unsubscribe = message.headers["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://news.example.org/unsubscribe/7.")
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = unsubscribe.strip("<>").rsplit("/", 1)[1]
    claim = Signer(SECRET).verify("unsubscribe", token)
    assert claim is not None and (claim.subscriber_id, claim.issue_id) == (7, issue_id)
    assert Signer(SECRET).verify("unsubscribe", token[:-2] + "xx") is None
    assert unsubscribe.strip("<>") in message.html and unsubscribe.strip("<>") in message.text
    assert "%%" not in message.html + message.text + message.subject
    assert message.subject == "Vitamin K2"


def test_the_snapshot_is_frozen_and_the_audience_fixed(
    sqlite_url: str, runtime_for: Callable[..., SendingParts], double: DoubleServer, tmp_path: Path
) -> None:
    import shutil

    content = tmp_path / "content"
    shutil.copytree(CONTENT, content)
    seed_subscribers(sqlite_url, 100)
    rt = runtime_for(sqlite_url, content_dir=content)
    issue_id, batches = start(rt)
    seed = content / f"{SEEDS[0]}.md"
    seed.write_text(seed.read_text().replace("Vitamin K2", "EDITED LATER"))
    late = subscribers.add(rt.engine, "late@example.com", lists=["main"], status="active")
    changes.update(rt.engine, 99, changes.Change(status="unsubscribed"), via=changes.ADMIN_API)
    changes.update(rt.engine, 100, changes.Change(status="complained"), via=changes.ADMIN_API)
    send_all(rt, batches)
    received = double.recipients()
    assert len(received) == 98 and "late@example.com" not in received and late
    assert "reader99@example.com" not in received and "reader100@example.com" not in received
    assert all("EDITED LATER" not in m[0].html for m in double.messages.values())
    assert log(rt, issue_id) == {"sent": 98, "skipped": 2}
    assert issues.get(rt.engine, issue_id).progress.skipped == 2


def test_prepare_and_send_are_idempotent(
    sqlite_url: str, runtime_for: Callable[..., SendingParts], double: DoubleServer
) -> None:
    seed_subscribers(sqlite_url, 60)
    rt = runtime_for(sqlite_url)
    issue_id, batches = start(rt)
    again = prepare(rt.engine, rt.settings, rt.catalog(), issue_id, rt.batch_size)
    assert again == batches
    send_all(rt, batches)
    assert [o.status for o in send_all(rt, batches)] == ["skipped", "skipped"]
    assert double.stats()["accepted"] == 60


def test_throttling_and_server_errors_are_retried_to_exactly_once(
    sqlite_url: str, runtime_for: Callable[..., SendingParts], double: DoubleServer
) -> None:
    seed_subscribers(sqlite_url, 400)
    rt = runtime_for(sqlite_url)
    double.set_faults(
        {"kind": "throttle", "rate": 0.2, "retry_after": 0.01},
        {"kind": "error", "rate": 0.2},
        seed=7,
    )
    issue_id, batches = start(rt)
    assert {o.status for o in send_all(rt, batches)} == {"sent"}
    assert double.stats()["duplicates"] == 0
    assert len(double.recipients()) == 400
    assert double.stats()["statuses"].get("429", 0) >= 1
    assert issues.get(rt.engine, issue_id).status == "sent"


@pytest.mark.parametrize("provider", ["mailgun", "sendgrid"])
def test_a_connection_dropped_after_acceptance_is_ambiguous_then_reconciled(
    provider: str, sqlite_url: str, runtime_for: Callable[..., SendingParts], double: DoubleServer
) -> None:
    seed_subscribers(sqlite_url, 100)
    rt = runtime_for(sqlite_url, provider=provider)
    issue_id, batches = start(rt)
    double.set_faults({"kind": "drop", "count": 1})
    outcomes = send_all(rt, batches)
    assert [o.status for o in outcomes] == ["ambiguous", "sent"]
    assert double.stats()["accepted"] == 100  # the provider did take the dropped batch
    issue = issues.get(rt.engine, issue_id)
    assert issue.status == "sending" and issue.progress.ambiguous == 1
    if provider == "mailgun":  # its events API says what it accepted
        result = reconcile(rt.engine, issue_id, rt.provider)
        assert (result.sent, result.requeued) == (50, [])
    else:  # SendGrid cannot tell: the operator decides
        result = reconcile(rt.engine, issue_id, rt.provider)
        assert result.unknown == [batches[0]]
        result = reconcile(rt.engine, issue_id, rt.provider, assume="sent")
        assert result.sent == 50
    assert issues.get(rt.engine, issue_id).status == "sent"
    assert double.stats()["duplicates"] == 0
    assert log(rt, issue_id) == {"sent": 100}


def test_reconcile_sends_what_the_provider_never_got(
    sqlite_url: str, runtime_for: Callable[..., SendingParts], double: DoubleServer
) -> None:
    seed_subscribers(sqlite_url, 50)
    rt = runtime_for(sqlite_url, provider="mailgun")
    issue_id, batches = start(rt)
    double.set_faults({"kind": "slow", "delay": 1.0})
    rt2 = runtime_for(sqlite_url, provider="mailgun", http_timeout=0.3)
    assert rt2.sender.send_batch(batches[0]).status == "ambiguous"  # timed out: unknown
    double.set_faults()
    double.reset()  # the provider lost it after all
    result = reconcile(rt.engine, issue_id, rt.provider)
    assert (result.sent, result.requeued) == (0, batches)
    send_all(rt, result.requeued)
    assert double.recipients() == {f"reader{i}@example.com": 1 for i in range(1, 51)}
    assert issues.get(rt.engine, issue_id).status == "sent"


def test_an_idempotent_provider_is_retried_with_the_same_key(
    sqlite_url: str, runtime_for: Callable[..., SendingParts], double: DoubleServer
) -> None:
    seed_subscribers(sqlite_url, 50)
    rt = runtime_for(sqlite_url, provider_idempotency=True)
    issue_id, batches = start(rt)
    double.set_faults({"kind": "drop", "count": 1})
    assert send_all(rt, batches)[0].status == "sent"
    assert double.stats()["replayed"] == 1 and double.stats()["duplicates"] == 0
    assert issues.get(rt.engine, issue_id).status == "sent"


def test_an_expired_lease_is_ambiguous_or_requeued_never_resent_blindly(
    sqlite_url: str, runtime_for: Callable[..., SendingParts]
) -> None:
    seed_subscribers(sqlite_url, 50)
    rt = runtime_for(sqlite_url)
    issue_id, batches = start(rt)
    claim = lease.claim(rt.engine, rt.settings, batches[0])  # a worker claims, then dies
    assert not isinstance(claim, Outcome)
    later = db.now() + timedelta(seconds=61)
    found = sweep(rt.engine, rt.settings, idempotent=False, queue_empty=False, at=later)
    assert found.ambiguous == batches and found.requeue == []
    assert issues.get(rt.engine, issue_id).progress.ambiguous == 1

    _issue2, batches2 = start(rt)
    lease.claim(rt.engine, rt.settings, batches2[0])
    found = sweep(rt.engine, rt.settings, idempotent=True, queue_empty=False, at=later)
    assert found.requeue == batches2
    assert rt.sender.send_batch(batches2[0]).status == "sent"


def test_the_sweeper_requeues_batches_whose_task_was_lost(
    sqlite_url: str, runtime_for: Callable[..., SendingParts]
) -> None:
    seed_subscribers(sqlite_url, 100)
    rt = runtime_for(sqlite_url)
    _issue_id, batches = start(rt)
    mark_enqueued(rt.engine, batches)
    soon = sweep(rt.engine, rt.settings, idempotent=False, queue_empty=True)
    assert soon.requeue == []  # just enqueued: the tasks are on their way
    later = db.now() + timedelta(minutes=5)
    busy = sweep(rt.engine, rt.settings, False, queue_empty=False, at=later)
    assert busy.requeue == []  # the queue holds tasks: they may be these
    lost = sweep(rt.engine, rt.settings, False, queue_empty=True, at=later)
    assert lost.requeue == batches


def test_postmark_per_message_refusals_are_logged_and_the_send_goes_on(
    sqlite_url: str, runtime_for: Callable[..., SendingParts], double: DoubleServer
) -> None:
    seed_subscribers(sqlite_url, 100)
    rt = runtime_for(sqlite_url, provider="postmark", error_min_recipients=1000)
    double.set_faults({"kind": "reject", "addresses": ["reader3@example.com"]})
    issue_id, batches = start(rt)
    send_all(rt, batches)
    assert log(rt, issue_id) == {"sent": 99, "failed": 1}
    with rt.engine.connect() as conn:
        reason = conn.scalar(
            sa.select(db.deliveries.c.reason).where(db.deliveries.c.subscriber_id == 3)
        )
    assert reason is not None and "406" in reason
    assert issues.get(rt.engine, issue_id).status == "sent"
    double.set_faults()
    retry = issues.retry_failed(rt.engine, issue_id, rt.batch_size)
    send_all(rt, retry)
    assert log(rt, issue_id) == {"sent": 100}
    assert double.recipients()["reader3@example.com"] == 1
    assert issues.get(rt.engine, issue_id).status == "sent"


def test_a_bad_key_pauses_the_issue_with_the_reason(
    sqlite_url: str, runtime_for: Callable[..., SendingParts]
) -> None:
    seed_subscribers(sqlite_url, 100)
    rt = runtime_for(sqlite_url, sendgrid_api_key="SG.wrong")
    issue_id, batches = start(rt)
    outcomes = send_all(rt, batches)
    assert outcomes[0].status == "failed"
    assert outcomes[1].status == "skipped"  # the issue paused: nothing more goes out
    issue = issues.get(rt.engine, issue_id)
    assert issue.status == "paused"
    assert "the provider refused the batch" in issue.status_reason
    assert "SENDGRID_API_KEY" in issue.status_reason


def test_past_the_error_threshold_the_issue_pauses(
    sqlite_url: str, runtime_for: Callable[..., SendingParts], double: DoubleServer
) -> None:
    seed_subscribers(sqlite_url, 200)
    rt = runtime_for(sqlite_url, retry_attempts=2, error_min_recipients=50)
    double.set_faults({"kind": "error", "status": 503})
    issue_id, batches = start(rt)
    outcomes = send_all(rt, batches)
    assert outcomes[0].status == "failed" and outcomes[1].status == "skipped"
    issue = issues.get(rt.engine, issue_id)
    assert issue.status == "paused" and "100% of 50 deliveries failed" in issue.status_reason
    assert "issue retry-failed" in issue.status_reason
    double.set_faults()
    again = issues.retry_failed(rt.engine, issue_id, rt.batch_size)
    assert len(again) == 4  # the three that waited, and one for the 50 that failed
    send_all(rt, again)
    assert log(rt, issue_id) == {"sent": 200}
    assert issues.get(rt.engine, issue_id).status == "sent"


def test_pause_stops_new_batches_and_resume_goes_on(
    sqlite_url: str, runtime_for: Callable[..., SendingParts], double: DoubleServer
) -> None:
    seed_subscribers(sqlite_url, 150)
    rt = runtime_for(sqlite_url)
    issue_id, batches = start(rt)
    rt.sender.send_batch(batches[0])
    issues.pause(rt.engine, issue_id)
    assert rt.sender.send_batch(batches[1]).status == "skipped"
    assert issues.resume(rt.engine, issue_id) == batches[1:]
    send_all(rt, batches[1:])
    assert double.stats()["accepted"] == 150 and double.stats()["duplicates"] == 0
    assert issues.get(rt.engine, issue_id).status == "sent"


def test_cancel_drops_unsent_batches(
    sqlite_url: str, runtime_for: Callable[..., SendingParts], double: DoubleServer
) -> None:
    seed_subscribers(sqlite_url, 100)
    rt = runtime_for(sqlite_url)
    issue_id, batches = start(rt)
    rt.sender.send_batch(batches[0])
    issues.cancel(rt.engine, issue_id)
    assert rt.sender.send_batch(batches[1]).status == "skipped"
    assert double.stats()["accepted"] == 50
    assert issues.get(rt.engine, issue_id).progress.batches == {"sent": 1, "cancelled": 1}


def test_the_outbox_writes_one_message_per_recipient(
    sqlite_url: str, runtime_for: Callable[..., SendingParts], tmp_path: Path
) -> None:
    seed_subscribers(sqlite_url, 30)
    rt = runtime_for(sqlite_url, provider="outbox", batch_size=None)
    issue_id, batches = start(rt)
    send_all(rt, batches)
    files = sorted((tmp_path / "outbox" / f"issue-{issue_id}").glob("*.eml"))
    assert len(files) == 30
    message = message_from_bytes(files[0].read_bytes(), policy=default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["To"].addresses[0].addr_spec.startswith("reader")
    assert message.get_content_type() == "multipart/alternative"


def test_smtp_answers_before_a_failure_are_kept_and_never_sent_again(
    sqlite_url: str,
    runtime_for: Callable[..., SendingParts],
    smtp_server: Callable[..., SmtpServer],  # noqa: F811
) -> None:
    seed_subscribers(sqlite_url, 6)
    server = smtp_server(reject={"reader2@example.com"}, defer={"reader3@example.com"})
    rt = runtime_for(
        sqlite_url,
        provider="smtp",
        smtp_url=f"smtp://127.0.0.1:{server.port}",
        retry_attempts=3,
        error_min_recipients=1000,
    )
    issue_id, batches = start(rt)
    outcome = rt.sender.send_batch(batches[0])
    assert outcome.status == "failed"  # reader3 is deferred every time: the rest wait
    assert [r.recipients for r in server.received] == [["reader1@example.com"]]
    with rt.engine.connect() as conn:
        rows = dict(
            conn.execute(
                sa.select(db.deliveries.c.subscriber_id, db.deliveries.c.reason).where(
                    db.deliveries.c.issue_id == issue_id
                )
            ).all()
        )
    assert log(rt, issue_id) == {"sent": 1, "failed": 5}
    assert rows[1] is None
    assert rows[2] is not None and "550" in rows[2]  # refused for good, with the reason
    assert rows[3] is not None and "gave up" in rows[3]
    progress = issues.get(rt.engine, issue_id).progress
    assert (progress.sent, progress.failed) == (1, 5)
