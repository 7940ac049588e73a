"""The editors' and operators' console with a large audience and a long history
(issues 11 and 12).

Target: with 1,000,000 subscribers and 200 sent issues, every console page answers in
under 150 ms at p95 on SQLite and on PostgreSQL, and the preview re-render answers in
under 300 ms.

    .venv/bin/python bench/console.py [--database sqlite|postgresql|both]
        [--subscribers 1000000] [--requests 60] [--warmup 3] [--issues 200]
        [--small-deliveries 20000] [--postgres URL] [--keep] [--explain]
    .venv/bin/python bench/console.py --subscribers 20000 --requests 10   # a quick check

Per database: a fresh, migrated database (a SQLite file under ``bench/.work/console/``,
or a PostgreSQL database of its own, created here and dropped afterwards), seeded in
bulk through the product's tables (``pipeline/store/db.py``) with INSERT … SELECT over
generated numbers: N subscribers with a realistic mix of statuses on the lists ``main``
(all) and ``deals`` (a fifth), 200 sent issues with their snapshots, links, batches,
deliveries, provider feedback, webhook events and clicks, drafts, a scheduled issue,
users and audit-log entries. 200 issues of a million deliveries each would be 200
million rows, more than this machine holds in a benchmark run: the newest sent issue is
full size (a delivery per subscriber who had confirmed), the 199 older ones have
``--small-deliveries`` each. A report's cost depends on the one issue's rows (and the
indexes); the lists' cost on the number of issues. The product's own read functions
then check that the data is what was seeded (the report's figures, the recipient
counts), and every page measured must show the seeded figures, so no page passes empty.

``letterpress serve --workers 1`` (``python -m workers serve``) runs on a free port
without Redis, with a settings file of the run's own (``console_totp_roles = []``) and
the repository's ``content/``. An owner signs in over HTTP as a browser would (the
sign-in page's CSRF token, the site's Origin). After a warm-up, every round requests
every page once, in an order that rotates each round, ``--requests`` rounds; the report
gives p50, p95 and max per page (client-side wall time over loopback, keep-alive), the
``/healthz`` baseline of the same run, the load average before and after, and MET /
NOT MET per page.

The subscribers' pages (issue 12) are among them: the search's first page, a prefix
(sparse and dense), the exact address, status with a list (some matches, and none:
the worst case, every complained subscriber looked at), a signup date that matches
nobody, a deep keyset page by id and by address, a subscriber's page with their
history, and the suppression list. ``--explain`` prints, before the measuring, the
plan of every SELECT those pages' domain functions run (``EXPLAIN QUERY PLAN`` on
SQLite, ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL), captured as they run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchutil import clean_env, code_version, free_port, machine, median, percentile

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from pipeline.audience import directory, tracking  # noqa: E402
from pipeline.people import audit, users  # noqa: E402
from pipeline.sending import drafts, issues, outcome, reports  # noqa: E402
from pipeline.sending.batches import VARIANT, WEB_VARIANT  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.statuses import Role  # noqa: E402
from pipeline.store import db  # noqa: E402

WORK = BENCH / ".work" / "console"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
SECRET = "console-bench-secret-key-not-for-production"
BASE_URL = "http://localhost:8000"  # the Origin the console's CSRF check expects
PASSWORD = "console bench password, long enough"
OWNER = "owner@bench.example.org"
SEEDS = (
    "vitamin-k2-for-directing-calcium-to-bones",
    "the-role-of-vitamin-k2-in-calcium-distribution",
)
PAGE_MS = 150.0
PREVIEW_MS = 300.0
BATCH = 1000
AUDIT_ROWS = 5000

# The issues' email, as in bench/serve.py: 3 article links, 3 outside.
EMAIL = """<html><body>
<p><a href="{base}/articles/vitamin-k2-for-directing-calcium-to-bones/">Vitamin K2</a></p>
<p><a href="{base}/articles/the-role-of-vitamin-k2-in-calcium-distribution/">Calcium</a></p>
<p><a href="{base}/articles/sleep-after-fifty/">Sleep</a></p>
<p><a href="https://pubmed.ncbi.nlm.nih.gov/12345678/">A study</a></p>
<p><a href="https://www.amazon.com/dp/B000000000?tag=letterpress-20">A book</a></p>
<p><a href="https://www.example.org/guide?utm_source=newsletter">Guide</a></p>
<p><a href="%%unsubscribe_url%%">Unsubscribe</a></p>
</body></html>"""


# -- who the subscribers are: one rule, in SQL for the seeding and in Python for the check --


def status_of(i: int) -> str:
    r = i % 100
    if r < 90:
        return "active"
    if r < 95:
        return "unsubscribed"
    if r < 97:
        return "bounced"
    if r == 97:
        return "complained"
    return "pending"  # never confirmed


STATUS_SQL = (
    "CASE WHEN i % 100 < 90 THEN 'active' WHEN i % 100 < 95 THEN 'unsubscribed'"
    " WHEN i % 100 < 97 THEN 'bounced' WHEN i % 100 = 97 THEN 'complained' ELSE 'pending' END"
)


def delivery_of(i: int) -> str:
    if i % 500 == 7:
        return "failed"
    if i % 1000 == 11:
        return "skipped"
    return "sent"


DELIVERY_SQL = (
    "CASE WHEN s.id % 500 = 7 THEN 'failed' WHEN s.id % 1000 = 11 THEN 'skipped' ELSE 'sent' END"
)


def feedback_of(i: int) -> str | None:
    """The provider's last word on a sent delivery (None: nothing heard)."""
    status = status_of(i)
    if status in ("bounced", "complained"):
        return status
    if status == "unsubscribed" and i % 100 == 90:
        return "unsubscribed"  # left through the provider's link
    if i % 50 == 1:
        return "soft_bounce"
    if i % 20 == 3:
        return None
    return "delivered"


