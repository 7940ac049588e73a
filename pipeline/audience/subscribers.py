"""Subscribers: who they are, which lists they are on, and bulk CSV import and export.

Statuses::

    pending ──confirm──> active ──> unsubscribed | bounced | complained   (sticky)

An unsubscribed, bounced or complained subscriber is never re-activated or put back on a
list by ``add`` or ``import_csv``; only an explicit ``set_status`` changes them.

Addresses are validated with email-validator (no DNS) and stored normalised and
lower-cased, so the same person is always the same row (``subscribers.email`` is unique).

Attributes are text: a mapping of names to non-empty strings. An empty value means "no
value", so an attribute never holds ``""``.

CSV import (``import_csv``)
    A header row with an ``email`` column is required; ``name``, ``time_zone`` (or
    ``timezone``), ``lists`` (names separated by ``;``), ``status``, ``created_at`` and
    ``confirmed_at`` are optional (names are matched case-insensitively), and every other
    column is an attribute. People in a file consented elsewhere: they are ``active``
    and confirmed now, unless the file says otherwise (an export does). An empty cell
    never erases what is known about an existing subscriber, and lists are only ever
    added. A file's ``unsubscribed``/``bounced``/``complained`` is honoured; its
    ``pending`` never demotes an active subscriber. Bad rows become ``Problem``s with
    their line in the file and never stop the other rows; re-importing a file changes
    nothing. A file that is not UTF-8 is refused before anything is imported.

    The file is streamed: rows are validated ``CHUNK_ROWS`` at a time and written
    ``WRITE_ROWS`` at a time, each batch one transaction of a few bulk statements, so
    memory stays flat (plus about 4 bytes per subscriber id, to recognise an address met
    earlier in the same file). Validating addresses is the costliest step, so files
    over ``PARALLEL_BYTES`` are validated by worker processes (spawned: a script that
    imports a large file must guard its entry point with ``if __name__ ==
    "__main__"``) while this process writes. SQLite gets the driver's executemany;
    PostgreSQL gets COPY into temporary tables, then INSERT … SELECT and UPDATE … FROM.

CSV export (``export_csv``)
    Columns ``email,name,status,time_zone,lists,created_at,confirmed_at`` then one
    column per attribute name (sorted), found in a first pass over the selected
    subscribers. Times are ISO 8601 in UTC. One column per attribute keeps the file
    easy to edit in a spreadsheet; since attributes are text and empty means absent, it
    loses nothing: importing an export into an empty database gives the same
    subscribers, statuses, lists, attributes and times.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import multiprocessing
import os
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TextIO, TypeAlias
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.errors import LetterpressError, NotFound, Problem
from pipeline.store import db
from pipeline.store.db import lists, memberships, subscribers

log = logging.getLogger(__name__)

Record: TypeAlias = sa.Row[*tuple[Any, ...]]

STATUSES = db.SUBSCRIBER_STATUSES
STICKY = frozenset({"unsubscribed", "bounced", "complained"})
CHUNK_ROWS = 5000  # rows validated at a time (by a worker process, for large files)
WRITE_ROWS = 25_000  # rows written per transaction: fewer, larger commits write far less
PARALLEL_BYTES = 4_000_000  # larger files are validated by worker processes
LIST_SEPARATOR = ";"
EXPORT_COLUMNS = ("email", "name", "status", "time_zone", "lists", "created_at", "confirmed_at")
_COLUMN_ALIASES = {"timezone": "time_zone"}
_RESERVED = frozenset({*EXPORT_COLUMNS, *_COLUMN_ALIASES})
_NAME_MAX = subscribers.c.name.type.length  # type: ignore[attr-defined]
_LIST_NAME_MAX = lists.c.name.type.length  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    status: str
    time_zone: str
    attributes: dict[str, str]
    lists: tuple[str, ...]
    created_at: datetime
    confirmed_at: datetime | None
    updated_at: datetime


@dataclass
class ImportReport:
    """What an import did: every data row is new, updated, unchanged, kept or bad."""

    path: str
    rows: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    kept: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.new:,} new", f"{self.updated:,} updated", f"{self.unchanged:,} unchanged"]
        parts += [f"{self.kept[s]:,} kept {s}" for s in sorted(STICKY) if self.kept[s]]
        bad = len(self.problems)
        return (
            f"imported {_plural(self.rows, 'row')}: {', '.join(parts)}; {_plural(bad, 'bad row')}"
        )


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


# Validation


def normalise_email(raw: str) -> str:
    """The address as stored: validated (syntax only, no DNS), normalised, lower-cased."""
    text = raw.strip()
    if not text:
        raise ValueError("the email address is empty")
    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{text!r} is not a valid email address: {exc}") from None
    return valid.normalized.lower()


_ZONES: dict[str, bool] = {}


def check_time_zone(name: str) -> str:
    """``name`` if it is an IANA time zone (``Europe/Paris``), else a ValueError."""
    known = _ZONES.get(name)
    if known is None:
        try:
            ZoneInfo(name)
            known = True
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            known = False
        if len(_ZONES) < 10_000:
            _ZONES[name] = known
    if not known:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris")
    return name


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    return status


def check_list_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ValueError("a list name is empty")
    if LIST_SEPARATOR in name:
        raise ValueError(f"list name {name!r} contains {LIST_SEPARATOR!r}")
    if len(name) > _LIST_NAME_MAX:
        raise ValueError(f"list name {name[:20]!r}… is longer than {_LIST_NAME_MAX} characters")
    return name


def _check_name(name: str) -> str:
    name = name.strip()
    if len(name) > _NAME_MAX:
        raise ValueError(f"the name is longer than {_NAME_MAX} characters")
    return name


def _check_attributes(attributes: Mapping[str, str] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in (attributes or {}).items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError("attribute names must be non-empty text")
        if key.strip().lower() in _RESERVED:
            raise ValueError(f"{key!r} is a subscriber field, not an attribute")
        if not isinstance(value, str):
            raise ValueError(f"attribute {key!r} must be text, not {type(value).__name__}")
        if value:
            result[key.strip()] = value
    return result


def _parse_time(text: str) -> datetime:
    """ISO 8601; a time without an offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time (2024-05-01T09:30:00+00:00)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Single subscribers (the signup service, webhooks, editors)


