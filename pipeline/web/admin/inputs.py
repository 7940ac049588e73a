"""What the admin API checks in a request before the domain sees it: text without
control characters (PostgreSQL cannot store a NUL at all), and times. A ``ValueError``
here, or from the domain, is a 400 (``bad``) that says which value and why."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from fastapi import HTTPException

from pipeline.audience import changes

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
PAST_GRACE = timedelta(minutes=5)  # a send time this far in the past is still "now"


def bad(exc: Exception) -> HTTPException:
    return HTTPException(400, str(exc))


def line(value: str, what: str) -> str:
    """One line of text: no control characters."""
    if _CONTROL.search(value):
        raise ValueError(f"{what} contains control characters")
    return value


def text(value: str, what: str) -> str:
    """Text that may have several lines, and no other control characters."""
    if _CONTROL_BUT_LINES.search(value):
        raise ValueError(f"{what} contains control characters")
    return value


def list_names(names: Sequence[str]) -> list[str]:
    """List names as stored, each once; a ValueError names the first bad one."""
    return changes.list_names(line(n, "a list name") for n in names)


def list_filter(name: str | None) -> str | None:
    return None if name is None else list_names([name])[0]


def when(value: str) -> datetime | None:
    """None for now, else the time in UTC; a ValueError says what is wrong."""
    value = value.strip()
    if value.lower() == "now":
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"at: {value!r} is not a time: write now, or ISO 8601 with an offset such as"
            " 2026-12-01T08:00:00+01:00"
        ) from None
    if moment.utcoffset() is None:
        raise ValueError(
            f"at: {value!r} has no offset: add one, such as +01:00 or Z, so the time is not"
            " ambiguous"
        )
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"at: {value!r} is out of range") from None
    if utc < datetime.now(UTC) - PAST_GRACE:
        raise ValueError(f"at: {value!r} is in the past: write now to send at once")
    return utc
