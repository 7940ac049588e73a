"""webhook failures: refused webhook signatures counted per provider, for the metrics

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import pipeline.store.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_failures",
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("refused", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_at", pipeline.store.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_webhook_failures")),
    )


def downgrade() -> None:
    op.drop_table("webhook_failures")
