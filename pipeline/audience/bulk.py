"""The bulk statements of a CSV import: a few statements per batch of rows, never one
per row, for each database. SQLite gets the driver's executemany; PostgreSQL gets COPY
into temporary tables, then INSERT … SELECT and UPDATE … FROM.

Rows arrive as tuples already converted for the driver (``to_db``), in the order of
``NEW_COLUMNS`` (a new subscriber) or ``UPDATE_COLUMNS`` (an update).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.store import db
from pipeline.store.db import memberships, subscribers

Record: TypeAlias = sa.Row[*tuple[Any, ...]]


def to_db(column: sa.Column[Any], dialect: sa.Dialect) -> Callable[[Any], Any]:
    """The column type's own conversion of a Python value to the driver's value."""
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor or (lambda value: value)


def any_of(column: sa.Column[Any], name: str, dialect: sa.Dialect) -> sa.ColumnElement[bool]:
    """``column`` is one of the list passed as parameter ``name``: one parameter, an array
    on PostgreSQL and a JSON array on SQLite, however long the list."""
    if dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))
    values = sa.func.json_each(sa.bindparam(name, type_=sa.JSON())).table_valued("value")
    return column.in_(sa.select(values.c.value))


LOOKUP_SLICE = 1000


def slices(values: list[Any]) -> Iterator[list[Any]]:
    """Lookups of at most LOOKUP_SLICE values: PostgreSQL's planner keeps those on the
    index, where 25,000 at once get a scan of the whole table."""
    for start in range(0, len(values), LOOKUP_SLICE):
        yield values[start : start + LOOKUP_SLICE]


_EXISTING = (
    subscribers.c.id,
    subscribers.c.email,
    subscribers.c.name,
    subscribers.c.status,
    subscribers.c.time_zone,
    # As stored, unparsed: usually the same text as the file's row gives (see imports._merged).
    sa.cast(subscribers.c.attributes, sa.Text).label("attributes"),
    subscribers.c.confirmed_at.is_not(None).label("confirmed"),
)
# Values of a new subscriber, in this order, already converted for the driver.
NEW_COLUMNS = (
    "email",
    "name",
    "status",
    "time_zone",
    "attributes",
    "created_at",
    "confirmed_at",
    "updated_at",
)
# Values of an update: id, name, time zone, attributes, status, confirmed at (None: keep).
UPDATE_COLUMNS = ("id", "name", "time_zone", "attributes", "status", "confirmed_at")


class Bulk:
    """The bulk statements of an import, for one database: a few statements per chunk,
    never one per row. Rows arrive as tuples already converted for the driver."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.dialect = dialect
        self.time = to_db(subscribers.c.created_at, dialect)
        self.select_existing = sa.select(*_EXISTING).where(
            any_of(subscribers.c.email, "emails", dialect)
        )
        self.select_memberships = sa.select(
            memberships.c.subscriber_id, memberships.c.list_id
        ).where(any_of(memberships.c.subscriber_id, "ids", dialect))

    def existing(self, conn: sa.Connection, emails: list[str]) -> dict[str, Record]:
        found: dict[str, Record] = {}
        for part in slices(emails):
            for record in conn.execute(self.select_existing, {"emails": part}).all():
                found[record.email] = record
        return found

    def memberships(self, conn: sa.Connection, ids: list[int]) -> set[tuple[int, int]]:
        found: set[tuple[int, int]] = set()
        for part in slices(ids):
            found.update(conn.execute(self.select_memberships, {"ids": part}).all())
        return found

    def start(self, conn: sa.Connection) -> None:
        """Called once before the first batch, outside any transaction."""

    def end(self, conn: sa.Connection) -> None:
        """Called once after the last batch (or an error), outside any transaction."""

    # Whether ``insert`` tells the subscribers it added from those already there, so that
    # a batch expected to be mostly new can be inserted before any lookup.
    insert_first = False
    # Whether rows are written by COPY, which takes JSON as its text.
    copies = False

    def insert(self, conn: sa.Connection, values: list[tuple[Any, ...]]) -> dict[str, int]:
        """Insert new subscribers (ON CONFLICT DO NOTHING); the ids of those inserted."""
        raise NotImplementedError

    def add_memberships(
        self, conn: sa.Connection, rows: list[tuple[int, int, bool]], now: datetime
    ) -> None:
        """Insert (subscriber id, list id, recipient) memberships, ignoring those that
        exist. ``recipient`` is what the database's trigger would work out from the
        subscriber (migration 0005: active and confirmed): given here, no trigger runs."""
        raise NotImplementedError

    def update(self, conn: sa.Connection, values: list[tuple[Any, ...]], now: datetime) -> None:
        """Update subscribers from ``UPDATE_COLUMNS`` tuples, ``updated_at`` = now."""
        raise NotImplementedError

    def grew(self, conn: sa.Connection, inserted: int) -> None:
        """Called after each committed batch with the number of subscribers it added."""