FEEDBACK_SQL = (
    "CASE WHEN s.id % 500 = 7 OR s.id % 1000 = 11 THEN NULL"
    " WHEN s.status IN ('bounced', 'complained') THEN s.status"
    " WHEN s.id % 100 = 90 THEN 'unsubscribed'"
    " WHEN s.id % 50 = 1 THEN 'soft_bounce' WHEN s.id % 20 = 3 THEN NULL"
    " ELSE 'delivered' END"
)


SIGNUP_SECONDS = 30  # one subscriber signed up every 30 s: a million over 347 days
TINY = 20  # the members of the list "tiny": every (N / 20)th subscriber


def tiny_every(n: int) -> int:
    return max(1, n // TINY)


# The subscriber whose page is measured: in the full-size issue, two clicks, and in
# older issues too (active, so no events of leaving).
PROFILED = 9300


def clicks_of(i: int) -> int:
    """Clicks by a subscriber who was sent the issue: 3.2 % click, a third of them twice."""
    return (1 if i % 31 == 0 else 0) + (1 if i % 93 == 0 else 0)


# -- the database ---------------------------------------------------------------------------


def fresh_database(kind: str, run_dir: Path, server: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{run_dir / 'console.db'}"
    name = f"letterpress_console_bench_{os.getpid()}"
    url = sa.make_url(db.normalise_url(server))
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return url.set(drivername="postgresql", database=name).render_as_string(hide_password=False)


def drop_database(url: str, server: str) -> None:
    db.engine(url).dispose()
    name = sa.make_url(url).database
    admin = sa.create_engine(
        sa.make_url(db.normalise_url(server)),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@dataclass
class Seeded:
    subscribers: int
    full: int  # the newest sent issue, full size
    small: int  # an older sent issue
    draft: int
    scheduled: int
    sent_issues: int
    issues: int
    deliveries: int
    clicks: int
    audit: int
    signups_from: datetime  # subscriber i signed up SIGNUP_SECONDS * i after this
    expected: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def numbers(conn: sa.Connection, first: int, last: int) -> str:
    """A FROM clause of the integers ``i`` from first to last."""
    if conn.dialect.name == "postgresql":
        return f"generate_series({first}, {last}) AS g(i)"
    return (
        f"(WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n"
        f" WHERE i < {last}) SELECT i FROM n)"
    )


def typed(name: str, value: Any, kind: Any) -> sa.BindParameter[Any]:
    return sa.bindparam(name, value, type_=kind)


def seed(url: str, config: Path, n: int, sent_issues: int, small_size: int) -> Seeded:
    db.upgrade(url)
    engine = db.engine(url)
    settings = load_settings(config, secret_key=SECRET, database_url=url)
    now = db.now()
    long_ago = now - timedelta(days=3 * sent_issues + 30)
    at = typed("at", long_ago, db.UTCDateTime())
    pg = engine.dialect.name == "postgresql"
    attributes = "'{}'::json" if pg else "'{}'"
    clock: dict[str, float] = {}

    def lap(what: str, started: float) -> float:
        clock[what] = time.perf_counter() - started
        return time.perf_counter()

    # Signed up one every SIGNUP_SECONDS, from long ago on (the search filters on it).
    signed_up = (
        f"CAST(:at AS TIMESTAMP) + i * INTERVAL '{SIGNUP_SECONDS} seconds'"
        if pg
        else f"strftime('%Y-%m-%d %H:%M:%S', :at, '+' || (i * {SIGNUP_SECONDS}) || ' seconds')"
        " || '.000000'"
    )
    t = time.perf_counter()
    with engine.begin() as conn:
        main, deals, tiny = (
            conn.execute(
                sa.insert(db.lists).values(name=name, created_at=long_ago).returning(db.lists.c.id)
            ).scalar_one()
            for name in ("main", "deals", "tiny")
        )
        conn.execute(
            sa.text(
                "INSERT INTO subscribers (id, email, name, status, time_zone, attributes,"
                " created_at, confirmed_at, updated_at, status_changed_at)"
                f" SELECT i, 'reader' || i || '@example.com', 'Reader ' || i, {STATUS_SQL},"
                " CASE i % 4 WHEN 0 THEN 'UTC' WHEN 1 THEN 'Europe/London'"
                " WHEN 2 THEN 'America/New_York' ELSE 'Asia/Tokyo' END,"
                f" {attributes},"
                f" {signed_up}, CASE WHEN i % 100 >= 98 THEN NULL ELSE :at END, :at, :at"
                f" FROM {numbers(conn, 1, n)}"
            ).bindparams(at)
        )
        if pg:
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('subscribers', 'id'), max(id))"
                " FROM subscribers"
            )
        t = lap("subscribers", t)
        for list_id, where in (
            (main, ""),
            (deals, " WHERE id % 5 = 0"),
            (tiny, f" WHERE id % {tiny_every(n)} = 0"),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO memberships (list_id, subscriber_id, created_at)"
                    f" SELECT {int(list_id)}, id, :at FROM subscribers{where}"
                ).bindparams(at)
            )
        conn.execute(
            sa.text(
                "INSERT INTO subscriber_events (subscriber_id, at, kind, detail)"
                " SELECT id, :at, status, 'sendgrid: ' || status FROM subscribers"
                " WHERE status IN ('unsubscribed', 'bounced', 'complained')"
            ).bindparams(at)
        )
        t = lap("memberships and subscriber events", t)

    # -- the issues: the sent ones oldest first, so the newest is the full-size one
    email = EMAIL.format(base=settings.base_url)
    html, links = tracking.track_links(email, settings)
    web_html = tracking.web_variant(email, settings)
    sent_ids: list[int] = []
    ranges: dict[int, tuple[int, int]] = {}
    with engine.begin() as conn:
        for k in range(sent_issues):
            full = k == sent_issues - 1
            sent_at = now - timedelta(days=3 * (sent_issues - k), hours=-7)
            issue_id = conn.execute(
                sa.insert(db.issues)
                .values(
                    subject=f"Letter {k + 1}: on vitamins and sleep",
                    preheader="This week's reading",
                    intro="Two articles for the week.",
                    audience=["main"],
                    status="sent",
                    created_at=sent_at - timedelta(days=1),
                    updated_at=sent_at + timedelta(hours=1),
                    started_at=sent_at,
                    prepared_at=sent_at,
                    finished_at=sent_at + timedelta(hours=1),
                )
                .returning(db.issues.c.id)
            ).scalar_one()
            sent_ids.append(issue_id)
            if full:
                lo, hi = 1, n
            else:
                size = min(small_size, n)
                lo = (k * size) % max(1, n - size + 1) + 1
                hi = lo + size - 1
            ranges[issue_id] = (lo, hi)
            conn.execute(
                sa.insert(db.issue_articles),
                [
                    {"issue_id": issue_id, "position": p, "slug": slug, "full": p == 0}
                    for p, slug in enumerate(SEEDS)
                ],
            )
            snapshot = {
                "issue_id": issue_id,
                "subject": f"Letter {k + 1}: on vitamins and sleep",
                "preheader": "This week's reading",
                "text": "Two articles for the week.",
                "campaign": f"issue-{issue_id}",
                "created_at": sent_at,
            }
            conn.execute(
                sa.insert(db.snapshots),
                [
                    {**snapshot, "variant": VARIANT, "html": html},
                    {**snapshot, "variant": WEB_VARIANT, "html": web_html},
                ],
            )
            tracking.save_links(conn, issue_id, links)
            conn.execute(
                sa.insert(db.batches),
                [
                    {
                        "issue_id": issue_id,
                        "seq": s + 1,
                        "first_id": first,
                        "last_id": min(first + BATCH - 1, hi),
                        "status": "sent",
                        "attempts": 1,
                        "provider_id": f"sg-{issue_id}-{s + 1}",
                        "updated_at": sent_at,
                    }
                    for s, first in enumerate(range(lo, hi + 1, BATCH))
                ],
            )
            conn.execute(
                sa.insert(db.issue_events).values(
                    issue_id=issue_id, at=sent_at, level="info", message="sending started"
                )
            )
    t = lap("issues, snapshots, links, batches", t)

    true, false = typed("t", True, sa.Boolean()), typed("f", False, sa.Boolean())
    for issue_id in sent_ids:
        lo, hi = ranges[issue_id]
        sent_at = issues.get(engine, issue_id).started_at
        assert sent_at is not None
        when = typed("at", sent_at, db.UTCDateTime())
        later = typed("later", sent_at + timedelta(hours=3), db.UTCDateTime())
        with engine.begin() as conn:
            first_batch = conn.scalar(
                sa.select(sa.func.min(db.batches.c.id)).where(db.batches.c.issue_id == issue_id)
            )
            conn.execute(
                sa.text(
                    "INSERT INTO deliveries (issue_id, subscriber_id, batch_id, status,"
                    " provider_id, reason, updated_at, feedback, feedback_at)"
                    f" SELECT {issue_id}, s.id, {int(first_batch)} + (s.id - {lo}) / {BATCH},"
                    f" {DELIVERY_SQL}, NULL,"
                    " CASE WHEN s.id % 500 = 7 THEN '550 5.1.1 mailbox unavailable' END,"
                    f" :at, {FEEDBACK_SQL}, CASE WHEN ({FEEDBACK_SQL}) IS NOT NULL THEN :later END"
                    f" FROM subscribers s WHERE s.id BETWEEN {lo} AND {hi}"
                    " AND s.confirmed_at IS NOT NULL"
                ).bindparams(when, later)
            )
            # Clicks: one by 3.2 % of those sent it, a second by a third of them; a
            # tenth of the first ones are a link scanner's (not engaged).
            for step, hours in ((31, 1), (93, 2)):
                conn.execute(
                    sa.text(
                        "INSERT INTO clicks (issue_id, subscriber_id, position, at, engaged)"
                        f" SELECT {issue_id}, subscriber_id,"
                        f" (subscriber_id / {step}) % {len(links)} + 1, :at,"
                        f" CASE WHEN subscriber_id % {step * 10} = 0 AND {hours} = 1"
                        " THEN :f ELSE :t END"
                        f" FROM deliveries WHERE issue_id = {issue_id} AND status = 'sent'"
                        f" AND subscriber_id % {step} = 0"
                    ).bindparams(
                        typed("at", sent_at + timedelta(hours=hours), db.UTCDateTime()), true, false
                    )
                )
            # The webhook events that set the feedback (every one for the full-size
            # issue; for the others, all but the "delivered" ones).
            only = "" if issue_id == sent_ids[-1] else " AND feedback <> 'delivered'"
            conn.execute(
                sa.text(
                    "INSERT INTO provider_events (provider, event_id, at, kind, subscriber_id,"
                    " issue_id) SELECT 'sendgrid', 'sg-' || issue_id || '-' || subscriber_id,"
                    f" :later, feedback, subscriber_id, issue_id FROM deliveries"
                    f" WHERE issue_id = {issue_id} AND feedback IS NOT NULL{only}"
                ).bindparams(later)
            )
            conn.execute(
                sa.text(
                    "UPDATE issues SET"
                    " recipients = (SELECT count(*) FROM deliveries d"
                    " WHERE d.issue_id = issues.id),"
                    " sent = (SELECT count(*) FROM deliveries d WHERE d.issue_id = issues.id"
                    " AND d.status = 'sent'),"
                    " failed = (SELECT count(*) FROM deliveries d WHERE d.issue_id = issues.id"
                    " AND d.status = 'failed'),"
                    " skipped = (SELECT count(*) FROM deliveries d WHERE d.issue_id = issues.id"
                    " AND d.status = 'skipped')"
                    f" WHERE id = {issue_id}"
                )
            )
    t = lap("deliveries, clicks, provider events", t)

    # -- drafts, a scheduled issue, users, the audit log
    with engine.begin() as conn:
        later_ids = []
        for k, (status, audience) in enumerate(
            [("draft", ["main"])] * 4 + [("draft", ["main", "deals"]), ("scheduled", ["deals"])]
        ):
            values: dict[str, Any] = {
                "subject": f"Next letter {k + 1}",
                "preheader": "Coming up",
                "intro": "What we are reading next.",
                "audience": audience,
                "status": status,
                "created_at": now - timedelta(hours=6 - k),
                "updated_at": now - timedelta(hours=6 - k),
            }
            if status == "scheduled":
                values["send_at"] = now + timedelta(days=1)
                values["time_zone"] = "Europe/London"
            issue_id = conn.execute(
                sa.insert(db.issues).values(**values).returning(db.issues.c.id)
            ).scalar_one()
            later_ids.append(issue_id)
            conn.execute(
                sa.insert(db.issue_articles),
                [
                    {"issue_id": issue_id, "position": p, "slug": slug, "full": p == 0}
                    for p, slug in enumerate(SEEDS)
                ],
            )
    owner = users.add(engine, OWNER, Role.OWNER, PASSWORD, name="Bench Owner")
    staff = [owner.id]
    for email, role in (
        ("editor@bench.example.org", Role.EDITOR),
        ("author@bench.example.org", Role.AUTHOR),
        ("viewer@bench.example.org", Role.VIEWER),
    ):
        staff.append(users.add(engine, email, role, PASSWORD, name=role.value.title()).id)
    actions = ("signed in", "issue edited", "tested", "scheduled", "signed out", "issue created")
    with engine.begin() as conn:
        conn.execute(
            sa.insert(db.audit_log),
            [
                {
                    "at": now - timedelta(minutes=5 * (AUDIT_ROWS - j)),
                    "user_id": staff[j % len(staff)] if j % 7 else None,
                    "action": actions[j % len(actions)],
                    "detail": f"issue {sent_ids[j % len(sent_ids)]}" if j % 3 else "",
                }
                for j in range(AUDIT_ROWS)
            ],
        )
    if pg:  # as autovacuum leaves a database days after a send: visibility map, statistics
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE)")
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    lap("drafts, users, audit log, ANALYZE", t)

    with engine.connect() as conn:
        deliveries = int(conn.scalar(sa.select(sa.func.count()).select_from(db.deliveries)) or 0)
        clicks = int(conn.scalar(sa.select(sa.func.count()).select_from(db.clicks)) or 0)
        audits = int(conn.scalar(sa.select(sa.func.count()).select_from(db.audit_log)) or 0)
    seeded = Seeded(
        subscribers=n,
        full=sent_ids[-1],
        small=sent_ids[-2] if len(sent_ids) > 1 else sent_ids[-1],
        draft=later_ids[0],
        scheduled=later_ids[-1],
        sent_issues=len(sent_ids),
        issues=len(sent_ids) + len(later_ids),
        deliveries=deliveries,
        clicks=clicks,
        audit=audits,
        signups_from=long_ago,
        seconds=clock,
    )
    seeded.expected = expected(n, *ranges[seeded.full], *ranges[seeded.small])
    return seeded


