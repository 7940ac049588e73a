"""Two counts the console shows, kept by triggers in the database (migration 0005).

The recipient count (``prepare.recipients_now``) stays equal to who
an issue would really go to, whatever changes the subscribers: it is read from
``memberships.recipient``, which the database's triggers keep (migration 0005). Every
way the product changes a subscriber runs here, and a plain UPDATE from outside it,
on SQLite and PostgreSQL; after each, the count of every audience is checked against
the definition ``prepare`` sends by (``audience_filter``), and every membership's flag
against its subscriber. The report's feedback (``outcome.feedback``, from
``issue_feedback``) is checked the same way against the deliveries, through the
webhooks' events, an erasure and SQL by hand."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import sqlalchemy as sa

from pipeline.audience import changes, consent, feedback, subscribers
from pipeline.audience.changes import Change
from pipeline.audience.feedback import KINDS
from pipeline.audience.imports import import_csv
from pipeline.audience.webhooks import Event
from pipeline.broker import dispatcher_for
from pipeline.sending import issues, outcome
from pipeline.sending.issues import ArticleRef
from pipeline.sending.parts import SendingParts
from pipeline.sending.prepare import audience_filter, recipients_now
from pipeline.settings import Settings
from pipeline.statuses import DeliveryStatus, SubscriberStatus
from pipeline.store import db
from tests.cluster import seed_subscribers
from tests.conftest import CONTENT, SEEDS

AUDIENCES: list[Sequence[str]] = [(), ("main",), ("deals",), ("main", "deals"), ("nobody",)]


def truth(conn: sa.Connection, audience: Sequence[str]) -> int:
    where = audience_filter(conn, list(audience), db.now())
    query = sa.select(sa.func.count()).where(
        where, db.subscribers.c.status == SubscriberStatus.ACTIVE
    )
    return int(conn.scalar(query) or 0)


def check(engine: sa.Engine, step: str) -> dict[str, int]:
    s, m = db.subscribers.c, db.memberships.c
    with engine.connect() as conn:
        wrong = conn.execute(
            sa.select(m.list_id, m.subscriber_id, m.recipient, s.status, s.confirmed_at)
            .join(db.subscribers, s.id == m.subscriber_id)
            .where(
                m.recipient.is_distinct_from(
                    sa.and_(s.status == SubscriberStatus.ACTIVE, s.confirmed_at.is_not(None))
                )
            )
        ).all()
        assert wrong == [], f"after {step}: memberships whose flag is wrong: {wrong}"
        counts = {"+".join(a) or "everyone": recipients_now(conn, a) for a in AUDIENCES}
        expected = {"+".join(a) or "everyone": truth(conn, a) for a in AUDIENCES}
    assert counts == expected, f"after {step}"
    return counts


def test_the_recipient_count_follows_every_change_to_subscribers(
    database_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    engine = db.engine(database_url)
    settings = make_settings(public_lists=["main", "deals"])
    assert check(engine, "nothing") == {
        "everyone": 0,
        "main": 0,
        "deals": 0,
        "main+deals": 0,
        "nobody": 0,
    }
    ada = changes.add(
        engine, "ada@example.com", via="test", lists=["main"], status="active"
    ).subscriber_id
    bob = subscribers.add(engine, "bob@example.com", lists=["main", "deals"], status="active")
    check(engine, "two active subscribers added")
    with engine.begin() as conn:  # active and confirmed: added by hand, as consent elsewhere
        conn.execute(sa.update(db.subscribers).values(confirmed_at=db.now()))
    assert check(engine, "both confirmed")["main+deals"] == 2

    signed = consent.signup(engine, settings, "cy@example.com", lists=["main"])
    counts = check(engine, "a sign-up, not confirmed yet")
    assert counts["main"] == 2
    assert consent.confirm(engine, signed.subscriber_id)
    assert check(engine, "the sign-up confirmed")["main"] == 3

    with engine.connect() as conn:
        main_id = conn.scalar(sa.select(db.lists.c.id).where(db.lists.c.name == "main"))
    assert main_id is not None
    consent.unsubscribe(engine, bob, main_id, via="test")
    counts = check(engine, "bob left main")
    assert (counts["main"], counts["deals"], counts["main+deals"]) == (2, 1, 3)

    changes.update(engine, ada, Change(status="unsubscribed"), via="test")
    assert check(engine, "ada unsubscribed everywhere")["main"] == 1
    changes.update(engine, ada, Change(status="active", join=["deals"]), via="test")
    counts = check(engine, "ada back, and on deals too")
    assert (counts["main"], counts["deals"]) == (2, 2)

    with engine.begin() as conn:
        consent.suppress(conn, signed.subscriber_id, "bounced", "550 mailbox unavailable")
    assert check(engine, "cy bounced")["main"] == 1

    csv = tmp_path / "people.csv"
    rows = ["email,name,status,lists"]
    rows += [f"reader{i}@example.com,Reader {i},active,main;deals" for i in range(40)]
    rows += ["not an address,Nobody,active,main"]
    csv.write_text("\n".join(rows) + "\n")
    report = import_csv(engine, csv)
    assert report.new == 40 and len(report.problems) == 1
    counts = check(engine, "40 imported")
    with engine.begin() as conn:  # what the import left unconfirmed, confirmed by hand
        conn.execute(
            sa.update(db.subscribers)
            .where(db.subscribers.c.confirmed_at.is_(None))
            .values(confirmed_at=db.now())
        )
    counts = check(engine, "the imported confirmed")

    assert consent.erase(engine, bob, Settings())
    after = check(engine, "bob erased")
    assert after["deals"] == counts["deals"] - 1

    with engine.begin() as conn:  # a change made outside the product: SQL by hand
        conn.execute(
            sa.update(db.subscribers)
            .where(db.subscribers.c.email.like("reader1%"))
            .values(status="complained")
        )
    assert check(engine, "readers complained by hand")["main"] < after["main"]


def heard(engine: sa.Engine, issue_id: int) -> dict[str, int]:
    """The report's feedback counted from the deliveries themselves."""
    d = db.deliveries.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(d.feedback, sa.func.count())
            .where(d.issue_id == issue_id, d.status == DeliveryStatus.SENT)
            .group_by(d.feedback)
        ).all()
    found = {str(kind or "unknown"): int(n) for kind, n in rows}
    return {k: found.get(k, 0) for k in (*KINDS, "unknown")}


