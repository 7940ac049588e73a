"""lease holder: which worker process holds (or last held) a batch's lease

A batch's ``lease_token`` is random: it proves a worker's claim but tells an operator
nothing. ``lease_holder`` is the worker's name as Celery gives it (``celery@host``) and
``lease_pid`` its process id, written when the lease is taken and kept after it ends,
so a batch whose worker died says who that was.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 17:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild): batches has no triggers, but nothing is lost.
    op.add_column("batches", sa.Column("lease_holder", sa.String(200), nullable=True))
    op.add_column("batches", sa.Column("lease_pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("lease_pid")
        batch_op.drop_column("lease_holder")
