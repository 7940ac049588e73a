"""CSV export (``export_csv``): subscribers written as a file that imports back.

Columns ``email,name,status,time_zone,lists,created_at,confirmed_at`` then one column
per attribute name (sorted), found in a first pass over the selected subscribers. Times
are ISO 8601 in UTC. One column per attribute keeps the file easy to edit in a
spreadsheet; since attributes are text and empty means absent, it loses nothing:
importing an export (``pipeline.audience.imports``) into an empty database gives the
same subscribers, statuses, lists, attributes and times.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import sqlalchemy as sa

from pipeline.audience.bulk import Record, any_of, slices
from pipeline.audience.csvfile import safe_cell
from pipeline.audience.lists import LIST_SEPARATOR, find_list
from pipeline.audience.subscribers import FIELDS, selected
from pipeline.store import db
from pipeline.store.db import lists, memberships, subscribers

EXPORT_COLUMNS = FIELDS
EXPORT_PAGE = 5000  # subscribers read at a time


def export_csv(
    engine: sa.Engine, out: TextIO, *, list_name: str | None = None, status: str | None = None
) -> int:
    """Write the subscribers (all, or one list's, or one status's) as CSV, in id order.

    Returns how many were written. Memory stays flat: rows are streamed, a page at a
    time with the memberships of that page.
    """
    with engine.connect() as conn:
        on = None if list_name is None else find_list(conn, list_name)
        keys = _attribute_keys(conn, on, status)
        names = dict(conn.execute(sa.select(lists.c.id, lists.c.name)).all())
    writer = csv.writer(out)
    writer.writerow([*EXPORT_COLUMNS, *[safe_cell(key) for key in keys]])
    written = 0
    pages = _pages(engine, selected(sa.select(subscribers), on, status))
    for page, member in pages:
        for row in page:
            attributes = row.attributes
            writer.writerow(
                [
                    safe_cell(row.email),
                    safe_cell(row.name),
                    row.status,
                    row.time_zone,
                    LIST_SEPARATOR.join(sorted(names[lid] for lid in member.get(row.id, ()))),
                    row.created_at.isoformat(),
                    "" if row.confirmed_at is None else row.confirmed_at.isoformat(),
                    *[_cell(attributes.get(key)) for key in keys],
                ]
            )
        written += len(page)
    return written


def _cell(value: Any) -> str:
    return "" if value is None else safe_cell(str(value))


def _pages(
    engine: sa.Engine, query: sa.Select[Any]
) -> Iterator[tuple[Sequence[Record], dict[int, list[int]]]]:
    """Pages of rows in id order, each with its memberships (subscriber id -> list ids).

    PostgreSQL: one read-only snapshot read through a server-side cursor. SQLite: short
    transactions, one per page, continuing after the last id (every SQLite transaction
    here takes the write lock, and an export must not hold it for minutes).
    """
    query = query.order_by(subscribers.c.id)
    if not db.is_sqlite(engine):
        with engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            result = conn.execute(query.execution_options(yield_per=EXPORT_PAGE))
            for page in result.partitions():
                yield page, _memberships_of(conn, page)
        return
    last = 0
    while True:
        with engine.begin() as conn:
            page = conn.execute(query.where(subscribers.c.id > last).limit(EXPORT_PAGE)).all()
            member = _memberships_of(conn, page)
        if not page:
            return
        yield page, member
        last = page[-1].id


def _memberships_of(conn: sa.Connection, page: Sequence[Record]) -> dict[int, list[int]]:
    """subscriber id -> list ids, for the subscribers of one page."""
    query = sa.select(memberships.c.subscriber_id, memberships.c.list_id).where(
        any_of(memberships.c.subscriber_id, "ids", conn.dialect)
    )
    member: dict[int, list[int]] = {}
    for part in slices([row.id for row in page]):
        for subscriber_id, list_id in conn.execute(query, {"ids": part}):
            member.setdefault(subscriber_id, []).append(list_id)
    return member


def _attribute_keys(conn: sa.Connection, list_id: int | None, status: str | None) -> list[str]:
    """Every attribute name among the selected subscribers, sorted."""
    if conn.dialect.name == "postgresql":
        key = sa.func.json_object_keys(subscribers.c.attributes).label("key")
        query = sa.select(key).select_from(subscribers)
    else:
        each = sa.func.json_each(subscribers.c.attributes).table_valued("key")
        query = sa.select(each.c.key).select_from(subscribers).join(each, sa.true())
    inner = selected(query, list_id, status).subquery()
    keys = conn.execute(sa.select(inner.c.key).distinct()).scalars().all()
    return sorted(keys)