def ensure_list(conn: sa.Connection, name: str) -> int:
    """The id of the list called ``name``, created if needed (inside ``conn``'s transaction)."""
    name = check_list_name(name)
    conn.execute(
        db.insert(conn, lists).on_conflict_do_nothing(index_elements=["name"]),
        {"name": name, "created_at": db.now()},
    )
    return int(conn.execute(sa.select(lists.c.id).where(lists.c.name == name)).scalar_one())


def _list_id(conn: sa.Connection, name: str) -> int:
    found = conn.execute(sa.select(lists.c.id).where(lists.c.name == name)).scalar()
    if found is None:
        names = conn.execute(sa.select(lists.c.name).order_by(lists.c.name)).scalars().all()
        raise NotFound(f"no list named {name!r} (lists: {', '.join(names) or 'none'})")
    return int(found)


def add(
    engine: sa.Engine,
    email: str,
    *,
    name: str = "",
    lists: Iterable[str] = (),
    status: str = "pending",
    time_zone: str = "UTC",
    attributes: Mapping[str, str] | None = None,
) -> int:
    """The subscriber's id, adding them if new (idempotent on the address).

    An existing subscriber keeps their name, status and attributes and is only added to
    ``lists``, unless they unsubscribed, bounced or complained.
    """
    address = normalise_email(email)
    values = {
        "email": address,
        "name": _check_name(name),
        "status": check_status(status),
        "time_zone": check_time_zone(time_zone),
        "attributes": _check_attributes(attributes),
    }
    names = [check_list_name(n) for n in lists]
    now = db.now()
    with engine.begin() as conn:
        inserted = conn.execute(
            db.insert(conn, subscribers)
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(subscribers.c.id),
            {
                **values,
                "created_at": now,
                "updated_at": now,
                "confirmed_at": now if status == "active" else None,
            },
        ).scalar()
        if inserted is not None:
            subscriber_id, current = int(inserted), status
        else:
            row = conn.execute(
                sa.select(subscribers.c.id, subscribers.c.status).where(
                    subscribers.c.email == address
                )
            ).one()
            subscriber_id, current = int(row.id), row.status
        if names and current not in STICKY:
            added = conn.execute(
                db.insert(conn, memberships)
                .on_conflict_do_nothing()
                .returning(memberships.c.list_id),
                [
                    {
                        "list_id": ensure_list(conn, n),
                        "subscriber_id": subscriber_id,
                        "created_at": now,
                    }
                    for n in names
                ],
            ).all()
            if added and inserted is None:
                conn.execute(
                    subscribers.update()
                    .where(subscribers.c.id == subscriber_id)
                    .values(updated_at=now)
                )
    return subscriber_id


def confirm(engine: sa.Engine, subscriber_id: int) -> bool:
    """Pending becomes active (double opt-in). False if they were not pending."""
    now = db.now()
    with engine.begin() as conn:
        changed = conn.execute(
            subscribers.update()
            .where(subscribers.c.id == subscriber_id, subscribers.c.status == "pending")
            .values(status="active", confirmed_at=now, updated_at=now)
        ).rowcount
        if not changed:
            _require(conn, subscriber_id)
    return bool(changed)


