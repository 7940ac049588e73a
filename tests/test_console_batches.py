"""A send's machinery in the console (/admin/issues/{id}/batches) against the real
service (``letterpress serve`` in its own process, SQLite or PostgreSQL, Redis) sending
through Mailgun's API on the loopback provider double, which keeps its events.

The batches are put in every state by the real sending code in this process: sent,
failed (the double answers 500), ambiguous (the double records the recipients, then
drops the connection), leased by a worker whose lease ran out (claimed, never
finished), and pending. An operator reads the table (filtered, paged by keyset, polled
as a fragment), reads each action's confirmation and carries it out; what each did is
checked in the delivery log, the double's messages and the audit log. Editors, authors
and viewers are refused (403), as is an operator on compose and users pages, and a POST
without the page's token. The service has Redis, so it hands batches to the queue; no
worker runs here, so the test sends them in this process, as a worker would.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from letterpress_testing.server import DoubleServer
from pipeline.cli.main import main
from pipeline.people import audit
from pipeline.sending import issues, lease
from pipeline.sending.issues import ArticleRef
from pipeline.sending.parts import SendingParts
from pipeline.sending.prepare import prepare
from pipeline.settings import load_settings
from pipeline.statuses import Role
from pipeline.store import db
from tests.cluster import seed_subscribers
from tests.conftest import CONTENT, SEEDS
from tests.service import SECRET, RunningService, running_service
from tests.test_console import Console, add_user, alerts, text_of

READERS = 120
SIZE = 2  # 60 batches: more than a page of 50
DEAD = "w9@gone-host"


@pytest.fixture
def double() -> Iterator[DoubleServer]:
    with DoubleServer(keep_messages=True) as server:
        yield server


def sending_values(double: DoubleServer) -> dict[str, Any]:
    return {
        "base_url": "http://127.0.0.1:8000",  # the service's own, when it runs
        "postal_address": "1 Test Street, Testville",
        "content_dir": str(CONTENT),
        "sender_email": "newsletter@news.example.org",
        "provider": "mailgun",
        "mailgun_base_url": double.url,
        "mailgun_domain": "mg.example.org",
        "batch_size": SIZE,
        "console_totp_roles": [],
        # One attempt, and a lease of a second: a lease can run out while the test waits.
        "retry_attempts": 1,
        "retry_max_seconds": 0.2,
        "lease_seconds": 1,
    }


@contextmanager
def worker_parts(config: Path, database_url: str, double: DoubleServer) -> Iterator[SendingParts]:
    """What a worker has, in this process: it sends what it is given, inline."""
    settings = load_settings(
        config,
        database_url=database_url,
        redis_url=None,
        secret_key=SECRET,
        mailgun_api_key=double.mailgun_key,
    )
    parts = SendingParts(settings)
    try:
        yield parts
    finally:
        parts.close()


@pytest.fixture
def sending(
    tmp_path: Path, database_url: str, redis_url: str, redis_client: Any, double: DoubleServer
) -> Iterator[tuple[RunningService, SendingParts]]:
    """The service, and this process's sending parts (a worker's), on one database and
    one Mailgun double."""
    values = {k: v for k, v in sending_values(double).items() if k != "base_url"}
    env = {"MAILGUN_API_KEY": double.mailgun_key}
    with (
        running_service(tmp_path, database_url, redis_url, settings=values, env=env) as svc,
        worker_parts(tmp_path / "service.toml", database_url, double) as parts,
    ):
        yield svc, parts


def start(rt: SendingParts, url: str) -> tuple[int, list[int]]:
    seed_subscribers(url, READERS)
    issue_id = issues.create(
        rt.engine,
        subject="Vitamin K2 this week",
        audience=("main",),
        articles=[ArticleRef(SEEDS[0], True), ArticleRef(SEEDS[1], False)],
    )
    issues.schedule(rt.engine, issue_id, None)
    assert issues.claim_due(rt.engine, timedelta(hours=6)) == [issue_id]
    return issue_id, prepare(rt.engine, rt.settings, rt.catalog(), issue_id, rt.batch_size)


def batch_row(rt: SendingParts, batch_id: int) -> Any:
    with rt.engine.connect() as conn:
        return conn.execute(sa.select(db.batches).where(db.batches.c.id == batch_id)).one()


def delivered(double: DoubleServer) -> dict[str, int]:
    return {a: len(ms) for a, ms in double.messages.items()}


def row_of(html: str, batch_id: int) -> str:
    found = re.search(rf'<tr id="batch-{batch_id}".*?</tr>', html, re.S)
    assert found, f"no row for batch {batch_id}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(0))).strip()


def words(html: str) -> list[str]:
    return text_of(html, r'<p class="does[^"]*">(.*?)</p>')


def test_an_operator_reads_the_batches_and_acts_on_each_state(
    sending: tuple[RunningService, SendingParts], database_url: str, double: DoubleServer
) -> None:
    svc, rt = sending
    issue_id, ids = start(rt, database_url)
    assert len(ids) == READERS // SIZE
    sent, failed, dropped, settled, leased = ids[:5]
    assert rt.sender.send_batch(sent, "w1@host-a").status == "sent"
    double.set_faults({"kind": "error", "status": 500})
    assert rt.sender.send_batch(failed).status == "failed"
    double.set_faults({"kind": "drop"})  # recorded as accepted, then no answer
    assert rt.sender.send_batch(dropped).status == "ambiguous"
    assert rt.sender.send_batch(settled).status == "ambiguous"
    double.set_faults()
    claimed = lease.claim(rt.engine, rt.settings, leased, DEAD)  # and its worker dies
    assert not isinstance(claimed, lease.Outcome)
    got = [*range(1, SIZE + 1), *range(2 * SIZE + 1, 4 * SIZE + 1)]  # failed, leased: none
    assert delivered(double) == {f"reader{i}@example.com": 1 for i in got}
    time.sleep(1.2)  # the lease runs out

    add_user(svc, "opal@example.com", Role.OPERATOR)
    operator = Console(svc).signed_in("opal@example.com")
    issue_page = operator.get(f"/admin/issues/{issue_id}")
    assert f'href="/admin/issues/{issue_id}/batches" id="batches-link"' in issue_page.text

    # The table: every column, the lease holder and its expiry, what each state allows.
    page = operator.get(f"/admin/issues/{issue_id}/batches")
    assert page.status_code == 200, page.text
    assert page.headers["vary"] == "HX-Request"
    assert 'hx-trigger="every 2s"' in page.text  # the issue sends: it polls
    first = row_of(page.text, sent)
    assert first.startswith(f"1 (id {sent}) sent 1 to 2 2 people")
    assert f"last held by w1@host-a pid {os.getpid()}" in first
    assert "attempts" not in first and "Re-queue" not in first and "Reconcile" not in first
    assert "gave up after 1 attempts" in row_of(page.text, failed)
    assert "Re-queue batch 2" in row_of(page.text, failed)
    held = row_of(page.text, leased)
    assert re.search(
        rf"sending 9 to 10 2 people, 2 queued held by {DEAD} pid {os.getpid()} until"
        r" \d\d:\d\d:\d\d UTC; expired \d+ (s|min) ago 1 ",
        held,
    ), held
    assert "Re-queue batch 5" in held and "Reconcile batch 5" in held
    assert "Reconcile batch 3" in row_of(page.text, dropped)
    assert "Settle batch 3" in row_of(page.text, dropped)
    assert row_of(page.text, ids[5]).endswith("never leased 0")  # pending, nothing to do
    assert f'id="batch-{ids[49]}"' in page.text and f'id="batch-{ids[50]}"' not in page.text
    more = operator.get(f"/admin/issues/{issue_id}/batches?after=50")
    assert [int(x) for x in re.findall(r'<tr id="batch-(\d+)"', more.text)] == ids[50:]
    assert 'id="next-page"' in page.text and 'id="next-page"' not in more.text
    only = operator.get(f"/admin/issues/{issue_id}/batches?status=ambiguous")
    assert [int(x) for x in re.findall(r'<tr id="batch-(\d+)"', only.text)] == [dropped, settled]
    assert text_of(only.text, r'id="filter-ambiguous"[^>]*>(.*?)</a>') == ["ambiguous (2)"]
    assert operator.get(f"/admin/issues/{issue_id}/batches?status=lost").status_code == 400
    polled = operator.get(f"/admin/issues/{issue_id}/batches", headers={"HX-Request": "true"})
    assert polled.text.lstrip().startswith('<div id="batches"') and "<h1>" not in polled.text

    # Re-queue the batch whose worker died: said first, then done (the same key).
    review = operator.get(f"/admin/issues/{issue_id}/batches/{leased}/requeue")
    assert review.status_code == 200, review.text
    said = " ".join(words(review.text))
    assert f"Batch 5 (id {leased}) of issue {issue_id}: subscriber ids 9 to 10, 2 people" in said
    assert f"Its lease was held by {DEAD} pid {os.getpid()} until " in said
    assert "expired" in said and "that worker has stopped" in said
    assert "the 2 recipients the log still has as queued" in said
    assert "Careful: mailgun does not drop a repeated send" in said
    assert batch_row(rt, leased).status == "sending"  # the review changed nothing
    done = operator.post(f"/admin/issues/{issue_id}/batches/{leased}/requeue")
    assert done.status_code == 303, done.text
    after = operator.get(done.headers["location"])
    assert f"Batch id {leased} re-queued: 2 recipients to send." in after.text
    assert batch_row(rt, leased).status == "pending" and batch_row(rt, leased).enqueued_at
    assert rt.sender.send_batch(leased).status == "sent"  # as a worker does, off the queue

    # Re-queue the failed one: its failed recipients queued again, with a new key.
    said = " ".join(words(operator.get(f"/admin/issues/{issue_id}/batches/{failed}/requeue").text))
    assert "It failed (gave up after 1 attempts" in said
    assert "Its 2 failed recipients are queued again in it, with a new idempotency key" in said
    key = batch_row(rt, failed).idempotency_key
    assert operator.post(f"/admin/issues/{issue_id}/batches/{failed}/requeue").status_code == 303
    assert batch_row(rt, failed).idempotency_key is None
    assert issues.get(rt.engine, issue_id).progress.failed == 0
    assert rt.sender.send_batch(failed).status == "sent"
    assert batch_row(rt, failed).idempotency_key != key

    # Reconcile the dropped batch from Mailgun's events: both were accepted, none resent.
    said = " ".join(
        words(operator.get(f"/admin/issues/{issue_id}/batches/{dropped}/reconcile").text)
    )
    assert "mailgun is asked which of the 2 queued recipients it accepted" in said
    done = operator.post(f"/admin/issues/{issue_id}/batches/{dropped}/reconcile")
    assert done.status_code == 303, done.text
    assert "reconciled from mailgun's records: 2 counted as sent, 0 to send again" in (
        html.unescape(operator.get(done.headers["location"]).text)
    )
    assert batch_row(rt, dropped).status == "sent"

    # Settle the other by choice: the choice is needed, then counted as sent.
    review = operator.get(f"/admin/issues/{issue_id}/batches/{settled}/settle")
    assert "Choose what happens to the 2 recipients still queued in it" in " ".join(
        words(review.text)
    )
    assert 'id="settle-sent"' in review.text and 'id="settle-unsent"' in review.text
    refused = operator.post(f"/admin/issues/{issue_id}/batches/{settled}/settle")
    assert refused.status_code == 400 and "Choose how to settle it" in alerts(refused)[0]
    done = operator.post(f"/admin/issues/{issue_id}/batches/{settled}/settle", {"choice": "sent"})
    assert done.status_code == 303
    assert batch_row(rt, settled).status == "sent"

    # What a state does not allow is refused, and said.
    wrong = operator.get(f"/admin/issues/{issue_id}/batches/{sent}/settle")
    assert wrong.status_code == 409 and "is sent: it cannot be settled now" in alerts(wrong)[0]
    again = operator.post(
        f"/admin/issues/{issue_id}/batches/{settled}/settle", {"choice": "unsent"}
    )
    assert again.status_code == 409, again.text
    assert operator.get(f"/admin/issues/{issue_id}/batches/{sent}/explode").status_code == 404
    assert operator.get(f"/admin/issues/{issue_id}/batches/{10**9}/requeue").status_code == 404

    # Nobody lost, nobody doubled; every action is in the audit log.
    assert delivered(double) == {f"reader{i}@example.com": 1 for i in range(1, 5 * SIZE + 1)}
    entries = [(e.user_email, e.action, e.detail) for e in audit.recent(svc.engine)]
    assert entries[:4] == [
        ("opal@example.com", "settled batch", f"issue {issue_id} batch {settled} as sent: 2 counted as sent, 0 to send"),
        ("opal@example.com", "reconciled batch", f"issue {issue_id} batch {dropped}: 2 counted as sent, 0 to send"),
        ("opal@example.com", "re-queued batch", f"issue {issue_id} batch {failed}: 0 counted as sent, 2 to send"),
        ("opal@example.com", "re-queued batch", f"issue {issue_id} batch {leased}: 0 counted as sent, 2 to send"),
    ]  # fmt: skip

    # Without the page's token, or in another role, nothing happens.
    leftover = ids[6]
    assert operator.post(f"/admin/issues/{issue_id}/batches/{leftover}/requeue", token=None).status_code == 403  # fmt: skip
    for role in (Role.EDITOR, Role.AUTHOR, Role.VIEWER):
        email = f"{role.value}@example.com"
        add_user(svc, email, role)
        other = Console(svc).signed_in(email)
        assert other.get(f"/admin/issues/{issue_id}/batches").status_code == 403, role
        assert (
            f"/admin/issues/{issue_id}/batches" not in other.get(f"/admin/issues/{issue_id}").text
        )
        for act in ("requeue", "reconcile", "settle"):
            path = f"/admin/issues/{issue_id}/batches/{settled}/{act}"
            assert other.get(path).status_code == 403, (role, act)
            assert other.post(path, {"choice": "unsent"}).status_code == 403, (role, act)
    assert batch_row(rt, settled).status == "sent"
    assert [e.action for e in audit.recent(svc.engine) if e.action.endswith(" batch")] == [
        e[1] for e in entries[:4]
    ]
    for path in ("/admin/issues/new", "/admin/users"):
        assert operator.get(path).status_code == 403, path
    assert operator.post("/admin/issues/new", {"subject": "Not mine"}).status_code == 403


def test_the_command_line_does_the_same_to_one_batch(
    sqlite_url: str, double: DoubleServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same functions from ``letterpress issue``: SQLite only (the SQL is the
    console's, above, on both databases)."""
    config = tmp_path / "letterpress.toml"
    config.write_text(
        "".join(f"{k} = {json.dumps(v)}\n" for k, v in sending_values(double).items())
    )
    with worker_parts(config, sqlite_url, double) as rt:
        issue_id, ids = start(rt, sqlite_url)
        double.set_faults({"kind": "drop"})
        assert rt.sender.send_batch(ids[0]).status == "ambiguous"
        double.set_faults()
        assert not isinstance(lease.claim(rt.engine, rt.settings, ids[1], DEAD), lease.Outcome)
        time.sleep(1.2)
        monkeypatch.setenv("LETTERPRESS_CONFIG", str(config))
        monkeypatch.setenv("DATABASE_URL", sqlite_url)
        monkeypatch.setenv("LETTERPRESS_SECRET_KEY", SECRET)
        monkeypatch.setenv("MAILGUN_API_KEY", double.mailgun_key)
        monkeypatch.delenv("REDIS_URL", raising=False)  # batches go inline, here

        def run(*argv: str, code: int = 0) -> str:
            result = CliRunner().invoke(main, list(argv))
            assert result.exit_code == code, (argv, result.output)
            return result.output

        listed = run("issue", "batches", str(issue_id), "--status", "sending")
        assert f"held by {DEAD} pid {os.getpid()} until" in listed
        assert "may: requeue, reconcile" in listed
        said = run("issue", "reconcile", str(issue_id), "--batch", str(ids[1]))
        assert f"batch {ids[1]} reconciled: 0 recipient(s) counted as sent, 2 to send" in said
        said = run("issue", "settle-batch", str(issue_id), str(ids[0]), "--as", "sent")
        assert "2 recipient(s) counted as sent, 0 to send" in said
        wrong = run("issue", "requeue-batch", str(issue_id), str(ids[0]), code=1)
        assert f"batch {ids[0]} (seq 1 of issue {issue_id}) is sent: only a failed batch" in wrong
        assert batch_row(rt, ids[1]).status == "sent"  # sent inline by the command
        assert delivered(double) == {f"reader{i}@example.com": 1 for i in range(1, 2 * SIZE + 1)}
        details = [e.detail for e in audit.recent(rt.engine)]
        assert details[0].startswith("command line: issue ") and "settled as sent" in details[0]
        more = run("issue", "batches", str(issue_id), "--limit", "2")
        assert more.rstrip().endswith("more: --after 2")
