"""the operator role: a console user who runs the sending and looks after subscribers

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 17:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BEFORE = "role IN ('owner', 'editor', 'author', 'viewer')"
AFTER = "role IN ('owner', 'editor', 'author', 'viewer', 'operator')"


def _roles(check: str) -> None:
    # The constraint's name is the full one (the metadata's naming convention made it).
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_users_role"), type_="check")
        batch_op.create_check_constraint(op.f("ck_users_role"), check)


def upgrade() -> None:
    _roles(AFTER)


def downgrade() -> None:
    op.execute("UPDATE users SET role = 'viewer' WHERE role = 'operator'")
    _roles(BEFORE)
