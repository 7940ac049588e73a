"""console counts: who gets issues, and each issue's feedback, kept by the database

Two figures the console shows would otherwise count a million rows per page:

- ``memberships.recipient`` is true while the subscriber is active and confirmed, so a
  list's recipients are counted from one index
  (``ix_memberships_list_id_recipient_subscriber_id``) instead of by looking up each
  member; ``ix_subscribers_status_confirmed_at`` does the same for an issue to everyone.
- ``issue_feedback`` holds, per issue and kind, how many of its sent deliveries the
  provider reported as delivered, bounced and so on.
- Clicks are indexed on (issue, position, subscriber, engaged), so a report counts them
  per link from the index alone.

Triggers in the database keep the two figures true, whatever writes the rows (the product, an
import, SQL by hand). They fire only on the rows that matter: a subscriber whose
active-and-confirmed state changes, a new membership, a sent delivery whose feedback
changes. A new membership's ``recipient`` is left out (NULL) for the trigger to work
out; the bulk import gives it in the same statement, from the same definition, so a
million memberships cost no trigger calls.

SQLite drops a table's triggers when a later migration rebuilds the table
(``batch_alter_table``): such a migration must create them again (``create_triggers``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 14:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Who gets issues, and which deliveries count in the feedback: one definition each.
GETS = "({row}.status = 'active' AND {row}.confirmed_at IS NOT NULL)"
HEARD = "({row}.status = 'sent' AND {row}.feedback IS NOT NULL)"

# Whether subscriber ``id`` gets issues, as a value (SQLite: 0 or 1).
RECIPIENT_SQLITE = (
    "coalesce((SELECT " + GETS.format(row="s") + " FROM subscribers AS s WHERE s.id = {id}), 0)"
)

SQLITE = [
    f"""
    CREATE TRIGGER memberships_recipient_on_insert AFTER INSERT ON memberships
    WHEN NEW.recipient IS NULL
    BEGIN
        UPDATE memberships SET recipient = {RECIPIENT_SQLITE.format(id="NEW.subscriber_id")}
        WHERE list_id = NEW.list_id AND subscriber_id = NEW.subscriber_id;
    END
    """,
    f"""
    CREATE TRIGGER subscribers_recipient_on_update AFTER UPDATE OF status, confirmed_at
    ON subscribers
    WHEN {GETS.format(row="OLD")} IS NOT {GETS.format(row="NEW")}
    BEGIN
        UPDATE memberships SET recipient = {GETS.format(row="NEW")}
        WHERE subscriber_id = NEW.id;
    END
    """,
    f"""
    CREATE TRIGGER deliveries_feedback_on_insert AFTER INSERT ON deliveries
    WHEN {HEARD.format(row="NEW")}
    BEGIN
        INSERT INTO issue_feedback (issue_id, kind, n) VALUES (NEW.issue_id, NEW.feedback, 1)
        ON CONFLICT (issue_id, kind) DO UPDATE SET n = n + 1;
    END
    """,
    f"""
    CREATE TRIGGER deliveries_feedback_on_update AFTER UPDATE OF status, feedback
    ON deliveries
    WHEN {HEARD.format(row="OLD")} OR {HEARD.format(row="NEW")}
    BEGIN
        UPDATE issue_feedback SET n = n - 1
        WHERE {HEARD.format(row="OLD")} AND issue_id = OLD.issue_id AND kind = OLD.feedback;
        INSERT INTO issue_feedback (issue_id, kind, n)
        SELECT NEW.issue_id, NEW.feedback, 1 WHERE {HEARD.format(row="NEW")}
        ON CONFLICT (issue_id, kind) DO UPDATE SET n = n + 1;
    END
    """,
    f"""
    CREATE TRIGGER deliveries_feedback_on_delete AFTER DELETE ON deliveries
    WHEN {HEARD.format(row="OLD")}
    BEGIN
        UPDATE issue_feedback SET n = n - 1
        WHERE issue_id = OLD.issue_id AND kind = OLD.feedback;
    END
    """,
]

# The changes to add to ``issue_feedback`` (rows of issue_id, feedback, d), summed per
# count; only for issues that still exist (an issue's deletion removes its counts too).
_ADD = """
            INSERT INTO issue_feedback (issue_id, kind, n)
            SELECT c.issue_id, c.feedback, sum(c.d) FROM ({rows}) AS c
            JOIN issues AS i ON i.id = c.issue_id
            GROUP BY c.issue_id, c.feedback HAVING sum(c.d) <> 0
            ON CONFLICT (issue_id, kind) DO UPDATE SET n = issue_feedback.n + EXCLUDED.n;"""
_ADDED = f"SELECT issue_id, feedback, 1 AS d FROM added WHERE {HEARD.format(row='added')}"
_REMOVED = f"SELECT issue_id, feedback, -1 FROM removed WHERE {HEARD.format(row='removed')}"
_TAKE = f"""
            UPDATE issue_feedback AS f SET n = f.n - c.d
            FROM (SELECT issue_id, feedback, count(*) AS d FROM removed
                  WHERE {HEARD.format(row="removed")} GROUP BY issue_id, feedback) AS c
            WHERE f.issue_id = c.issue_id AND f.kind = c.feedback;"""

POSTGRESQL = [
    f"""
    CREATE FUNCTION letterpress_membership_recipient() RETURNS trigger AS $$
    BEGIN
        NEW.recipient := coalesce((
            SELECT {GETS.format(row="s")} FROM subscribers AS s WHERE s.id = NEW.subscriber_id
        ), false);
        RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    """
    CREATE TRIGGER memberships_recipient_on_insert BEFORE INSERT ON memberships
    FOR EACH ROW WHEN (NEW.recipient IS NULL)
    EXECUTE FUNCTION letterpress_membership_recipient()
    """,
    f"""
    CREATE FUNCTION letterpress_subscriber_recipient() RETURNS trigger AS $$
    BEGIN
        UPDATE memberships SET recipient = {GETS.format(row="NEW")}
        WHERE subscriber_id = NEW.id;
        RETURN NULL;
    END
    $$ LANGUAGE plpgsql
    """,
    f"""
    CREATE TRIGGER subscribers_recipient_on_update AFTER UPDATE OF status, confirmed_at
    ON subscribers FOR EACH ROW
    WHEN ({GETS.format(row="OLD")} IS DISTINCT FROM {GETS.format(row="NEW")})
    EXECUTE FUNCTION letterpress_subscriber_recipient()
    """,
    # Deliveries: once per statement, over the rows it changed (transition tables), so a
    # statement that changes many deliveries of one issue (a provider's batch of events)
    # updates each count once. Per row, PostgreSQL would write one issue's count again
    # for every row, each a new version of it to step over.
    *(
        f"""
        CREATE FUNCTION letterpress_deliveries_feedback_{op}() RETURNS trigger AS $$
        BEGIN
            {body}
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql
        """
        for op, body in (
            ("insert", _ADD.format(rows=_ADDED)),
            ("update", _ADD.format(rows=f"{_ADDED} UNION ALL {_REMOVED}")),
            ("delete", _TAKE),
        )
    ),
    """
    CREATE TRIGGER deliveries_feedback_on_insert AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION letterpress_deliveries_feedback_insert()
    """,
    """
    CREATE TRIGGER deliveries_feedback_on_update AFTER UPDATE ON deliveries
    REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION letterpress_deliveries_feedback_update()
    """,
    """
    CREATE TRIGGER deliveries_feedback_on_delete AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION letterpress_deliveries_feedback_delete()
    """,
]

