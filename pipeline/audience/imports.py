"""CSV import (``import_csv``): a file of subscribers, added and updated.

A header row with an ``email`` column is required; ``name``, ``time_zone`` (or
``timezone``), ``lists`` (names separated by ``;``), ``status``, ``created_at`` and
``confirmed_at`` are optional (names are matched case-insensitively), and every other
column is an attribute (``pipeline.audience.csvfile``). People in a file consented
elsewhere: they are ``active`` and confirmed now, unless the file says otherwise (an
export does). An empty cell never erases what is known about an existing subscriber,
and lists are only ever added. A file's ``unsubscribed``/``bounced``/``complained`` is
honoured; its ``pending`` never demotes an active subscriber. Bad rows become
``Problem``s with their line in the file and never stop the other rows; re-importing a
file changes nothing. A file that is not UTF-8 is refused before anything is imported.

The file is streamed: rows are validated ``CHUNK_ROWS`` at a time and written
``WRITE_ROWS`` at a time, each batch one transaction of a few bulk statements
(``pipeline.audience.bulk``), so memory stays flat (plus about 4 bytes per subscriber
id, to recognise an address met earlier in the same file). Validation costs nearly as
much CPU as the database's writes, so files over ``PARALLEL_BYTES`` are validated by
worker processes (spawned: a script that imports a large file must guard its entry
point with ``if __name__ == "__main__"``) while this process writes.
"""

from __future__ import annotations

import csv
import itertools
import json
import multiprocessing
import os
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline.audience.bulk import Bulk, PostgresBulk, Record, SqliteBulk, to_db
from pipeline.audience.csvfile import (
    Columns,
    CsvRecord,
    Parsed,
    Row,
    parse_chunk,
    read_records,
    require_utf8,
)
from pipeline.audience.lists import check_list_name, ensure_list
from pipeline.audience.subscribers import STICKY
from pipeline.errors import LetterpressError, Problem
from pipeline.statuses import SubscriberStatus
from pipeline.store import db
from pipeline.store.db import subscribers

