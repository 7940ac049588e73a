"""Subscribers' CSV files: what their cells hold, and a file's rows read and validated.

The columns are the subscriber's fields (``subscribers.FIELDS``: ``email`` is required
on import, the others optional; ``timezone`` is read as ``time_zone``), matched
case-insensitively, and one column per attribute. ``lists`` holds list names separated
by ``;``; times are ISO 8601 (without an offset, UTC). ``pipeline.audience.imports``
reads files with this module, ``pipeline.audience.exports`` writes them.

A cell that starts like a formula is run by spreadsheets (CSV injection, OWASP): an
export prefixes it with ', which spreadsheets show as text, and an import takes the
prefix off again, so an export imports back unchanged.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.audience.lists import LIST_SEPARATOR, check_list_name
from pipeline.audience.subscribers import (
    FIELD_ALIASES,
    RESERVED,
    check_status,
    check_time_zone,
    normalise_email,
    trim_name,
)
from pipeline.errors import LetterpressError

# Cells

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(text: str) -> str:
    """The text as written to a file: prefixed with ' if it starts like a formula."""
    return f"'{text}" if text.lstrip("'").startswith(_FORMULA_START) else text


def unsafe_cell(text: str) -> str:
    """A cell as read from a file: the prefix ``safe_cell`` added taken off."""
    if text.startswith("'") and text.lstrip("'").startswith(_FORMULA_START):
        return text[1:]
    return text


def parse_time(text: str) -> datetime:
    """ISO 8601; a time without an offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time (2024-05-01T09:30:00+00:00)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Reading a file


def require_utf8(path: Path) -> None:
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
class Columns:
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
    def from_header(cls, where: str, header: Sequence[str]) -> Columns:
        known: dict[str, int] = {}
        attributes: list[tuple[int, str]] = []
        seen: set[str] = set()
        for index, raw in enumerate(header):
            title = unsafe_cell(raw).strip()
            if not title:
                raise LetterpressError(
                    f"{where}: column {index + 1} of the header has no name: name it or delete it"
                )
            key = FIELD_ALIASES.get(title.lower(), title.lower())
            if key in RESERVED:
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


class Row(NamedTuple):
    """A data row, validated. Empty text (and None) is an empty cell."""

    line: int
    email: str
    name: str
    time_zone: str
    lists: tuple[str, ...]
    attributes: dict[str, str]
    status: str
    created_at: datetime | None
    confirmed_at: datetime | None


def parse(columns: Columns, fields: list[str], line: int) -> Row:
    """One data row, validated; a ValueError says what is wrong with it."""
    if len(fields) != columns.width:
        raise ValueError(
            f"{len(fields)} fields where the header has {columns.width}"
            " (a missing or extra comma, or an unquoted comma in a value?)"
        )
    if any(f.startswith("'") for f in fields):
        fields = [unsafe_cell(f) for f in fields]
    email = normalise_email(fields[columns.email])
    name = "" if columns.name is None else trim_name(fields[columns.name])
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
        created_at = parse_time(text)
    if columns.confirmed_at is not None and (text := fields[columns.confirmed_at].strip()):
        confirmed_at = parse_time(text)
    attributes = {key: value for index, key in columns.attributes if (value := fields[index])}
    return Row(line, email, name, time_zone, names, attributes, status, created_at, confirmed_at)


# A record is (first line, fields), or (first line, what is wrong) when it is not CSV.
CsvRecord = tuple[int, list[str] | str]
# Good rows, and (line, message) for the bad ones.
Parsed = tuple[list[Row], list[tuple[int, str]]]


def parse_chunk(columns: Columns, records: list[CsvRecord]) -> Parsed:
    """Validate a chunk of records: good rows, and (line, message) for the bad ones.

    Run in worker processes for large files, so that validation overlaps the database
    writes.
    """
    rows: list[Row] = []
    bad: list[tuple[int, str]] = []
    for line, fields in records:
        if isinstance(fields, str):
            bad.append((line, fields))
            continue
        try:
            rows.append(parse(columns, fields, line))
        except ValueError as exc:
            bad.append((line, str(exc)))
    return rows, bad


def read_records(reader: Any) -> Iterator[CsvRecord]:
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