def set_status(engine: sa.Engine, subscriber_id: int, status: str, reason: str = "") -> None:
    """Any status, explicitly (an unsubscribe link, a bounce or complaint webhook).

    ``reason`` is logged: the schema has no column for it yet.
    """
    check_status(status)
    now = db.now()
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status == "active":
        values["confirmed_at"] = sa.func.coalesce(subscribers.c.confirmed_at, now)
    with engine.begin() as conn:
        changed = conn.execute(
            subscribers.update().where(subscribers.c.id == subscriber_id).values(**values)
        ).rowcount
        if not changed:
            _require(conn, subscriber_id)
    log.info("subscriber %s is now %s%s", subscriber_id, status, f": {reason}" if reason else "")


def _require(conn: sa.Connection, subscriber_id: int) -> None:
    if conn.execute(sa.select(subscribers.c.id).where(subscribers.c.id == subscriber_id)).first():
        return
    raise NotFound(f"no subscriber with id {subscriber_id}")


def get(engine: sa.Engine, id_or_email: int | str) -> Subscriber | None:
    """One subscriber by id or by address (any spelling that normalises to it)."""
    if isinstance(id_or_email, int):
        where = subscribers.c.id == id_or_email
    else:
        where = subscribers.c.email == normalise_email(id_or_email)
    with engine.connect() as conn:
        row = conn.execute(sa.select(subscribers).where(where)).first()
        if row is None:
            return None
        names = conn.execute(
            sa.select(lists.c.name)
            .join(memberships, memberships.c.list_id == lists.c.id)
            .where(memberships.c.subscriber_id == row.id)
            .order_by(lists.c.name)
        ).scalars()
        return Subscriber(
            id=row.id,
            email=row.email,
            name=row.name,
            status=row.status,
            time_zone=row.time_zone,
            attributes=dict(row.attributes),
            lists=tuple(names),
            created_at=row.created_at,
            confirmed_at=row.confirmed_at,
            updated_at=row.updated_at,
        )


def _filtered(query: sa.Select[Any], list_id: int | None, status: str | None) -> sa.Select[Any]:
    if list_id is not None:
        query = query.where(
            sa.exists().where(
                memberships.c.subscriber_id == subscribers.c.id, memberships.c.list_id == list_id
            )
        )
    if status is not None:
        query = query.where(subscribers.c.status == check_status(status))
    return query


def count(engine: sa.Engine, list_name: str | None = None, status: str | None = None) -> int:
    """How many subscribers, optionally on one list and/or with one status."""
    with engine.connect() as conn:
        list_id = None if list_name is None else _list_id(conn, list_name)
        query = _filtered(sa.select(sa.func.count()).select_from(subscribers), list_id, status)
        return int(conn.execute(query).scalar_one())


# CSV import


def _require_utf8(path: Path) -> None:
    """Refuse a file that is not UTF-8 before importing anything, naming the first bad line."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LetterpressError(
                    f"{path}:{number}: not UTF-8 (byte 0x{line[exc.start]:02x} at column"
                    f" {exc.start + 1}): save the file as UTF-8 (CSV UTF-8) and import it again;"
                    " nothing was imported"
                ) from None


@dataclass(frozen=True)
class _Columns:
    """Where each known field is in a file's rows; the rest are attributes."""

    width: int
    email: int
    name: int | None
    time_zone: int | None
    lists: int | None
    status: int | None
    created_at: int | None
    confirmed_at: int | None
    attributes: tuple[tuple[int, str], ...]

    @classmethod
    def from_header(cls, where: str, header: Sequence[str]) -> _Columns:
        known: dict[str, int] = {}
        attributes: list[tuple[int, str]] = []
        seen: set[str] = set()
        for index, raw in enumerate(header):
            title = _unsafe_cell(raw).strip()
            if not title:
                raise LetterpressError(
                    f"{where}: column {index + 1} of the header has no name: name it or delete it"
                )
            key = _COLUMN_ALIASES.get(title.lower(), title.lower())
            if key in _RESERVED:
                if key in known:
                    raise LetterpressError(f"{where}: the header has two {key} columns")
                known[key] = index
            else:
                if title in seen:
                    raise LetterpressError(f"{where}: the header has two {title!r} columns")
                seen.add(title)
                attributes.append((index, title))
        if "email" not in known:
            found = ", ".join(h.strip() for h in header)
            raise LetterpressError(
                f"{where}: the header row has no email column (found: {found}); the first row"
                " must name the columns, one of them email"
            )
        return cls(
            width=len(header),
            email=known["email"],
            name=known.get("name"),
            time_zone=known.get("time_zone"),
            lists=known.get("lists"),
            status=known.get("status"),
            created_at=known.get("created_at"),
            confirmed_at=known.get("confirmed_at"),
            attributes=tuple(attributes),
        )


class _Row(NamedTuple):
    line: int
    email: str
    name: str
    time_zone: str
    lists: tuple[str, ...]
    attributes: dict[str, str]
    status: str
    created_at: datetime | None
    confirmed_at: datetime | None


