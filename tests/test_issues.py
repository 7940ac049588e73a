"""Issues: the editor's state machine, the atomic claim of due issues, the late hold."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import pytest
import sqlalchemy as sa

from pipeline.content.store import FileContentStore
from pipeline.errors import ConfigError, NotFound
from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef, IssueStateError
from pipeline.statuses import (
    BatchStatus,
    DeliveryStatus,
    ImportStatus,
    IssueStatus,
    Role,
    SubscriberStatus,
)
from pipeline.store import db
from tests.conftest import SEEDS

SIX_HOURS = timedelta(hours=6)


def new_issue(url: str, **kwargs: object) -> int:
    return issues.create(
        db.engine(url),
        subject=str(kwargs.pop("subject", "Vitamin K2")),
        articles=[ArticleRef(SEEDS[0], True), ArticleRef(SEEDS[1], False)],
        **kwargs,  # type: ignore[arg-type]
    )


def test_create_and_show(database_url: str, settings) -> None:
    catalog = FileContentStore(settings.content_dir.resolve(), settings).catalog()
    issue_id = issues.create(
        db.engine(database_url),
        subject="  Vitamin K2  ",
        articles=issues.parse_articles(f"{SEEDS[0]},{SEEDS[1]}:full"),
        preheader="Two articles",
        catalog=catalog,
    )
    issue = issues.get(db.engine(database_url), issue_id)
    assert issue.subject == "Vitamin K2"
    assert issue.status == "draft"
    assert [(a.slug, a.full) for a in issue.articles] == [(SEEDS[0], True), (SEEDS[1], True)]
    assert issue.audience == []
    assert [i.id for i in issues.list_issues(db.engine(database_url))] == [issue_id]


def test_create_refuses_unknown_articles_lists_and_empty_subject(sqlite_url: str, settings) -> None:
    engine = db.engine(sqlite_url)
    catalog = FileContentStore(settings.content_dir.resolve(), settings).catalog()
    with pytest.raises(NotFound, match="no article with slug 'nope'"):
        issues.create(engine, subject="x", articles=[ArticleRef("nope", True)], catalog=catalog)
    with pytest.raises(NotFound, match="no subscriber list named 'vip'"):
        issues.create(engine, subject="x", articles=[ArticleRef(SEEDS[0], True)], audience=["vip"])
    with pytest.raises(ConfigError, match="subject"):
        issues.create(engine, subject=" ", articles=[ArticleRef(SEEDS[0], True)])
    with pytest.raises(ConfigError, match="slug:teaser"):
        issues.parse_articles("a:half")
    assert issues.list_issues(engine) == []


def test_schedule_reads_naive_times_in_the_given_zone(sqlite_url: str) -> None:
    engine = db.engine(sqlite_url)
    issue_id = new_issue(sqlite_url)
    when = issues.schedule(engine, issue_id, datetime(2026, 12, 1, 8, 0), "Europe/Paris")
    assert when.astimezone(UTC) == datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    issue = issues.get(engine, issue_id)
    assert issue.status == "scheduled"
    assert issue.send_at == datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    assert f"{issue.local_send_at:%H:%M %Z}" == "08:00 CET"
    with pytest.raises(IssueStateError, match="is scheduled: it can be scheduled only when"):
        issues.schedule(engine, issue_id, None)
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Base'"):
        issues.schedule(engine, new_issue(sqlite_url), None, "Mars/Base")


def test_claim_due_starts_only_due_issues(database_url: str) -> None:
    engine = db.engine(database_url)
    due = new_issue(database_url)
    later = new_issue(database_url)
    issues.schedule(engine, due, None)
    issues.schedule(engine, later, db.now() + timedelta(hours=1))
    assert issues.claim_due(engine, SIX_HOURS) == [due]
    assert issues.claim_due(engine, SIX_HOURS) == []  # a repeated tick starts nothing
    assert issues.get(engine, due).status == "sending"
    assert issues.get(engine, later).status == "scheduled"
    assert issues.claim_due(engine, SIX_HOURS, at=db.now() + timedelta(hours=2)) == [later]


def test_two_beats_claiming_at_once_start_an_issue_once(database_url: str) -> None:
    engine = db.engine(database_url)
    ids = [new_issue(database_url) for _ in range(5)]
    for issue_id in ids:
        issues.schedule(engine, issue_id, None)
    results: list[list[int]] = []
    barrier = threading.Barrier(4)

    def beat() -> None:
        barrier.wait()
        results.append(issues.claim_due(engine, SIX_HOURS))

    threads = [threading.Thread(target=beat) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = sorted(i for r in results for i in r)
    assert claimed == sorted(ids)


def test_an_issue_found_too_late_is_held_for_the_editor(database_url: str) -> None:
    engine = db.engine(database_url)
    issue_id = new_issue(database_url)
    issues.schedule(engine, issue_id, db.now() - timedelta(hours=7))
    assert issues.claim_due(engine, SIX_HOURS) == []
    issue = issues.get(engine, issue_id)
    assert issue.status == "paused"
    assert "held: found 7.0 h after its send time" in issue.status_reason
    issues.resume(engine, issue_id)  # the editor says: send it now
    assert issues.get(engine, issue_id).status == "scheduled"
    assert issues.claim_due(engine, SIX_HOURS) == [issue_id]


def test_state_changes_say_what_is_allowed(sqlite_url: str) -> None:
    engine = db.engine(sqlite_url)
    issue_id = new_issue(sqlite_url)
    with pytest.raises(
        IssueStateError, match="is draft: it can be paused only when it is scheduled or sending"
    ):
        issues.pause(engine, issue_id)
    with pytest.raises(IssueStateError, match="resumed only when it is paused"):
        issues.resume(engine, issue_id)
    issues.cancel(engine, issue_id)
    assert issues.get(engine, issue_id).status == "cancelled"
    with pytest.raises(IssueStateError, match="is cancelled"):
        issues.cancel(engine, issue_id)
    with pytest.raises(NotFound, match="no issue 999"):
        issues.pause(engine, 999)


def test_migrations_build_exactly_the_tables(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    assert db.current_revision(database_url) == db.head_revision()
    with db.engine(database_url).connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), db.metadata
        )
    assert diff == []


@pytest.mark.parametrize(
    ("table", "column", "states"),
    [
        ("subscribers", "status", SubscriberStatus),
        ("issues", "status", IssueStatus),
        ("batches", "status", BatchStatus),
        ("deliveries", "status", DeliveryStatus),
        ("users", "role", Role),
        ("import_jobs", "status", ImportStatus),
    ],
)
def test_the_migrated_status_checks_allow_exactly_the_enums(
    database_url: str, table: str, column: str, states: type[StrEnum]
) -> None:
    """The enums are the one definition: the migrated database takes each member and
    refuses anything else, in SQLite and in PostgreSQL."""
    engine = db.engine(database_url)
    name = f"ck_{table}_{column}"
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sql = conn.execute(
                sa.text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}
            ).scalar_one()
            clause = sql[sql.index(f"CONSTRAINT {name} CHECK") :].split(")", 1)[0]
        else:
            clause = conn.execute(
                sa.text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = :n"),
                {"n": name},
            ).scalar_one()
    allowed = set(re.findall(r"'([a-z_]+)'", clause))
    assert allowed == {s.value for s in states}, clause


def test_an_unmigrated_database_says_what_to_run(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with pytest.raises(ConfigError, match="run `letterpress db upgrade`"):
        db.require_current(url)
    db.upgrade(url)
    assert db.require_current(url) is db.engine(url)
    db.downgrade(url, "base")
    with db.engine(url).connect() as conn:
        assert sa.inspect(conn).get_table_names() == ["alembic_version"]