def _compiled(statement: sa.Insert | sa.Update, dialect: sa.Dialect, order: Sequence[str]) -> str:
    """SQL text for the driver's executemany, with positional parameters in ``order``."""
    compiled = statement.compile(dialect=dialect)
    if list(compiled.positiontup or ()) != list(order):
        raise AssertionError(f"parameters in unexpected order: {compiled.positiontup}")
    return str(compiled)


class SqliteBulk(Bulk):
    """SQLite: the driver's executemany, a prepared statement stepped in C.

    Each chunk runs under SQLite's write lock (BEGIN IMMEDIATE), so nothing else can
    insert between the statements of a chunk: new subscribers get their ids from the
    largest id there (as SQLite itself would give them), and the count of rows inserted
    tells whether every address was new, without looking any up.
    """

    # The import connection's page cache, in KiB, instead of SQLite's 2 MB: the email
    # index of a million subscribers is scattered over far more pages than that, and each
    # miss is a read from the operating system.
    CACHE_KIB = 65_536

    def __init__(self, dialect: sa.Dialect) -> None:
        super().__init__(dialect)
        self.insert_sql = _compiled(
            sqlite.insert(subscribers)
            .values({name: sa.bindparam(name) for name in ("id", *NEW_COLUMNS)})
            .on_conflict_do_nothing(index_elements=["email"]),
            dialect,
            ("id", *NEW_COLUMNS),
        )
        self.membership_sql = _compiled(
            sqlite.insert(memberships)
            .values(
                {
                    name: sa.bindparam(name)
                    for name in ("list_id", "subscriber_id", "created_at", "recipient")
                }
            )
            .on_conflict_do_nothing(),
            dialect,
            ("list_id", "subscriber_id", "created_at", "recipient"),
        )
        self._cache_was: int | None = None
        self.update_sql = _compiled(
            subscribers.update()
            .where(subscribers.c.id == sa.bindparam("b_id"))
            .values(
                name=sa.bindparam("b_name"),
                time_zone=sa.bindparam("b_time_zone"),
                attributes=sa.bindparam("b_attributes"),
                status=sa.bindparam("b_status"),
                confirmed_at=sa.func.coalesce(
                    sa.bindparam("b_confirmed_at"), subscribers.c.confirmed_at
                ),
                updated_at=sa.bindparam("b_updated_at"),
            ),
            dialect,
            (
                "b_name",
                "b_status",
                "b_time_zone",
                "b_attributes",
                "b_confirmed_at",
                "b_updated_at",
                "b_id",
            ),
        )

    insert_first = True  # the count of rows inserted says whether all were new

    def start(self, conn: sa.Connection) -> None:
        driver: Any = conn.connection.dbapi_connection
        self._cache_was = driver.execute("PRAGMA cache_size").fetchone()[0]
        driver.execute(f"PRAGMA cache_size = -{self.CACHE_KIB}")

    def end(self, conn: sa.Connection) -> None:
        if self._cache_was is not None:  # the pooled connection goes back as it came
            driver: Any = conn.connection.dbapi_connection
            driver.execute(f"PRAGMA cache_size = {self._cache_was}")

    def insert(self, conn: sa.Connection, values: list[tuple[Any, ...]]) -> dict[str, int]:
        last = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM subscribers").scalar_one()
        rows = [(last + n, *row) for n, row in enumerate(values, 1)]
        if conn.exec_driver_sql(self.insert_sql, rows).rowcount == len(rows):
            return {row[1]: row[0] for row in rows}
        # Some were there already (ON CONFLICT DO NOTHING): those inserted have the ids.
        inserted = sa.select(subscribers.c.email, subscribers.c.id).where(subscribers.c.id > last)
        return dict(conn.execute(inserted).all())

    def add_memberships(
        self, conn: sa.Connection, rows: list[tuple[int, int, bool]], now: datetime
    ) -> None:
        at = self.time(now)
        conn.exec_driver_sql(self.membership_sql, [(lid, s, at, r) for s, lid, r in rows])

    def update(self, conn: sa.Connection, values: list[tuple[Any, ...]], now: datetime) -> None:
        at = self.time(now)
        rows = [
            (name, status, zone, attributes, confirmed, at, subscriber_id)
            for subscriber_id, name, zone, attributes, status, confirmed in values
        ]
        conn.exec_driver_sql(self.update_sql, rows)


# Temporary tables that PostgreSQL imports COPY into, emptied at each commit.
_TEMPORARY = sa.MetaData()