CHUNK_ROWS = 5000  # rows validated at a time (by a worker process, for large files)
WRITE_ROWS = 25_000  # rows written per transaction: fewer, larger commits write far less
PARALLEL_BYTES = 4_000_000  # larger files are validated by worker processes
# Chunks validated ahead of the writes: a whole write batch, so that the workers validate
# the next batch while the database writes this one (both drivers let go of the GIL
# while the database works).
AHEAD_CHUNKS = -(-WRITE_ROWS // CHUNK_ROWS)


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
    require_utf8(source)
    if processes is None:
        processes = (os.cpu_count() or 1) if source.stat().st_size > PARALLEL_BYTES else 0
    with source.open(encoding="utf-8-sig", newline="") as handle, engine.connect() as conn:
        records = read_records(csv.reader(handle))
        header = next(records, None)
        if header is None:
            raise LetterpressError(
                f"{path}:1: the file is empty: the first row must name the columns, one of"
                " them email"
            )
        line, fields = header
        if isinstance(fields, str):
            raise LetterpressError(f"{path}:{line}: bad header row: {fields}")
        columns = Columns.from_header(f"{path}:{line}", fields)
        importer = _Importer(conn, report, list_name)
        importer.bulk.start(conn)
        try:
            batch: list[Row] = []
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
        finally:
            importer.bulk.end(conn)
        if progress is not None:
            progress(report.rows)
    report.problems.sort()
    return report


def _once(rows: list[Row], report: ImportReport) -> list[Row]:
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


def _parsed_chunks(
    columns: Columns, records: Iterator[CsvRecord], processes: int
) -> Iterator[tuple[Parsed, int]]:
    """Parsed chunks in file order, each with its number of records.

    With ``processes``, chunks are parsed by that many worker processes, at most a write
    batch and a few chunks ahead of the caller (``AHEAD_CHUNKS``), so memory stays flat.
    """
    chunks = iter(lambda: list(itertools.islice(records, CHUNK_ROWS)), [])
    if processes <= 0:
        for chunk in chunks:
            yield parse_chunk(columns, chunk), len(chunk)
        return
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    try:
        ahead: deque[tuple[Future[Parsed], int]] = deque()
        for chunk in chunks:
            ahead.append((pool.submit(parse_chunk, columns, chunk), len(chunk)))
            if len(ahead) > AHEAD_CHUNKS + processes:
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


class _Importer:
    """Writes validated rows on one connection, a transaction per chunk."""

    def __init__(self, conn: sa.Connection, report: ImportReport, list_name: str | None) -> None:
        self.report = report
        self.list_ids: dict[str, int] = {}
        self.extra_list = None if list_name is None else check_list_name(list_name)
        self.first_lines = _FirstLines()
        self.new_share: float | None = None  # of the last batch written
        dialect = conn.dialect
        self.time = to_db(subscribers.c.created_at, dialect)
        self._json_cache: dict[tuple[tuple[str, str], ...], tuple[Any, str]] = {}
        self.bulk: Bulk = (PostgresBulk if dialect.name == "postgresql" else SqliteBulk)(dialect)
        # COPY (PostgreSQL) takes JSON as text; psycopg's Json wrapper would encode it again
        # for every row, where the text of each combination is cached here
        self._json = json.dumps if self.bulk.copies else to_db(subscribers.c.attributes, dialect)

    def write(self, conn: sa.Connection, rows: list[Row]) -> None:
        if not rows:
            return
        now = db.now()
        with conn.begin():
            ids, existing = self._insert_new(conn, rows, self.time(now))
            wanted: list[tuple[int, int]] = []  # (subscriber id, list id) to have
            recipient: dict[int, bool] = {}  # of the subscribers in ``wanted``
            known: list[tuple[Record, Row]] = []
            for row in rows:
                if row.email in ids:
                    subscriber_id = ids[row.email]
                    self.first_lines.set(subscriber_id, row.line)
                    if lists := self._lists(conn, row):
                        wanted += [(subscriber_id, list_id) for list_id in lists]
                        # inserted active is inserted confirmed (``_values``)
                        status = row.status or SubscriberStatus.ACTIVE
                        recipient[subscriber_id] = status == SubscriberStatus.ACTIVE
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
                if lists := self._lists(conn, row):
                    wanted += [(record.id, list_id) for list_id in lists]
                    recipient[record.id] = record.status == SubscriberStatus.ACTIVE and bool(
                        record.confirmed
                    )
            gained = self._add_memberships(conn, wanted, recipient, set(ids.values()), now)
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

    def _insert_new(
        self, conn: sa.Connection, rows: list[Row], at: Any
    ) -> tuple[dict[str, int], dict[str, Record]]:
        """Insert the rows whose addresses are new: the ids of those inserted, and the
        subscribers already there (``at`` is now, converted for the driver)."""
        if self.bulk.insert_first and self.mostly_new(conn):
            ids = self.bulk.insert(conn, [self._values(r, at) for r in rows])
            existing = self.bulk.existing(conn, [r.email for r in rows if r.email not in ids])
            return ids, existing
        existing = self.bulk.existing(conn, [r.email for r in rows])
        fresh = [r for r in rows if r.email not in existing]
        ids = self.bulk.insert(conn, [self._values(r, at) for r in fresh]) if fresh else {}
        raced = [r.email for r in fresh if r.email not in ids]
        if raced:  # added by someone else since the lookup above
            existing.update(self.bulk.existing(conn, raced))
        return ids, existing

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

    def _values(self, row: Row, at: Any) -> tuple[Any, ...]:
        """A new subscriber's values, in ``NEW_COLUMNS`` order, converted for the driver
        (``at`` is now, converted)."""
        status = row.status or SubscriberStatus.ACTIVE
        if row.confirmed_at is not None:
            confirmed = self.time(row.confirmed_at)
        else:
            confirmed = at if status == SubscriberStatus.ACTIVE else None
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

    def _lists(self, conn: sa.Connection, row: Row) -> list[int]:
        names = [*row.lists, self.extra_list] if self.extra_list else row.lists
        result = []
        for name in names:
            list_id = self.list_ids.get(name)
            if list_id is None:
                list_id = self.list_ids[name] = ensure_list(conn, name)
            result.append(list_id)
        return result

    def _add_memberships(
        self,
        conn: sa.Connection,
        wanted: list[tuple[int, int]],
        recipient: dict[int, bool],
        new: set[int],
        now: datetime,
    ) -> set[int]:
        """Insert the missing memberships (``recipient``: whether each subscriber gets
        sends, as they are before this batch's updates, which the update trigger then
        carries to their memberships); the existing subscribers that got one."""
        if not wanted:
            return set()
        old_ids = list({sid for sid, _ in wanted if sid not in new})
        have = self.bulk.memberships(conn, old_ids) if old_ids else set()
        missing = sorted(set(wanted) - have)
        if missing:
            self.bulk.add_memberships(conn, [(s, lid, recipient[s]) for s, lid in missing], now)
        return {sid for sid, _ in missing if sid not in new}


def _merged(
    record: Record, row: Row, row_json: str, now: datetime, *, force: bool = False
) -> tuple[int, str, str, dict[str, str], str, datetime | None] | None:
    """An existing subscriber updated from a file row, as ``UPDATE_COLUMNS`` values
    (confirmed at None: unchanged), or None if nothing changes and not ``force``.

    Empty cells keep what is known; a file never demotes an active subscriber to
    pending. ``record.attributes`` is the stored JSON text: when it is the text of the
    row's attributes (``row_json``), they are the same and need no parsing.
    """
    status, confirmed_at = record.status, None
    wanted = row.status or SubscriberStatus.ACTIVE
    if wanted in STICKY:
        status = wanted
    elif wanted == SubscriberStatus.ACTIVE and status == SubscriberStatus.PENDING:
        status, confirmed_at = SubscriberStatus.ACTIVE, row.confirmed_at or now
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
