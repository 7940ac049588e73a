"""The SQL state: tables, engines and migrations.

SQLite (a file, the embedded default) or PostgreSQL (``DATABASE_URL=postgresql://…``),
through SQLAlchemy Core: the hot paths are bulk statements, and Core keeps them bulk.
The schema changes only through Alembic migrations (``pipeline/store/migrations``), applied
by ``letterpress db upgrade``; a test checks the migrations build exactly these tables.
Two counts are kept by triggers in the database (migration 0005): whether a membership's
subscriber gets issues (``memberships.recipient``), and ``issue_feedback``.

    lists ──< memberships >── subscribers
    issues ──< issue_articles
           ──< snapshots        the email, frozen when the send starts
           ──< batches          subscriber-id ranges, claimed with a lease
           ──< deliveries       one row per recipient: queued, sent, failed, skipped
           ──< issue_feedback   its deliveries' feedback, counted by triggers
           ──< issue_events     what operators should see (errors, pauses)
           ──< issue_links      the links an issue's email contains (click redirects)
           ──< clicks           one row per followed link
    subscribers ──< subscriber_events   sign-ups, confirmations, unsubscribes, bounces
    provider_events             webhook events already applied (a retry changes nothing)
    webhook_failures            webhook requests refused for their signature, per provider
    users ──< console_sessions  who signs in to the editors' console; their sign-ins
          ──< audit_log         what they (or the command line) changed, and when
          ──< import_jobs       CSV files uploaded to the console, and their imports
    replies ──< replies         readers' replies to articles, one level of threads
    reply_bans                  addresses and IP ranges whose replies are refused
    reply_articles              articles whose replies a moderator closed
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.types import TypeDecorator

from pipeline.errors import ConfigError
from pipeline.statuses import (
    BatchStatus,
    DeliveryStatus,
    ImportStatus,
    IssueStatus,
    ReplyNotify,
    ReplyStatus,
    Role,
    SubscriberStatus,
    check,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every database."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: Letterpress stores aware UTC times only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite's rowid alias
MAX_ID = 2**63 - 1  # the largest id either database stores
# Addresses compare byte by byte (code point order) on both databases: SQLite's BINARY,
# PostgreSQL's "C" whatever the database's collation, so a prefix is an index range.
EMAIL = sa.String(320).with_variant(sa.String(320, collation="C"), "postgresql")

# What the provider reported after accepting a message, weakest first: a later, weaker
# report never overwrites a stronger one.
FEEDBACK = ("delivered", "soft_bounce", "unsubscribed", "bounced", "complained")

lists = sa.Table(
    "lists",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", ID, primary_key=True),
    # Byte order on both databases (migration 0007): a prefix is a range of the index.
    sa.Column("email", EMAIL, nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("time_zone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("confirmed_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # When the status last changed: a send skips people who left after it started.
    sa.Column("status_changed_at", UTCDateTime),
    # Paused from the preferences page: on every list, receiving nothing until resumed.
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    # Soft bounces since the last delivery; past ``soft_bounce_limit`` the address bounces.
    sa.Column("soft_bounces", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint(check("status", SubscriberStatus), name="status"),
    sa.Index(None, "status", "confirmed_at"),
    # The console's search (migration 0007): one status, newest first; a signup date.
    sa.Index(None, "status", "id"),
    sa.Index(None, "created_at", "id"),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("list_id", ID, sa.ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
    sa.Column(
        "subscriber_id", ID, sa.ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # True while the subscriber is active and confirmed: kept so by the database's own
    # triggers (migration 0005), so that a list's recipients are counted from an index.
    # Left out of an INSERT (NULL), the trigger works it out; the bulk import gives it.
    sa.Column("recipient", sa.Boolean),
    sa.Index(None, "subscriber_id"),
    sa.Index(None, "list_id", "recipient", "subscriber_id"),
)

issues = sa.Table(
    "issues",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("preheader", sa.String(300), nullable=False, server_default=""),
    sa.Column("intro", sa.Text, nullable=False, server_default=""),
    sa.Column("audience", sa.JSON, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("status_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("send_at", UTCDateTime),
    sa.Column("time_zone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("prepared_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("recipients", sa.Integer, nullable=False, server_default="0"),
    # Running totals kept by the batches, so progress never counts the delivery log.
    sa.Column("sent", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint(check("status", IssueStatus), name="status"),
    sa.Index(None, "status", "send_at"),
)

issue_articles = sa.Table(
    "issue_articles",
    metadata,
    sa.Column("issue_id", ID, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("slug", sa.String(200), nullable=False),
    sa.Column("full", sa.Boolean, nullable=False),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("issue_id", ID, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("variant", sa.String(40), primary_key=True),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("preheader", sa.String(300), nullable=False),
    sa.Column("html", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("campaign", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("issue_id", ID, sa.ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("first_id", sa.BigInteger, nullable=False),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("retry", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_token", sa.String(40)),
    sa.Column("lease_until", UTCDateTime),
    # Who holds the lease (or last held it): the worker's name and process id.
    sa.Column("lease_holder", sa.String(200)),
    sa.Column("lease_pid", sa.Integer),
    sa.Column("idempotency_key", sa.String(80)),
    sa.Column("provider_id", sa.String(200)),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("enqueued_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("issue_id", "seq"),
    sa.Index(None, "issue_id", "status"),
    sa.Index(None, "status", "lease_until"),
    sa.CheckConstraint(check("status", BatchStatus), name="status"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("issue_id", ID, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("subscriber_id", sa.BigInteger, primary_key=True),
    sa.Column("batch_id", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("provider_id", sa.String(200)),
    sa.Column("reason", sa.Text),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The provider's later word on the message (webhooks): delivered, bounced, ...
    sa.Column("feedback", sa.String(20)),
    sa.Column("feedback_at", UTCDateTime),
    sa.Index(None, "batch_id"),
    # With the feedback, an issue's report counts its deliveries from the index alone.
    sa.Index(None, "issue_id", "status", "feedback"),
    # One subscriber's deliveries: their history, export and erasure (migration 0007).
    sa.Index(None, "subscriber_id"),
    sa.CheckConstraint(check("status", DeliveryStatus), name="status"),
)

# How many of an issue's sent deliveries the provider reported as each kind of feedback:
# kept by the database's triggers on deliveries (migration 0005), so the report reads a
# few rows. Deliveries with no feedback yet are the issue's ``sent`` less these.
issue_feedback = sa.Table(
    "issue_feedback",
    metadata,
    sa.Column("issue_id", ID, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("n", sa.Integer, nullable=False, server_default="0"),
)

issue_events = sa.Table(
    "issue_events",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("issue_id", ID, sa.ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("level", sa.String(10), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index(None, "issue_id", "at"),
)

issue_links = sa.Table(
    "issue_links",
    metadata,
    sa.Column("issue_id", ID, sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    # The article the link leads to, when it leads to one: its clicks rank hot articles.
    sa.Column("slug", sa.String(200)),
)

clicks = sa.Table(
    "clicks",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("issue_id", ID, sa.ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
    sa.Column("subscriber_id", sa.BigInteger, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    # False for what is not a person's engagement: a link scanner, a click seconds after
    # delivery. Those are kept (they did happen) but rank nothing.
    sa.Column("engaged", sa.Boolean, nullable=False),
    # Covering: an issue's report counts its clicks, people and engaged ones per link
    # from the index alone.
    sa.Index(None, "issue_id", "position", "subscriber_id", "engaged"),
    sa.Index(None, "subscriber_id"),
)

subscriber_events = sa.Table(
    "subscriber_events",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("subscriber_id", sa.BigInteger, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index(None, "subscriber_id", "at"),
)

provider_events = sa.Table(
    "provider_events",
    metadata,
    sa.Column("provider", sa.String(20), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(30), nullable=False),
    sa.Column("subscriber_id", sa.BigInteger),
    sa.Column("issue_id", sa.BigInteger),
    sa.Index(None, "at"),
    sa.Index(None, "subscriber_id"),  # one subscriber's reports (migration 0007)
)

# Signature nonces seen (Mailgun's token): a replayed request is refused.
webhook_nonces = sa.Table(
    "webhook_nonces",
    metadata,
    sa.Column("provider", sa.String(20), primary_key=True),
    sa.Column("nonce", sa.String(200), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index(None, "at"),
)

# Webhook requests refused for their signature or credentials, counted per provider for
# ``letterpress metrics``: one row per provider however many are refused, so a flood of
# forged requests costs no storage.
webhook_failures = sa.Table(
    "webhook_failures",
    metadata,
    sa.Column("provider", sa.String(20), primary_key=True),
    sa.Column("refused", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_at", UTCDateTime, nullable=False),
)

# -- the editors' console: people, their sign-ins, what they did (pipeline/people) ------

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),  # argon2id, PHC string
    sa.Column("totp_secret", sa.String(64)),  # base32; set once a code proved it works
    sa.Column("totp_last_step", sa.BigInteger),  # the last code's time step: none twice
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("disabled_at", UTCDateTime),  # kept, not deleted: the audit log names them
    sa.CheckConstraint(check("role", Role), name="role"),
)

# Only the SHA-256 of a session token is stored: a copy of the table signs nobody in.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("seen_at", UTCDateTime, nullable=False),  # idle expiry counts from here
    sa.Column("expires_at", UTCDateTime, nullable=False),  # absolute expiry
    sa.Index(None, "user_id"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    # Who did it; NULL for the command line (and for a user since deleted).
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="SET NULL")),
    sa.Column("action", sa.String(60), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index(None, "at"),
)

# A CSV file uploaded to the console, kept under ``data_dir/imports/`` as ``<id>.csv``
# (its bad rows beside it, ``<id>.problems.csv``): the task is given the id alone.
import_jobs = sa.Table(
    "import_jobs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="SET NULL")),
    sa.Column("file_name", sa.String(255), nullable=False),  # as uploaded, for people
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("list_name", sa.String(100)),  # everyone imported also goes on this list
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("rows_total", sa.BigInteger, nullable=False),  # lines after the header
    sa.Column("rows_done", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("new", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("unchanged", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("kept", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("problems", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("summary", sa.Text, nullable=False, server_default=""),
    sa.Column("error", sa.Text, nullable=False, server_default=""),
    sa.Column("stop_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("heartbeat_at", UTCDateTime),  # a running import that stops beating died
    sa.Column("finished_at", UTCDateTime),
    sa.CheckConstraint(check("status", ImportStatus), name="status"),
    sa.Index(None, "created_at"),
)

replies = sa.Table(
    "replies",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("article_slug", sa.String(120), nullable=False),
    # The reply at the top of its thread (threads are one level deep), and the reply it
    # answers (whose author may be told of it): both NULL for a reply to the article.
    sa.Column("parent_id", ID, sa.ForeignKey("replies.id", ondelete="SET NULL")),
    sa.Column("answers_id", ID, sa.ForeignKey("replies.id", ondelete="SET NULL")),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("email", EMAIL, nullable=False),  # never shown to the public
    sa.Column("website", sa.String(300), nullable=False, server_default=""),
    sa.Column("body", sa.Text, nullable=False),  # plain text as the reader wrote it
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("notify", sa.String(20), nullable=False, server_default=ReplyNotify.OFF.value),
    # A keyed hash of the poster's IP range (a ban can name it; the address is not kept).
    sa.Column("range_hash", sa.String(64), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("decided_at", UTCDateTime),  # approved, rejected or marked spam
    sa.Column("decided_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("in_digest", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.CheckConstraint(check("status", ReplyStatus), name="status"),
    sa.CheckConstraint(check("notify", ReplyNotify), name="notify"),
    sa.Index(None, "article_slug", "status", "id"),
    sa.Index(None, "status", "created_at"),
    sa.Index(None, "email"),
)

reply_bans = sa.Table(
    "reply_bans",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("kind", sa.String(10), nullable=False),  # address | range
    sa.Column("value", sa.String(320), nullable=False),  # the address, or the range's hash
    sa.Column("label", sa.String(200), nullable=False),  # what the console shows
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.CheckConstraint("kind IN ('address', 'range')", name="kind"),
    sa.UniqueConstraint("kind", "value"),
)

reply_articles = sa.Table(
    "reply_articles",
    metadata,
    sa.Column("slug", sa.String(120), primary_key=True),
    sa.Column("closed", sa.Boolean, nullable=False),
    sa.Column("changed_at", UTCDateTime, nullable=False),
    sa.Column("changed_by", sa.String(200), nullable=False, server_default=""),
)


def insert(conn: sa.Connection, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
    """An INSERT that can say ``ON CONFLICT …``, in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignore(conn: sa.Connection, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
    """``INSERT … ON CONFLICT DO NOTHING``: a row already there stays as it is."""
    return insert(conn, table).on_conflict_do_nothing()


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3; everything else as given."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@cache
def engine(url: str) -> Engine:
    """One engine (and connection pool) per database URL and process."""
    url = normalise_url(url)
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(
            f"DATABASE_URL {url!r} is not a database URL: use sqlite:///path.db or"
            " postgresql://user@host/dbname"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        created = sa.create_engine(url, connect_args={"timeout": 60})
        sa.event.listen(created, "connect", _sqlite_pragmas)
        sa.event.listen(created, "begin", _sqlite_begin)
        return created
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(
            f"DATABASE_URL: {parsed.get_backend_name()} is not supported; use SQLite or PostgreSQL"
        )
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, open transactions, so BEGIN IMMEDIATE below holds.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _sqlite_begin(connection: sa.Connection) -> None:
    # Take the write lock at the start: two writers never deadlock upgrading read locks.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def is_sqlite(eng: Engine) -> bool:
    return eng.dialect.name == "sqlite"


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (``letterpress db upgrade``)."""
    from alembic import command

    command.upgrade(_alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(_alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def require_current(url: str) -> Engine:
    """The engine, once the database is known to be migrated; else a clear error."""
    eng = engine(url)
    try:
        current = current_revision(url)
    except sa.exc.OperationalError as exc:
        raise ConfigError(f"cannot open the database {_safe(url)}: {exc.orig}") from None
    if current != head_revision():
        raise ConfigError(
            f"the database {_safe(url)} is at migration {current or 'none'}, not"
            f" {head_revision()}: run `letterpress db upgrade`"
        )
    return eng


def _safe(url: str) -> str:
    return sa.make_url(normalise_url(url)).render_as_string(hide_password=True)
