"""reader replies: replies to articles, bans, and articles whose replies are closed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 11:40:29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import pipeline.store.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replies",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("article_slug", sa.String(length=120), nullable=False),
        sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "answers_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "email",
            sa.String(length=320).with_variant(sa.String(length=320, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("website", sa.String(length=300), server_default="", nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("notify", sa.String(length=20), server_default="off", nullable=False),
        sa.Column("range_hash", sa.String(length=64), server_default="", nullable=False),
        sa.Column("created_at", pipeline.store.db.UTCDateTime(), nullable=False),
        sa.Column("decided_at", pipeline.store.db.UTCDateTime(), nullable=True),
        sa.Column("decided_by", sa.String(length=200), server_default="", nullable=False),
        sa.Column("in_digest", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.CheckConstraint(
            "notify IN ('off', 'unconfirmed', 'on')", name=op.f("ck_replies_notify")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'spam')", name=op.f("ck_replies_status")
        ),
        sa.ForeignKeyConstraint(
            ["answers_id"],
            ["replies.id"],
            name=op.f("fk_replies_answers_id_replies"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["replies.id"],
            name=op.f("fk_replies_parent_id_replies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replies")),
    )
    with op.batch_alter_table("replies", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_replies_article_slug_status_id"),
            ["article_slug", "status", "id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_replies_email"), ["email"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_replies_status_created_at"), ["status", "created_at"], unique=False
        )

    op.create_table(
        "reply_articles",
        sa.Column("slug", sa.String(length=120), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("changed_at", pipeline.store.db.UTCDateTime(), nullable=False),
        sa.Column("changed_by", sa.String(length=200), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("slug", name=op.f("pk_reply_articles")),
    )
    op.create_table(
        "reply_bans",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("value", sa.String(length=320), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("created_at", pipeline.store.db.UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=200), server_default="", nullable=False),
        sa.CheckConstraint("kind IN ('address', 'range')", name=op.f("ck_reply_bans_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reply_bans")),
        sa.UniqueConstraint("kind", "value", name=op.f("uq_reply_bans_kind_value")),
    )


def downgrade() -> None:
    op.drop_table("reply_bans")
    op.drop_table("reply_articles")
    with op.batch_alter_table("replies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_replies_status_created_at"))
        batch_op.drop_index(batch_op.f("ix_replies_email"))
        batch_op.drop_index(batch_op.f("ix_replies_article_slug_status_id"))

    op.drop_table("replies")