def expected(n: int, lo: int, hi: int, small_lo: int, small_hi: int) -> dict[str, Any]:
    """What the pages must show, from the seeding rules (not from the database)."""
    active = [i for i in range(1, n + 1) if status_of(i) == "active"]
    feedback: Counter[str | None] = Counter()
    statuses: Counter[str] = Counter()
    clicks = 0
    for i in range(lo, hi + 1):
        if status_of(i) == "pending":
            continue
        status = delivery_of(i)
        statuses[status] += 1
        if status == "sent":
            feedback[feedback_of(i)] += 1
            clicks += clicks_of(i)
    small = sum(1 for i in range(small_lo, small_hi + 1) if status_of(i) != "pending")
    return {
        "main": len(active),
        "deals": sum(1 for i in active if i % 5 == 0),
        "everyone": len(active),
        "sent": statuses["sent"],
        "failed": statuses["failed"],
        "skipped": statuses["skipped"],
        "recipients": sum(statuses.values()),
        "delivered": feedback["delivered"],
        "bounced": feedback["bounced"],
        "complained": feedback["complained"],
        "soft_bounced": feedback["soft_bounce"],
        "unsubscribed": feedback["unsubscribed"],
        "unknown": feedback[None],
        "clicks": clicks,
        "small_recipients": small,
    }


