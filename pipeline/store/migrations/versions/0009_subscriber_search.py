"""subscriber search: the console's look-ups of a million subscribers from indexes

- ``subscribers.email`` compares byte by byte on PostgreSQL too (``COLLATE "C"``, as
  SQLite's ``BINARY`` always does), so an address prefix is a range of its unique index
  and a page of addresses is read in that index's order, whatever the database's own
  collation (``en_US.UTF-8`` would order ``ann-b`` between ``annb`` and ``annc``, and a
  prefix would not be a range).
- ``ix_subscribers_status_id``: a page of one status, newest first, from the index.
- ``ix_subscribers_created_at_id``: a page of those who signed up in a date range,
  newest signup first, from the index.
- ``ix_deliveries_subscriber_id`` and ``ix_provider_events_subscriber_id``: one
  subscriber's deliveries and provider reports (their page's history, their data export,
  their erasure) without reading every delivery of every issue.

The indexes are added, never by rebuilding a table: the triggers of migration 0005 on
subscribers and deliveries stay.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 17:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_subscribers_status_id", "subscribers", ["status", "id"]),
    ("ix_subscribers_created_at_id", "subscribers", ["created_at", "id"]),
    ("ix_deliveries_subscriber_id", "deliveries", ["subscriber_id"]),
    ("ix_provider_events_subscriber_id", "provider_events", ["subscriber_id"]),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE subscribers ALTER COLUMN email TYPE VARCHAR(320) COLLATE "C"')
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE subscribers ALTER COLUMN email TYPE VARCHAR(320) COLLATE "default"')