TRIGGERS = {
    "memberships": ["memberships_recipient_on_insert"],
    "subscribers": ["subscribers_recipient_on_update"],
    "deliveries": [
        "deliveries_feedback_on_insert",
        "deliveries_feedback_on_update",
        "deliveries_feedback_on_delete",
    ],
}
FUNCTIONS = [
    "letterpress_membership_recipient",
    "letterpress_subscriber_recipient",
    "letterpress_deliveries_feedback_insert",
    "letterpress_deliveries_feedback_update",
    "letterpress_deliveries_feedback_delete",
]


def create_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for statement in SQLITE if dialect == "sqlite" else POSTGRESQL:
        op.execute(statement)


def drop_triggers() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, names in TRIGGERS.items():
        for name in names:
            op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgresql else ""))
    if postgresql:
        for function in FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")


def upgrade() -> None:
    op.create_table(
        "issue_feedback",
        sa.Column("issue_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("n", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["issues.id"],
            name=op.f("fk_issue_feedback_issue_id_issues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("issue_id", "kind", name=op.f("pk_issue_feedback")),
    )
    op.execute(
        "INSERT INTO issue_feedback (issue_id, kind, n) SELECT issue_id, feedback, count(*)"
        " FROM deliveries WHERE status = 'sent' AND feedback IS NOT NULL"
        " GROUP BY issue_id, feedback"
    )
    op.add_column(
        "memberships",
        sa.Column("recipient", sa.Boolean(), nullable=True),
    )
    op.execute(
        "UPDATE memberships SET recipient = EXISTS (SELECT 1 FROM subscribers AS s"
        f" WHERE s.id = memberships.subscriber_id AND {GETS.format(row='s')})"
    )
    op.create_index(
        op.f("ix_memberships_list_id_recipient_subscriber_id"),
        "memberships",
        ["list_id", "recipient", "subscriber_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_subscribers_status_confirmed_at"),
        "subscribers",
        ["status", "confirmed_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_clicks_issue_id_position_subscriber_id_engaged"),
        "clicks",
        ["issue_id", "position", "subscriber_id", "engaged"],
        unique=False,
    )
    op.drop_index(op.f("ix_clicks_issue_id_position"), table_name="clicks")
    create_triggers()


def downgrade() -> None:
    drop_triggers()
    op.create_index(
        op.f("ix_clicks_issue_id_position"), "clicks", ["issue_id", "position"], unique=False
    )
    op.drop_index(op.f("ix_clicks_issue_id_position_subscriber_id_engaged"), table_name="clicks")
    op.drop_index(op.f("ix_subscribers_status_confirmed_at"), table_name="subscribers")
    op.drop_index(op.f("ix_memberships_list_id_recipient_subscriber_id"), table_name="memberships")
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_column("recipient")
    op.drop_table("issue_feedback")