def check(url: str, seeded: Seeded) -> list[str]:
    """The product's own read functions against what was seeded; the differences."""
    engine = db.engine(url)
    want = seeded.expected
    got = {
        "main": drafts.recipients(engine, ["main"]),
        "deals": drafts.recipients(engine, ["deals"]),
        "everyone": drafts.recipients(engine, []),
    }
    full = issues.get(engine, seeded.full)
    got.update(
        sent=full.progress.sent,
        failed=full.progress.failed,
        skipped=full.progress.skipped,
        recipients=full.progress.recipients,
        small_recipients=issues.get(engine, seeded.small).progress.recipients,
    )
    feedback = outcome.feedback(engine, seeded.full)
    for name in ("delivered", "bounced", "complained", "soft_bounced", "unsubscribed", "unknown"):
        got[name] = getattr(feedback, name)
    got["clicks"] = reports.clicks(engine, seeded.full).clicks
    problems = [
        f"{k}: the product reads {got[k]:,}, seeded {want[k]:,}" for k in want if got[k] != want[k]
    ]
    if outcome.failure_count(engine, seeded.full) != want["failed"]:
        problems.append("the failures do not match the failed deliveries")
    if outcome.recipients_now(engine, seeded.draft) != want["main"]:
        problems.append("the draft's recipients_now is not the list main's active members")
    if len(issues.list_issues(engine)) != seeded.issues:
        problems.append("list_issues does not list every issue")
    if audit.count(engine) != seeded.audit:
        problems.append("the audit log's count is not what was seeded")
    return problems