def _parse(columns: _Columns, fields: list[str], line: int) -> _Row:
    """One data row, validated; a ValueError says what is wrong with it."""
    if len(fields) != columns.width:
        raise ValueError(
            f"{len(fields)} fields where the header has {columns.width}"
            " (a missing or extra comma, or an unquoted comma in a value?)"
        )
    if any(f.startswith("'") for f in fields):
        fields = [_unsafe_cell(f) for f in fields]
    email = normalise_email(fields[columns.email])
    name = "" if columns.name is None else _check_name(fields[columns.name])
    time_zone = ""
    if columns.time_zone is not None and (tz := fields[columns.time_zone].strip()):
        time_zone = check_time_zone(tz)
    names: tuple[str, ...] = ()
    if columns.lists is not None and (cell := fields[columns.lists].strip()):
        names = tuple(check_list_name(n) for n in cell.split(LIST_SEPARATOR) if n.strip())
    status = ""
    if columns.status is not None and (text := fields[columns.status].strip()):
        status = check_status(text.lower())
    created_at = confirmed_at = None
    if columns.created_at is not None and (text := fields[columns.created_at].strip()):
        created_at = _parse_time(text)
    if columns.confirmed_at is not None and (text := fields[columns.confirmed_at].strip()):
        confirmed_at = _parse_time(text)
    attributes = {key: value for index, key in columns.attributes if (value := fields[index])}
    return _Row(line, email, name, time_zone, names, attributes, status, created_at, confirmed_at)


# A record is (first line, fields), or (first line, what is wrong) when it is not CSV.
_Record = tuple[int, list[str] | str]
_Parsed = tuple[list[_Row], list[tuple[int, str]]]


def _parse_chunk(columns: _Columns, records: list[_Record]) -> _Parsed:
    """Validate a chunk of records: good rows, and (line, message) for the bad ones.

    Run in worker processes for large files: address validation is the costliest step
    of an import, and this way it overlaps the database writes.
    """
    rows: list[_Row] = []
    bad: list[tuple[int, str]] = []
    for line, fields in records:
        if isinstance(fields, str):
            bad.append((line, fields))
            continue
        try:
            rows.append(_parse(columns, fields, line))
        except ValueError as exc:
            bad.append((line, str(exc)))
    return rows, bad


def _records(reader: Any) -> Iterator[_Record]:
    """Each non-empty record of a csv.reader with the line it starts on (or what is wrong
    with it: a syntax error, or a NUL character, which PostgreSQL cannot store)."""
    last = 0  # the line the previous record ended on
    while True:
        try:
            for fields in reader:
                text = "".join(fields)
                if "\x00" in text:
                    yield last + 1, "contains a NUL character: is this really a CSV text file?"
                elif text.strip():
                    yield last + 1, fields
                last = reader.line_num
            return
        except csv.Error as exc:
            yield last + 1, f"not valid CSV: {exc}"
            last = reader.line_num


def _parsed_chunks(
    columns: _Columns, records: Iterator[_Record], processes: int
) -> Iterator[tuple[_Parsed, int]]:
    """Parsed chunks in file order, each with its number of records.

    With ``processes``, chunks are parsed by that many worker processes, at most a few
    chunks ahead of the caller, so memory stays flat.
    """
    chunks = iter(lambda: list(itertools.islice(records, CHUNK_ROWS)), [])
    if processes <= 0:
        for chunk in chunks:
            yield _parse_chunk(columns, chunk), len(chunk)
        return
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    try:
        ahead: deque[tuple[Future[_Parsed], int]] = deque()
        for chunk in chunks:
            ahead.append((pool.submit(_parse_chunk, columns, chunk), len(chunk)))
            if len(ahead) > processes + 1:
                future, size = ahead.popleft()
                yield future.result(), size
        while ahead:
            future, size = ahead.popleft()
            yield future.result(), size
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _FirstLines:
    """The file line where each subscriber id was first met in this import, so that an
    address coming back in a later chunk is recognised.

    About 4 bytes per subscriber id, in pages of 4,096 ids allocated when first used,
    instead of a dictionary entry (~100 bytes) per row of the file.
    """

    _BITS = 12

    def __init__(self) -> None:
        self._pages: dict[int, array[int]] = {}

    def get(self, subscriber_id: int) -> int:
        page = self._pages.get(subscriber_id >> self._BITS)
        return 0 if page is None else page[subscriber_id & ((1 << self._BITS) - 1)]

    def set(self, subscriber_id: int, line: int) -> None:
        page = self._pages.get(subscriber_id >> self._BITS)
        if page is None:
            page = self._pages[subscriber_id >> self._BITS] = array("I", bytes(4 << self._BITS))
        page[subscriber_id & ((1 << self._BITS) - 1)] = line


