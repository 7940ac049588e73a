"""console indexes: an issue's report counts its deliveries' feedback from an index

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 13:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deliveries_issue_id_status_feedback"),
            ["issue_id", "status", "feedback"],
            unique=False,
        )
        batch_op.drop_index(batch_op.f("ix_deliveries_issue_id_status"))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_deliveries_issue_id_status"), ["issue_id", "status"], unique=False
        )
        batch_op.drop_index(batch_op.f("ix_deliveries_issue_id_status_feedback"))