# -- the service ----------------------------------------------------------------------------


class Server:
    """``python -m workers serve --workers 1`` in a process group of its own."""

    def __init__(self, run_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = run_dir / "serve.log"
        self.log = self.log_path.open("w")
        command = [sys.executable, "-m", "workers", "serve", "--port", str(self.port)]
        command += ["--workers", "1", "--no-access-log"]
        self.proc = subprocess.Popen(
            command,
            cwd=run_dir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"letterpress serve exited:\n{self.log_path.read_text()}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"letterpress serve did not start:\n{self.logs()}")
            time.sleep(0.2)

    def logs(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


TOKEN = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class Page:
    name: str
    method: str
    path: str
    must_show: list[str]  # what the answer must contain
    target_ms: float = PAGE_MS
    data: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    times: list[float] = field(default_factory=list)


def sign_in(url: str) -> tuple[requests.Session, str]:
    """An owner's browser session, signed in through the form, and its CSRF token."""
    browser = requests.Session()
    form = browser.get(url + "/admin/sign-in", timeout=30)
    token = TOKEN.search(form.text)
    if form.status_code != 200 or token is None:
        raise RuntimeError(f"the sign-in page answered {form.status_code} without a form")
    answer = browser.post(
        url + "/admin/sign-in",
        data={"email": OWNER, "password": PASSWORD, "next": "", "csrf": token.group(1)},
        headers={"Origin": BASE_URL},
        allow_redirects=False,
        timeout=30,
    )
    if answer.status_code != 303:
        raise RuntimeError(f"signing in answered {answer.status_code}: {answer.text[:500]}")
    home = browser.get(url + "/admin/", timeout=30)
    found = TOKEN.search(home.text)
    if found is None:
        raise RuntimeError("the home page has no CSRF token: not signed in?")
    return browser, found.group(1)


def pages(seeded: Seeded, csrf: str) -> list[Page]:
    want = seeded.expected
    main = f"{want['main']:,}"
    post = {"Origin": BASE_URL}
    compose = {
        "subject": "A preview of next week",
        "preheader": "Vitamins, again",
        "intro": "Two articles, the first in full.",
        "article": list(SEEDS),
        "mode": ["full", "teaser"],
        "audience": ["main"],
        "issue": str(seeded.draft),
        "csrf": csrf,
    }
    full = seeded.full
    deep = max(0, -(-seeded.subscribers // BATCH) - 40)  # 40 batches before the last
    return [
        Page("healthz (baseline)", "GET", "/healthz", ["ok"], target_ms=0, anonymous=True),
        Page("sign-in", "GET", "/admin/sign-in", ['name="password"'], anonymous=True),
        Page("home", "GET", "/admin/", ["Issues"]),
        Page("articles", "GET", "/admin/articles", [SEEDS[0]]),
        Page(
            "issues", "GET", "/admin/issues", [f'id="issue-{full}"', f'id="issue-{seeded.draft}"']
        ),
        Page("new issue", "GET", "/admin/issues/new", [f"{want['everyone']:,} recipients"]),
        Page("edit draft", "GET", f"/admin/issues/{seeded.draft}/edit", [f"{main} recipients"]),
        Page(
            "report (full size)",
            "GET",
            f"/admin/issues/{full}",
            [
                f'id="f-delivered">{want["delivered"]:,}<',
                f'id="f-bounced">{want["bounced"]:,}<',
                f'id="f-complained">{want["complained"]:,}<',
                f'id="n-sent">{want["sent"]:,}<',
                f"{want['clicks']:,} clicks",
                f'Failures <span class="hint">({want["failed"]})',
            ],
        ),
        Page(
            "report (smaller)",
            "GET",
            f"/admin/issues/{seeded.small}",
            [f"of {want['small_recipients']:,}</p>"],
        ),
        Page(
            "progress (htmx)",
            "GET",
            f"/admin/issues/{full}/progress",
            [f'id="n-sent">{want["sent"]:,}<'],
            headers={"HX-Request": "true"},
        ),
        # A send's machinery: the full-size issue's batches (1 to n in BATCH each; a
        # thousand for a million), fifty a page: the first, one near the end by keyset,
        # and one status as htmx polls it.
        Page("batches", "GET", f"/admin/issues/{full}/batches", ['data-status="sent"']),
        Page(
            "batches (late page)",
            "GET",
            f"/admin/issues/{full}/batches?after={deep}",
            [f'<th scope="row" data-label="Batch">{deep + 1} '],
        ),
        Page(
            "batches (sent, htmx)",
            "GET",
            f"/admin/issues/{full}/batches?status=sent&after={deep}",
            [f'<th scope="row" data-label="Batch">{deep + 1} ', 'data-status="sent"'],
            headers={"HX-Request": "true"},
        ),
        Page(
            "operations",
            "GET",
            "/admin/operations",
            [f"<dt>active</dt><dd>{main}</dd>", 'id="chart-table"', 'id="bucket"'],
        ),
        Page(
            "operations (htmx)",
            "GET",
            "/admin/operations",
            [f"<dt>active</dt><dd>{main}</dd>", '<div id="live"'],
            headers={"HX-Request": "true"},
        ),
        Page("users", "GET", "/admin/users", [OWNER]),
        Page("audit", "GET", "/admin/audit", ["Entries 1 to 50 of"]),
        Page("totp", "GET", "/admin/totp", ["otpauth://"]),
        Page(
            "recipients (main)",
            "GET",
            "/admin/compose/recipients?audience=main",
            [f"{main} recipients"],
        ),
        Page(
            "preview (POST)",
            "POST",
            "/admin/compose/preview",
            ['class="frame-desktop"'],
            target_ms=PREVIEW_MS,
            data=compose,
            headers={**post, "HX-Request": "true"},
        ),
        *subscriber_pages(seeded),
        Page(
            "schedule review (POST)",
            "POST",
            f"/admin/issues/{seeded.draft}/schedule/review",
            [f"It goes to {main} subscribers"],
            data={"when": "now", "date": "", "time": "", "time_zone": "UTC", "csrf": csrf},
            headers=post,
        ),
    ]


def newest(n: int, rule: Callable[[int], bool]) -> int:
    """The highest subscriber id up to ``n`` that ``rule`` holds for."""
    return next(i for i in range(n, 0, -1) if rule(i))


def signup_cursor(seeded: Seeded, i: int) -> str:
    """The ``after`` of a page of the search by signup date that ends at subscriber i."""
    signed_up = seeded.signups_from + timedelta(seconds=SIGNUP_SECONDS * i)
    return f"{(signed_up - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)}-{i}"


def subscriber_pages(seeded: Seeded) -> list[Page]:
    """The subscribers' search, one subscriber's page and the suppressions (issue 12),
    each with what it must show by the seeding rules."""
    n = seeded.subscribers
    mid = n // 2
    bounced_deal = newest(n, lambda i: status_of(i) == "bounced" and i % 5 == 0)
    suppressed = newest(n, lambda i: status_of(i) in ("bounced", "complained"))
    prefix = str(n // 81)[:5]  # a prefix of a few addresses: reader12345 of a million
    sparse = sorted(f"reader{i}@example.com" for i in range(1, n + 1) if str(i).startswith(prefix))
    dense = min(f"reader{i}@example.com" for i in range(1, n + 1))
    after = f"reader{mid}@example.com"
    deep = min(e for e in (f"reader{i}@example.com" for i in range(1, n + 1)) if e > after)
    profiled = min(PROFILED, n - n % 100)
    tiny = n - n % tiny_every(n)
    # The day (UTC) the middle subscriber signed up, and who signed up that day.
    day = (seeded.signups_from + timedelta(seconds=SIGNUP_SECONDS * mid)).date()
    start = datetime.combine(day, datetime.min.time(), UTC)
    first_second = (start - seeded.signups_from).total_seconds()
    that_day = range(
        max(1, int(first_second // SIGNUP_SECONDS) + 1),
        min(n, int((first_second + 86400) // SIGNUP_SECONDS)) + 1,
    )
    complained_that_day = max(i for i in that_day if status_of(i) == "complained")
    return [
        Page("subscribers", "GET", "/admin/subscribers", [f"reader{n}@example.com</a>"]),
        Page(
            "search: prefix",
            "GET",
            f"/admin/subscribers?q=reader{prefix}",
            [f"{sparse[0]}</a>", f"{sparse[-1]}</a>", f"{len(sparse)} subscribers"],
        ),
        Page(
            "search: prefix (dense)",
            "GET",
            "/admin/subscribers?q=reader",
            [f"{dense}</a>", 'id="next-page"'],
        ),
        Page(
            "search: exact address",
            "GET",
            f"/admin/subscribers?q=reader{mid}@example.com&match=exact",
            [f"reader{mid}@example.com</a>", "1 subscriber<"],
        ),
        Page(
            "search: status + list",
            "GET",
            "/admin/subscribers?status=bounced&list=deals",
            [f"reader{bounced_deal}@example.com</a>", 'id="next-page"'],
        ),
        Page(
            "search: status + list, none",
            "GET",
            "/admin/subscribers?status=complained&list=deals",
            ["Nobody matches"],
        ),
        Page(
            "search: small list",
            "GET",
            "/admin/subscribers?list=tiny",
            [f"reader{tiny}@example.com</a>", f"{n // tiny_every(n)} subscribers"],
        ),
        Page(
            "search: signup day + status",
            "GET",
            f"/admin/subscribers?from={day}&to={day}&status=complained",
            [f"reader{complained_that_day}@example.com</a>"],
        ),
        Page(
            "search: signup date, deep page",
            "GET",
            f"/admin/subscribers?from={seeded.signups_from.date()}"
            f"&after={signup_cursor(seeded, mid)}",
            [f"reader{mid - 1}@example.com</a>", "further on"],
        ),
        Page(
            "search: signup date, none",
            "GET",
            f"/admin/subscribers?from={db.now().date().isoformat()}",
            ["Nobody matches"],
        ),
        Page(
            "search: deep page (id)",
            "GET",
            f"/admin/subscribers?after={mid + 1}",
            [f"reader{mid}@example.com</a>", "further on"],
        ),
        Page(
            "search: deep page (address)",
            "GET",
            f"/admin/subscribers?q=reader&after=reader{mid}%40example.com",
            [f"{deep}</a>"],
        ),
        Page(
            "subscriber",
            "GET",
            f"/admin/subscribers/{profiled}",
            [
                f"<h1>reader{profiled}@example.com</h1>",
                'class="h-click"',
                'class="h-delivery"',
                'class="h-report"',
            ],
        ),
        Page("suppressions", "GET", "/admin/suppressions", [f"reader{suppressed}@example.com"]),
    ]


def explain(url: str, seeded: Seeded) -> None:
    """The plan of every SELECT the subscribers' pages run, captured as they run."""
    engine = db.engine(url)
    n = seeded.subscribers
    search = directory.Search
    cases: list[tuple[str, Callable[[], object]]] = [
        ("first page", lambda: directory.search(engine, search())),
        ("prefix", lambda: directory.search(engine, search(address="reader12345"))),
        ("prefix (dense)", lambda: directory.search(engine, search(address="reader"))),
        (
            "exact",
            lambda: directory.search(
                engine, search(address=f"reader{n // 2}@example.com", exact=True)
            ),
        ),
        (
            "status + list",
            lambda: directory.search(engine, search(status="bounced", list_name="deals")),
        ),
        (
            "status + list, none",
            lambda: directory.search(engine, search(status="complained", list_name="deals")),
        ),
        ("small list", lambda: directory.search(engine, search(list_name="tiny"))),
        (
            "signup day + status",
            lambda: directory.search(
                engine,
                search(
                    joined_from=(
                        seeded.signups_from + timedelta(seconds=SIGNUP_SECONDS * (n // 2))
                    ).date(),
                    joined_to=(
                        seeded.signups_from + timedelta(seconds=SIGNUP_SECONDS * (n // 2))
                    ).date(),
                    status="complained",
                ),
            ),
        ),
        (
            "signup date, deep page",
            lambda: directory.search(
                engine,
                search(joined_from=seeded.signups_from.date()),
                signup_cursor(seeded, n // 2),
            ),
        ),
        (
            "signup date, none",
            lambda: directory.search(engine, search(joined_from=db.now().date())),
        ),
        ("deep page (id)", lambda: directory.search(engine, search(), str(n // 2 + 1))),
        (
            "deep page (address)",
            lambda: directory.search(
                engine, search(address="reader"), f"reader{n // 2}@example.com"
            ),
        ),
        ("subscriber", lambda: directory.profile(engine, min(PROFILED, n - n % 100))),
        ("suppressions", lambda: directory.suppressed(engine)),
    ]
    sqlite = engine.dialect.name == "sqlite"
    prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
    for name, call in cases:
        captured: list[tuple[str, Any]] = []

        def grab(
            _conn: Any,
            _cursor: Any,
            statement: str,
            parameters: Any,
            *_: Any,
            into: list[tuple[str, Any]] = captured,
        ) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                into.append((statement, parameters))

        sa.event.listen(engine, "before_cursor_execute", grab)
        try:
            call()
        finally:
            sa.event.remove(engine, "before_cursor_execute", grab)
        print(f"\n  -- {name}")
        with engine.connect() as conn:
            for statement, parameters in captured:
                where = " ".join(statement.split())
                where = where[where.find(" FROM ") :][:150]
                print(f"    {where}")
                for row in conn.exec_driver_sql(prefix + statement, parameters):
                    print(f"      {row[-1]}")
            conn.rollback()


def request(browser: requests.Session, url: str, page: Page) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    answer = browser.request(
        page.method,
        url + page.path,
        data=page.data,
        headers=page.headers,
        allow_redirects=False,
        timeout=60,
    )
    return 1000 * (time.perf_counter() - started), answer


def measure(url: str, seeded: Seeded, rounds: int, warmup: int) -> list[Page]:
    owner, csrf = sign_in(url)
    anonymous = requests.Session()
    todo = pages(seeded, csrf)
    for page in todo:  # warm-up, and every page shows what was seeded
        browser = anonymous if page.anonymous else owner
        for _ in range(max(1, warmup)):
            _, answer = request(browser, url, page)
        missing = [m for m in page.must_show if m not in answer.text]
        if answer.status_code != 200 or missing:
            raise RuntimeError(
                f"{page.method} {page.path} answered {answer.status_code} without"
                f" {missing}:\n{answer.text[:3000]}"
            )
    for r in range(rounds):
        shift = r % len(todo)
        for page in todo[shift:] + todo[:shift]:
            ms, answer = request(anonymous if page.anonymous else owner, url, page)
            if answer.status_code != 200:
                raise RuntimeError(f"{page.path} answered {answer.status_code} in round {r + 1}")
            page.times.append(ms)
    return todo


# -- the report -----------------------------------------------------------------------------


def verdict(page: Page) -> str:
    if not page.target_ms:
        return "(baseline)"
    p95 = percentile(page.times, 95)
    if p95 < page.target_ms:
        return "MET"
    return f"NOT MET: p95 {p95:.0f} >= {page.target_ms:.0f} ms"


def print_table(kind: str, measured: list[Page]) -> list[dict[str, Any]]:
    rows = []
    print(f"\n  {'page':24} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}  {'target':>7}  verdict")
    for page in measured:
        row = {
            "database": kind,
            "page": page.name,
            "path": page.path,
            "p50": median(page.times),
            "p95": percentile(page.times, 95),
            "max": max(page.times),
            "target": page.target_ms,
            "verdict": verdict(page),
        }
        rows.append(row)
        target = f"< {page.target_ms:.0f}" if page.target_ms else "-"
        print(
            f"  {page.name:24} {row['p50']:7.1f} {row['p95']:7.1f} {row['max']:7.1f}"
            f"  {target:>7}  {row['verdict']}"
        )
    return rows


def bench_database(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=WORK))
    url = fresh_database(kind, run_dir, args.postgres)
    config = run_dir / "letterpress.toml"
    config.write_text(
        f'base_url = "{BASE_URL}"\n'
        'site_name = "Letterpress Bench"\n'
        'postal_address = "1 Bench Street, Benchville"\n'
        f'content_dir = "{ROOT / "content"}"\n'
        f'templates_dir = "{ROOT / "templates"}"\n'
        "console_totp_roles = []\n"
        "console_signin_per_ip_per_hour = 1000\n"
    )
    try:
        started = time.perf_counter()
        seeded = seed(url, config, args.subscribers, args.issues, args.small_deliveries)
        took = time.perf_counter() - started
        print(
            f"\n== {kind}: {seeded.subscribers:,} subscribers (main: {seeded.expected['main']:,}"
            f" active; deals: {seeded.expected['deals']:,}), {seeded.issues} issues"
            f" ({seeded.sent_issues} sent: issue {seeded.full} full size with"
            f" {seeded.expected['recipients']:,} deliveries, the {seeded.sent_issues - 1} older"
            f" ones {args.small_deliveries:,} subscribers each), {seeded.deliveries:,}"
            f" deliveries, {seeded.clicks:,} clicks, {seeded.audit:,} audit entries;"
            f" seeded in {took:.0f} s ("
            + ", ".join(f"{k} {v:.0f} s" for k, v in seeded.seconds.items())
            + ")",
            flush=True,
        )
        problems = check(url, seeded)
        if problems:
            raise RuntimeError("the seeded data is not what it should be: " + "; ".join(problems))
        print(
            "  checked with the product's read functions: recipients, progress, feedback,"
            " clicks, failures, issues, audit log",
            flush=True,
        )
        if args.explain:
            explain(url, seeded)
        env = clean_env()
        env.update(LETTERPRESS_SECRET_KEY=SECRET, DATABASE_URL=url, LETTERPRESS_CONFIG=str(config))
        env["PYTHONPATH"] = str(ROOT)  # the service runs the code of this tree
        server = Server(run_dir, env)
        load = os.getloadavg()
        try:
            measured = measure(server.url, seeded, args.requests, args.warmup)
        finally:
            server.close()
        after = os.getloadavg()
        print(
            f"  {args.requests} rounds of every page after {args.warmup} warm-up requests each;"
            f" load average {load[0]:.2f} {load[1]:.2f} before,"
            f" {after[0]:.2f} {after[1]:.2f} after",
            flush=True,
        )
        problems = [line for line in server.logs(400).splitlines() if "Traceback" in line]
        if problems:
            print(f"  the server logged {len(problems)} tracebacks:\n{server.logs()}")
        return print_table(kind, measured)
    finally:
        db.engine(url).dispose()
        if kind == "postgresql" and not args.keep:
            drop_database(url, args.postgres)
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def versions(kinds: list[str], server: str) -> str:
    return machine(server if "postgresql" in kinds else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=60, help="rounds of every page")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per page")
    parser.add_argument("--issues", type=int, default=200, help="sent issues")
    parser.add_argument(
        "--small-deliveries",
        type=int,
        help="subscribers each older sent issue went to (default: a fiftieth of them,"
        " 20,000 of 1,000,000; the newest goes to all)",
    )
    parser.add_argument(
        "--postgres", default=POSTGRES, help=f"the server, to create a database on ({POSTGRES})"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and run folder")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument(
        "--explain", action="store_true", help="print the plans of the subscribers' pages"
    )
    args = parser.parse_args(argv)
    if args.small_deliveries is None:
        args.small_deliveries = max(1, args.subscribers // 50)
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    WORK.mkdir(parents=True, exist_ok=True)
    print(code_version())
    print(versions(kinds, args.postgres))
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        rows += bench_database(kind, args)
    targets = [r for r in rows if r["target"]]
    missed = [r for r in targets if r["verdict"] != "MET"]
    print(
        f"\ntarget: every console page p95 < {PAGE_MS:.0f} ms, the preview p95 <"
        f" {PREVIEW_MS:.0f} ms, on {' and '.join(kinds)}: "
        + ("MET" if not missed else f"NOT MET ({len(missed)} of {len(targets)} pages)")
    )
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