def _to_db(column: sa.Column[Any], dialect: sa.Dialect) -> Callable[[Any], Any]:
    """The column type's own conversion of a Python value to the driver's value."""
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor or (lambda value: value)


def _any_of(column: sa.Column[Any], name: str, dialect: sa.Dialect) -> sa.ColumnElement[bool]:
    """``column`` is one of the list passed as parameter ``name``: one parameter, an array
    on PostgreSQL and a JSON array on SQLite, however long the list."""
    if dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))
    values = sa.func.json_each(sa.bindparam(name, type_=sa.JSON())).table_valued("value")
    return column.in_(sa.select(values.c.value))


LOOKUP_SLICE = 1000


def _slices(values: list[Any]) -> Iterator[list[Any]]:
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
    # As stored, unparsed: usually the same text as the file's row gives (see _merged).
    sa.cast(subscribers.c.attributes, sa.Text).label("attributes"),
)
# Values of a new subscriber, in this order, already converted for the driver.
_NEW_COLUMNS = (
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
_UPDATE_COLUMNS = ("id", "name", "time_zone", "attributes", "status", "confirmed_at")


class _Bulk:
    """The bulk statements of an import, for one database: a few statements per chunk,
    never one per row. Rows arrive as tuples already converted for the driver."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.dialect = dialect
        self.time = _to_db(subscribers.c.created_at, dialect)
        self.select_existing = sa.select(*_EXISTING).where(
            _any_of(subscribers.c.email, "emails", dialect)
        )
        self.select_memberships = sa.select(
            memberships.c.subscriber_id, memberships.c.list_id
        ).where(_any_of(memberships.c.subscriber_id, "ids", dialect))

    def existing(self, conn: sa.Connection, emails: list[str]) -> dict[str, Record]:
        found: dict[str, Record] = {}
        for part in _slices(emails):
            for record in conn.execute(self.select_existing, {"emails": part}).all():
                found[record.email] = record
        return found

    def memberships(self, conn: sa.Connection, ids: list[int]) -> set[tuple[int, int]]:
        found: set[tuple[int, int]] = set()
        for part in _slices(ids):
            found.update(conn.execute(self.select_memberships, {"ids": part}).all())
        return found

    # Whether ``insert`` tells the subscribers it added from those already there, so that
    # a batch expected to be mostly new can be inserted before any lookup.
    insert_first = False

    def insert(self, conn: sa.Connection, values: list[tuple[Any, ...]]) -> dict[str, int]:
        """Insert new subscribers (ON CONFLICT DO NOTHING); the ids of those inserted."""
        raise NotImplementedError

    def add_memberships(
        self, conn: sa.Connection, pairs: list[tuple[int, int]], now: datetime
    ) -> None:
        """Insert (subscriber id, list id) memberships, ignoring those that exist."""
        raise NotImplementedError

    def update(self, conn: sa.Connection, values: list[tuple[Any, ...]], now: datetime) -> None:
        """Update subscribers from ``_UPDATE_COLUMNS`` tuples, ``updated_at`` = now."""
        raise NotImplementedError

    def grew(self, conn: sa.Connection, inserted: int) -> None:
        """Called after each committed batch with the number of subscribers it added."""


def _compiled(statement: sa.Insert | sa.Update, dialect: sa.Dialect, order: Sequence[str]) -> str:
    """SQL text for the driver's executemany, with positional parameters in ``order``."""
    compiled = statement.compile(dialect=dialect)
    if list(compiled.positiontup or ()) != list(order):
        raise AssertionError(f"parameters in unexpected order: {compiled.positiontup}")
    return str(compiled)


class _SqliteBulk(_Bulk):
    """SQLite: the driver's executemany, a prepared statement stepped in C.

    Each chunk runs under SQLite's write lock (BEGIN IMMEDIATE), so nothing can insert
    an address between the lookup of existing ones and the insert.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        super().__init__(dialect)
        self.select_ids = sa.select(subscribers.c.email, subscribers.c.id).where(
            _any_of(subscribers.c.email, "emails", dialect)
        )
        self.insert_sql = _compiled(
            sqlite.insert(subscribers)
            .values({name: sa.bindparam(name) for name in _NEW_COLUMNS})
            .on_conflict_do_nothing(index_elements=["email"]),
            dialect,
            _NEW_COLUMNS,
        )
        self.membership_sql = _compiled(
            sqlite.insert(memberships)
            .values(
                list_id=sa.bindparam("list_id"),
                subscriber_id=sa.bindparam("subscriber_id"),
                created_at=sa.bindparam("created_at"),
            )
            .on_conflict_do_nothing(),
            dialect,
            ("list_id", "subscriber_id", "created_at"),
        )
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

    def insert(self, conn: sa.Connection, values: list[tuple[Any, ...]]) -> dict[str, int]:
        conn.exec_driver_sql(self.insert_sql, values)
        emails = [v[0] for v in values]
        found: dict[str, int] = {}
        for part in _slices(emails):
            found.update(conn.execute(self.select_ids, {"emails": part}).all())
        return found

    def add_memberships(
        self, conn: sa.Connection, pairs: list[tuple[int, int]], now: datetime
    ) -> None:
        at = self.time(now)
        conn.exec_driver_sql(self.membership_sql, [(lid, s, at) for s, lid in pairs])

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
    *(sa.Column(name, subscribers.c[name].type.copy()) for name in _NEW_COLUMNS),
)
_new_memberships = _temporary(
    "letterpress_import_memberships",
    sa.Column("subscriber_id", sa.BigInteger),
    sa.Column("list_id", sa.BigInteger),
)
_updates = _temporary(
    "letterpress_import_updates",
    sa.Column("id", sa.BigInteger),
    *(sa.Column(name, subscribers.c[name].type.copy()) for name in _UPDATE_COLUMNS[1:]),
)


class _PostgresBulk(_Bulk):
    """PostgreSQL: COPY (psycopg 3) into a temporary table, then one INSERT … SELECT or
    UPDATE … FROM per chunk. Only addresses found missing are inserted, so the id
    sequence is not spent on existing subscribers (except when a concurrent signup
    adds the same address in between, which ON CONFLICT DO NOTHING absorbs)."""

    def __init__(self, dialect: sa.Dialect) -> None:
        super().__init__(dialect)
        self.insert_new = (
            postgresql.insert(subscribers)
            .from_select(
                list(_NEW_COLUMNS),
                sa.select(*(_new_rows.c[name] for name in _NEW_COLUMNS)).order_by(_new_rows.c.seq),
            )
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(subscribers.c.email, subscribers.c.id)
        )
        self.insert_memberships = (
            postgresql.insert(memberships)
            .from_select(
                ["subscriber_id", "list_id", "created_at"],
                sa.select(
                    _new_memberships.c.subscriber_id,
                    _new_memberships.c.list_id,
                    sa.bindparam("now", type_=db.UTCDateTime()),
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
    inserted = 0  # subscribers added by this import
    analyzed_at = 0  # ... when the tables were last analyzed

    @staticmethod
    def prepare(conn: sa.Connection) -> None:
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
        self, conn: sa.Connection, pairs: list[tuple[int, int]], now: datetime
    ) -> None:
        driver: Any = conn.connection.dbapi_connection
        copy_sql = f"COPY {_new_memberships.name} (subscriber_id, list_id) FROM STDIN"
        with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
            copy.write("".join(f"{s}\t{lid}\n" for s, lid in pairs))  # integers: no escaping
        conn.execute(self.insert_memberships, {"now": now})

    def update(self, conn: sa.Connection, values: list[tuple[Any, ...]], now: datetime) -> None:
        self._copy(conn, _updates, values)
        conn.execute(self.update_from, {"now": now})


class _Importer:
    """Writes validated rows on one connection, a transaction per chunk."""

    def __init__(self, conn: sa.Connection, report: ImportReport, list_name: str | None) -> None:
        self.report = report
        self.list_ids: dict[str, int] = {}
        self.extra_list = None if list_name is None else check_list_name(list_name)
        self.first_lines = _FirstLines()
        self.new_share: float | None = None  # of the last batch written
        dialect = conn.dialect
        self.time = _to_db(subscribers.c.created_at, dialect)
        self._json = _to_db(subscribers.c.attributes, dialect)
        self._json_cache: dict[tuple[tuple[str, str], ...], tuple[Any, str]] = {}
        self.bulk: _Bulk
        if dialect.name == "postgresql":
            _PostgresBulk.prepare(conn)
            self.bulk = _PostgresBulk(dialect)
        else:
            self.bulk = _SqliteBulk(dialect)

    def write(self, conn: sa.Connection, rows: list[_Row]) -> None:
        if not rows:
            return
        now = db.now()
        with conn.begin():
            at = self.time(now)
            if self.bulk.insert_first and self.mostly_new(conn):
                ids = self.bulk.insert(conn, [self._values(r, at) for r in rows])
                existing = self.bulk.existing(conn, [r.email for r in rows if r.email not in ids])
            else:
                existing = self.bulk.existing(conn, [r.email for r in rows])
                fresh = [r for r in rows if r.email not in existing]
                ids = self.bulk.insert(conn, [self._values(r, at) for r in fresh]) if fresh else {}
                raced = [r.email for r in fresh if r.email not in ids]
                if raced:  # added by someone else since the lookup above
                    existing.update(self.bulk.existing(conn, raced))
            wanted: list[tuple[int, int]] = []  # (subscriber id, list id) to have
            known: list[tuple[Record, _Row]] = []
            for row in rows:
                if row.email in ids:
                    subscriber_id = ids[row.email]
                    self.first_lines.set(subscriber_id, row.line)
                    wanted += [(subscriber_id, list_id) for list_id in self._lists(conn, row)]
                    continue
                record = existing[row.email]
                if first := self.first_lines.get(record.id):
                    message = f"{row.email} is repeated: it is already on line {first}"
                    self.report.problems.append(Problem(self.report.path, row.line, message))
                    continue
                self.first_lines.set(record.id, row.line)
                if record.status in STICKY:
                    self.report.kept[record.status] += 1
                    continue
                known.append((record, row))
                wanted += [(record.id, list_id) for list_id in self._lists(conn, row)]
            gained = self._add_memberships(conn, wanted, set(ids.values()), now)
            updates = []
            for record, row in known:
                text = self.json(row.attributes)[1]
                change = _merged(record, row, text, now, force=record.id in gained)
                if change is not None:
                    subscriber_id, name, time_zone, attributes, status, confirmed_at = change
                    confirmed = None if confirmed_at is None else self.time(confirmed_at)
                    stored = self.json(attributes)[0]
                    updates.append((subscriber_id, name, time_zone, stored, status, confirmed))
            if updates:
                self.bulk.update(conn, updates, now)
        self.report.new += len(ids)
        self.report.updated += len(updates)
        self.report.unchanged += len(known) - len(updates)
        self.bulk.grew(conn, len(ids))
        self.new_share = len(ids) / len(rows)

    def mostly_new(self, conn: sa.Connection) -> bool:
        """Whether the next batch is expected to be mostly new subscribers: the last one
        was, or (for the first) there are no subscribers yet. Such a batch is inserted
        first and only the addresses that were already there are looked up."""
        if self.new_share is None:
            any_row = sa.select(sa.exists().select_from(subscribers))
            self.new_share = 0.0 if conn.execute(any_row).scalar() else 1.0
        return self.new_share > 0.5

    def json(self, attributes: dict[str, str]) -> tuple[Any, str]:
        """The attributes converted for the driver, and as JSON text; the few
        combinations that most files repeat (plan, source, country…) are converted once."""
        key = tuple(attributes.items())
        value = self._json_cache.get(key)
        if value is None:
            value = self._json(attributes), json.dumps(attributes)
            if len(self._json_cache) >= 10_000:
                self._json_cache.clear()
            self._json_cache[key] = value
        return value

    def _values(self, row: _Row, at: Any) -> tuple[Any, ...]:
        """A new subscriber's values, in ``_NEW_COLUMNS`` order, converted for the driver
        (``at`` is now, converted)."""
        status = row.status or "active"
        if row.confirmed_at is not None:
            confirmed = self.time(row.confirmed_at)
        else:
            confirmed = at if status == "active" else None
        return (
            row.email,
            row.name,
            status,
            row.time_zone or "UTC",
            self.json(row.attributes)[0],
            at if row.created_at is None else self.time(row.created_at),
            confirmed,
            at,
        )

    def _lists(self, conn: sa.Connection, row: _Row) -> list[int]:
        names = [*row.lists, self.extra_list] if self.extra_list else row.lists
        result = []
        for name in names:
            list_id = self.list_ids.get(name)
            if list_id is None:
                list_id = self.list_ids[name] = ensure_list(conn, name)
            result.append(list_id)
        return result

    def _add_memberships(
        self, conn: sa.Connection, wanted: list[tuple[int, int]], new: set[int], now: datetime
    ) -> set[int]:
        """Insert the missing memberships; the existing subscribers that got one."""
        if not wanted:
            return set()
        old_ids = list({sid for sid, _ in wanted if sid not in new})
        have = self.bulk.memberships(conn, old_ids) if old_ids else set()
        missing = sorted(set(wanted) - have)
        if missing:
            self.bulk.add_memberships(conn, missing, now)
        return {sid for sid, _ in missing if sid not in new}


def _merged(
    record: Record, row: _Row, row_json: str, now: datetime, *, force: bool = False
) -> tuple[int, str, str, dict[str, str], str, datetime | None] | None:
    """An existing subscriber updated from a file row, as ``_UPDATE_COLUMNS`` values
    (confirmed at None: unchanged), or None if nothing changes and not ``force``.

    Empty cells keep what is known; a file never demotes an active subscriber to
    pending. ``record.attributes`` is the stored JSON text: when it is the text of the
    row's attributes (``row_json``), they are the same and need no parsing.
    """
    status, confirmed_at = record.status, None
    wanted = row.status or "active"
    if wanted in STICKY:
        status = wanted
    elif wanted == "active" and status == "pending":
        status, confirmed_at = "active", row.confirmed_at or now
    name = row.name or record.name
    time_zone = row.time_zone or record.time_zone
    if record.attributes == row_json:
        attributes, same_attributes = row.attributes, True
    else:
        stored = json.loads(record.attributes)
        attributes = {**stored, **row.attributes}
        same_attributes = attributes == stored
    same = same_attributes and (name, time_zone, status) == (
        record.name,
        record.time_zone,
        record.status,
    )
    if same and not force:
        return None
    return record.id, name, time_zone, attributes, status, confirmed_at


def import_csv(
    engine: sa.Engine,
    path: str | Path,
    *,
    list_name: str | None = None,
    progress: Callable[[int], None] | None = None,
    processes: int | None = None,
) -> ImportReport:
    """Import a CSV file of subscribers (see the module docstring for the format).

    ``list_name`` puts every imported row on that list, created if needed. ``progress``
    is called after each chunk with the number of data rows read so far. ``processes``
    validate rows in parallel (default: one per CPU for files over
    ``PARALLEL_BYTES``, none for smaller ones). A file that is not UTF-8 or has no usable
    header raises a LetterpressError and imports nothing.
    """
    source = Path(path)
    report = ImportReport(str(path))
    if list_name is not None:
        check_list_name(list_name)
    _require_utf8(source)
    if processes is None:
        processes = (os.cpu_count() or 1) if source.stat().st_size > PARALLEL_BYTES else 0
    with source.open(encoding="utf-8-sig", newline="") as handle, engine.connect() as conn:
        records = _records(csv.reader(handle))
        header = next(records, None)
        if header is None:
            raise LetterpressError(
                f"{path}:1: the file is empty: the first row must name the columns, one of"
                " them email"
            )
        line, fields = header
        if isinstance(fields, str):
            raise LetterpressError(f"{path}:{line}: bad header row: {fields}")
        columns = _Columns.from_header(f"{path}:{line}", fields)
        importer = _Importer(conn, report, list_name)
        batch: list[_Row] = []
        for (rows, bad), size in _parsed_chunks(columns, records, processes):
            report.rows += size
            report.problems += [Problem(report.path, n, message) for n, message in bad]
            batch += rows
            if len(batch) >= WRITE_ROWS:
                importer.write(conn, _once(batch, report))
                batch = []
                if progress is not None:
                    progress(report.rows)
        importer.write(conn, _once(batch, report))
        if progress is not None:
            progress(report.rows)
    report.problems.sort()
    return report


def _once(rows: list[_Row], report: ImportReport) -> list[_Row]:
    """The chunk without the addresses repeated inside it (those become problems)."""
    first: dict[str, int] = {}
    unique = []
    for row in rows:
        if earlier := first.get(row.email):
            message = f"{row.email} is repeated: it is already on line {earlier}"
            report.problems.append(Problem(report.path, row.line, message))
        else:
            first[row.email] = row.line
            unique.append(row)
    return unique


# CSV export


def export_csv(
    engine: sa.Engine, out: TextIO, *, list_name: str | None = None, status: str | None = None
) -> int:
    """Write the subscribers (all, or one list's, or one status's) as CSV, in id order.

    Returns how many were written. Memory stays flat: rows are streamed, a page at a
    time with the memberships of that page.
    """
    with engine.connect() as conn:
        list_id = None if list_name is None else _list_id(conn, list_name)
        keys = _attribute_keys(conn, list_id, status)
        names = dict(conn.execute(sa.select(lists.c.id, lists.c.name)).all())
    writer = csv.writer(out)
    writer.writerow([*EXPORT_COLUMNS, *[_safe_cell(key) for key in keys]])
    written = 0
    pages = _pages(engine, _filtered(sa.select(subscribers), list_id, status))
    for page, member in pages:
        for row in page:
            attributes = row.attributes
            writer.writerow(
                [
                    _safe_cell(row.email),
                    _safe_cell(row.name),
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
    return "" if value is None else _safe_cell(str(value))


# A cell that starts like a formula is run by spreadsheets (CSV injection, OWASP): the
# export prefixes it with ', which spreadsheets show as text, and the import takes the
# prefix off again, so an export imports back unchanged.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _safe_cell(text: str) -> str:
    return f"'{text}" if text.lstrip("'").startswith(_FORMULA_START) else text


def _unsafe_cell(text: str) -> str:
    if text.startswith("'") and text.lstrip("'").startswith(_FORMULA_START):
        return text[1:]
    return text


EXPORT_PAGE = 5000


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
        _any_of(memberships.c.subscriber_id, "ids", conn.dialect)
    )
    member: dict[int, list[int]] = {}
    for part in _slices([row.id for row in page]):
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
    inner = _filtered(query, list_id, status).subquery()
    keys = conn.execute(sa.select(inner.c.key).distinct()).scalars().all()
    return sorted(keys)
