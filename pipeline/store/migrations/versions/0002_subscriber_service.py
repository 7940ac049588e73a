"""subscriber service: clicks, links, events, preferences

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 01:22:21.012189
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import pipeline.store.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "provider_events",
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("at", pipeline.store.db.UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("subscriber_id", sa.BigInteger(), nullable=True),
        sa.Column("issue_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("provider", "event_id", name=op.f("pk_provider_events")),
    )
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_provider_events_at"), ["at"], unique=False)

    op.create_table(
        "subscriber_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("subscriber_id", sa.BigInteger(), nullable=False),
        sa.Column("at", pipeline.store.db.UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriber_events")),
    )
    with op.batch_alter_table("subscriber_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_subscriber_events_subscriber_id_at"),
            ["subscriber_id", "at"],
            unique=False,
        )

    op.create_table(
        "webhook_nonces",
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("nonce", sa.String(length=200), nullable=False),
        sa.Column("at", pipeline.store.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "nonce", name=op.f("pk_webhook_nonces")),
    )
    with op.batch_alter_table("webhook_nonces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_nonces_at"), ["at"], unique=False)

    op.create_table(
        "clicks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("issue_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("subscriber_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("at", pipeline.store.db.UTCDateTime(), nullable=False),
        sa.Column("engaged", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"], ["issues.id"], name=op.f("fk_clicks_issue_id_issues"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clicks")),
    )
    with op.batch_alter_table("clicks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_clicks_issue_id_position"), ["issue_id", "position"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_clicks_subscriber_id"), ["subscriber_id"], unique=False
        )

    op.create_table(
        "issue_links",
        sa.Column("issue_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("slug", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["issues.id"],
            name=op.f("fk_issue_links_issue_id_issues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("issue_id", "position", name=op.f("pk_issue_links")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feedback", sa.String(length=20), nullable=True))
        batch_op.add_column(
            sa.Column("feedback_at", pipeline.store.db.UTCDateTime(), nullable=True)
        )

    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("soft_bounces", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:

    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("soft_bounces")
        batch_op.drop_column("paused")

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("feedback_at")
        batch_op.drop_column("feedback")

    op.drop_table("issue_links")
    with op.batch_alter_table("clicks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clicks_subscriber_id"))
        batch_op.drop_index(batch_op.f("ix_clicks_issue_id_position"))

    op.drop_table("clicks")
    with op.batch_alter_table("webhook_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_nonces_at"))

    op.drop_table("webhook_nonces")
    with op.batch_alter_table("subscriber_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriber_events_subscriber_id_at"))

    op.drop_table("subscriber_events")
    with op.batch_alter_table("provider_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_provider_events_at"))

    op.drop_table("provider_events")