def reported(engine: sa.Engine, issue_id: int) -> dict[str, int]:
    f = outcome.feedback(engine, issue_id)
    return {
        "delivered": f.delivered,
        "soft_bounce": f.soft_bounced,
        "unsubscribed": f.unsubscribed,
        "bounced": f.bounced,
        "complained": f.complained,
        "unknown": f.unknown,
    }


def test_the_reports_feedback_follows_the_webhooks_and_every_change_to_deliveries(
    database_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=database_url,
        redis_url=None,
        content_dir=str(CONTENT),
        outbox_dir=tmp_path / "outbox",
        batch_size=10,
        secret_key="recipients-test-secret-0123456789",
    )
    seed_subscribers(database_url, 30)
    parts = SendingParts(settings)
    engine = parts.engine
    issue_id = issues.create(
        engine, subject="K2", audience=("main",), articles=[ArticleRef(SEEDS[0], True)]
    )
    issues.schedule(engine, issue_id, None)
    assert parts.start_due(dispatcher_for(parts, None)) == [issue_id]
    assert reported(engine, issue_id) == heard(engine, issue_id)
    assert reported(engine, issue_id)["unknown"] == 30
    assert issues.get(engine, issue_id).status == "sent"

    def apply(*events: tuple[str, str, int]) -> None:
        feedback.apply(
            engine,
            settings,
            "mailgun",
            [Event(e, kind, f"reader{sid}@example.com", sid, issue_id) for e, kind, sid in events],
        )
        assert reported(engine, issue_id) == heard(engine, issue_id), events

    apply(*[(f"d{i}", "delivered", i) for i in range(1, 21)])
    apply(("d1", "delivered", 1))  # the provider's retry of an event: nothing changes
    apply(("b2", "bounced", 2), ("c3", "complained", 3), ("u4", "unsubscribed", 4))
    apply(("s5", "soft_bounce", 5), ("s2", "soft_bounce", 2))  # weaker: bounced stays
    apply(("c2", "complained", 2))  # stronger than bounced
    assert reported(engine, issue_id) == {
        "delivered": 16,
        "soft_bounce": 1,
        "unsubscribed": 1,
        "bounced": 0,
        "complained": 2,
        "unknown": 10,
    }
    assert consent.erase(engine, 3, Settings())  # the delivery stays, holding nobody's data
    assert reported(engine, issue_id) == heard(engine, issue_id)
    d = db.deliveries.c
    with engine.begin() as conn:  # changes made outside the product: SQL by hand
        conn.execute(
            sa.update(db.deliveries)
            .where(d.issue_id == issue_id, d.subscriber_id == 6)
            .values(feedback="bounced")
        )
        conn.execute(
            sa.update(db.deliveries)
            .where(d.issue_id == issue_id, d.subscriber_id == 7)
            .values(status=DeliveryStatus.FAILED)
        )
        conn.execute(
            sa.update(db.issues).where(db.issues.c.id == issue_id).values(sent=db.issues.c.sent - 1)
        )
        conn.execute(sa.delete(db.deliveries).where(d.issue_id == issue_id, d.subscriber_id == 8))
        conn.execute(
            sa.update(db.issues).where(db.issues.c.id == issue_id).values(sent=db.issues.c.sent - 1)
        )
    assert reported(engine, issue_id) == heard(engine, issue_id)
    with engine.begin() as conn:  # one statement for many rows: every count moves at once
        conn.execute(
            sa.update(db.deliveries)
            .where(d.issue_id == issue_id, d.subscriber_id > 20)
            .values(feedback="delivered")
        )
        conn.execute(
            sa.update(db.deliveries)
            .where(d.issue_id == issue_id, d.feedback == "complained")
            .values(feedback="bounced")
        )
    assert reported(engine, issue_id) == heard(engine, issue_id)
    assert reported(engine, issue_id)["unknown"] == 0
    with engine.begin() as conn:
        conn.execute(sa.delete(db.issues).where(db.issues.c.id == issue_id))
        left = conn.scalar(sa.select(sa.func.count()).select_from(db.issue_feedback))
    assert left == 0
    parts.close()