def _temporary(name: str, *columns: sa.Column[Any]) -> sa.Table:
    return sa.Table(
        name, _TEMPORARY, *columns, prefixes=["TEMPORARY"], postgresql_on_commit="DELETE ROWS"
    )


_new_rows = _temporary(
    "letterpress_import_new",
    sa.Column("seq", sa.Integer),
    *(sa.Column(name, subscribers.c[name].type.copy()) for name in NEW_COLUMNS),
)
_new_memberships = _temporary(
    "letterpress_import_memberships",
    sa.Column("subscriber_id", sa.BigInteger),
    sa.Column("list_id", sa.BigInteger),
    sa.Column("recipient", sa.Boolean),
)
_updates = _temporary(
    "letterpress_import_updates",
    sa.Column("id", sa.BigInteger),
    *(sa.Column(name, subscribers.c[name].type.copy()) for name in UPDATE_COLUMNS[1:]),
)


class PostgresBulk(Bulk):
    """PostgreSQL: COPY (psycopg 3) into a temporary table, then one INSERT … SELECT or
    UPDATE … FROM per chunk. Only addresses found missing are inserted, so the id
    sequence is not spent on existing subscribers (except when a concurrent signup
    adds the same address in between, which ON CONFLICT DO NOTHING absorbs)."""

    def __init__(self, dialect: sa.Dialect) -> None:
        super().__init__(dialect)
        self.insert_new = (
            postgresql.insert(subscribers)
            .from_select(
                list(NEW_COLUMNS),
                sa.select(*(_new_rows.c[name] for name in NEW_COLUMNS)).order_by(_new_rows.c.seq),
            )
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(subscribers.c.email, subscribers.c.id)
        )
        new = _new_memberships.c
        self.insert_memberships = (
            postgresql.insert(memberships)
            .from_select(
                ["subscriber_id", "list_id", "created_at", "recipient"],
                sa.select(
                    new.subscriber_id,
                    new.list_id,
                    sa.bindparam("now", type_=db.UTCDateTime()),
                    new.recipient,
                ),
            )
            .on_conflict_do_nothing()
        )
        self.update_from = (
            subscribers.update()
            .where(subscribers.c.id == _updates.c.id)
            .values(
                name=_updates.c.name,
                time_zone=_updates.c.time_zone,
                attributes=_updates.c.attributes,
                status=_updates.c.status,
                confirmed_at=sa.func.coalesce(_updates.c.confirmed_at, subscribers.c.confirmed_at),
                updated_at=sa.bindparam("now", type_=db.UTCDateTime()),
            )
        )

    insert_first = True  # RETURNING names exactly the rows inserted
    copies = True
    inserted = 0  # subscribers added by this import
    analyzed_at = 0  # ... when the tables were last analyzed

    def start(self, conn: sa.Connection) -> None:
        """Create the temporary tables for this connection's session."""
        with conn.begin():
            _TEMPORARY.create_all(conn, checkfirst=True)

    def grew(self, conn: sa.Connection, inserted: int) -> None:
        """ANALYZE after the first batch, then each time the import has doubled what it
        added. Autovacuum lags behind a bulk load, and psycopg's prepared statements
        keep the plan made while the table was small (a scan of the whole table)
        until new statistics invalidate it."""
        self.inserted += inserted
        if inserted and self.inserted >= 2 * self.analyzed_at:
            with conn.begin():
                conn.execute(sa.text("ANALYZE subscribers, memberships"))
            self.analyzed_at = self.inserted

    @staticmethod
    def _copy(conn: sa.Connection, table: sa.Table, rows: Iterable[Sequence[Any]]) -> None:
        driver: Any = conn.connection.dbapi_connection
        columns = ", ".join(column.name for column in table.columns)
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def insert(self, conn: sa.Connection, values: list[tuple[Any, ...]]) -> dict[str, int]:
        self._copy(conn, _new_rows, ((seq, *row) for seq, row in enumerate(values)))
        return dict(conn.execute(self.insert_new).all())

    def add_memberships(
        self, conn: sa.Connection, rows: list[tuple[int, int, bool]], now: datetime
    ) -> None:
        driver: Any = conn.connection.dbapi_connection
        copy_sql = f"COPY {_new_memberships.name} (subscriber_id, list_id, recipient) FROM STDIN"
        with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
            # integers and booleans: nothing to escape
            copy.write("".join(f"{s}\t{lid}\t{'t' if r else 'f'}\n" for s, lid, r in rows))
        conn.execute(self.insert_memberships, {"now": now})

    def update(self, conn: sa.Connection, values: list[tuple[Any, ...]], now: datetime) -> None:
        self._copy(conn, _updates, values)
        conn.execute(self.update_from, {"now": now})
