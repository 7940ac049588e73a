"""Changes editors make to subscribers, from the command line (``letterpress subscribers
add``) or the admin API (``POST`` and ``PATCH /api/admin/subscribers``).

Each change is one function here, whichever edge asks for it, so the same change is
checked the same way and leaves the same ``subscriber_events`` row: ``added`` for a new
subscriber, ``changed`` for anything else. ``via`` names the edge (``COMMAND_LINE``,
``ADMIN_API``, ``CONSOLE``) and opens the event's detail; the rest of the detail says what changed::

    added    admin API, active; lists: weekly
    changed  command line: joined offers
    changed  admin API: name changed; status pending -> active; paused; left weekly

A status set by an editor is final: leaving lists here never unsubscribes (that is
``consent.leave``, for the subscriber's own choice). Erasure is ``consent.erase``, the
same for an editor and for the subscriber.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.audience import consent, subscribers
from pipeline.audience.directory import list_id
from pipeline.audience.lists import check_list_name, ensure_list
from pipeline.errors import LetterpressError, NotFound
from pipeline.statuses import SubscriberStatus
from pipeline.store import db

COMMAND_LINE = "command line"
ADMIN_API = "admin API"
CONSOLE = "console"

S = db.subscribers.c
M = db.memberships.c


def list_names(names: Iterable[str]) -> list[str]:
    """List names as stored, each once, in the order given; a ValueError names the
    first bad one."""
    return list(dict.fromkeys(check_list_name(n) for n in names))


# -- adding -------------------------------------------------------------------------------


class Exists(LetterpressError):
    """The address is a subscriber already (``add(..., only_new=True)``)."""

    def __init__(self, subscriber_id: int, email: str) -> None:
        super().__init__(f"{email} is already subscriber {subscriber_id}")
        self.subscriber_id = subscriber_id


@dataclass(frozen=True)
class Added:
    subscriber_id: int
    new: bool  # False: the address was a subscriber already
    joined: tuple[str, ...]  # the lists joined now


def add(
    engine: Engine,
    email: str,
    *,
    via: str,
    name: str = "",
    lists: Iterable[str] = (),
    status: str = SubscriberStatus.PENDING,
    time_zone: str = "UTC",
    attributes: Mapping[str, str] | None = None,
    only_new: bool = False,
) -> Added:
    """``subscribers.add`` (idempotent on the address: a known subscriber is only put on
    the lists, unless they left, bounced or complained), and its event. ValueError for
    a value the domain refuses; ``Exists`` for a known address when ``only_new``."""
    address = subscribers.normalise_email(email)
    name = consent.check_name(name)
    names = list_names(lists)
    subscribers.check_status(status)
    subscribers.check_time_zone(time_zone)
    before = subscribers.get(engine, address)
    if before is not None and only_new:
        raise Exists(before.id, address)
    subscriber_id = subscribers.add(
        engine,
        address,
        name=name,
        lists=names,
        status=status,
        time_zone=time_zone,
        attributes=attributes,
    )
    after = subscribers.get(engine, subscriber_id)
    had: set[str] = set() if before is None else set(before.lists)
    joined = tuple(n for n in names if after is not None and n in after.lists and n not in had)
    with engine.begin() as conn:
        if before is None:
            on = f"; lists: {', '.join(names)}" if names else ""
            consent.event(conn, subscriber_id, "added", f"{via}, {status}{on}")
        elif joined:
            consent.event(conn, subscriber_id, "changed", f"{via}: " + _joined(joined))
    return Added(subscriber_id, before is None, joined)


def _joined(names: Iterable[str]) -> str:
    return "; ".join(f"joined {n}" for n in names)


# -- changing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What to change; None (or no lists) leaves a field as it is."""

    name: str | None = None
    status: str | None = None
    paused: bool | None = None
    time_zone: str | None = None
    join: Sequence[str] = ()  # lists to join, created when missing
    leave: Sequence[str] = ()  # lists to leave; they must exist

    def checked(self) -> Change:
        """The change with its values as stored; a ValueError says which is refused."""
        join, leave = list_names(self.join), list_names(self.leave)
        both = [n for n in join if n in leave]
        if both:
            raise ValueError(f"list {both[0]!r} is both joined and left")
        return Change(
            name=None if self.name is None else consent.check_name(self.name),
            status=None if self.status is None else subscribers.check_status(self.status),
            paused=self.paused,
            time_zone=(
                None if self.time_zone is None else subscribers.check_time_zone(self.time_zone)
            ),
            join=join,
            leave=leave,
        )


def update(engine: Engine, subscriber_id: int, change: Change, *, via: str) -> list[str]:
    """Make ``change`` in one transaction with one ``changed`` event; what changed, in
    words (empty when nothing did, and then no event). NotFound for an unknown
    subscriber, ValueError for a refused value or an unknown list to leave (nothing
    changes then)."""
    change = change.checked()
    at = db.now()
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(S.name, S.status, S.paused, S.time_zone).where(S.id == subscriber_id)
        ).first()
        if row is None:
            raise NotFound(f"no subscriber with id {subscriber_id}")
        values, changes = _fields(row, change, at)
        changes += _memberships(conn, subscriber_id, change, at)
        if changes:
            conn.execute(
                sa.update(db.subscribers)
                .where(S.id == subscriber_id)
                .values(updated_at=at, **values)
            )
            consent.event(conn, subscriber_id, "changed", f"{via}: " + "; ".join(changes))
    return changes


def _fields(row: Any, change: Change, at: Any) -> tuple[dict[str, Any], list[str]]:
    """The subscriber's columns to set, and the words for them."""
    values: dict[str, Any] = {}
    changes: list[str] = []
    if change.name is not None and change.name != row.name:
        values["name"] = change.name
        changes.append("name changed")
    if change.status is not None and change.status != row.status:
        values.update(status=change.status, status_changed_at=at)
        if change.status == SubscriberStatus.ACTIVE:
            values["confirmed_at"] = sa.func.coalesce(S.confirmed_at, at)
        changes.append(f"status {row.status} -> {change.status}")
    if change.paused is not None and change.paused != bool(row.paused):
        values["paused"] = change.paused
        changes.append("paused" if change.paused else "resumed")
    if change.time_zone is not None and change.time_zone != row.time_zone:
        values["time_zone"] = change.time_zone
        changes.append(f"time zone {change.time_zone}")
    return values, changes


def _memberships(conn: Connection, subscriber_id: int, change: Change, at: Any) -> list[str]:
    """Join and leave the lists; the words for what changed."""
    changes: list[str] = []
    for name in change.join:
        # RETURNING, not rowcount: psycopg's rowcount of an INSERT … ON CONFLICT is -1.
        joined = conn.execute(
            db.insert_ignore(conn, db.memberships)
            .values(list_id=ensure_list(conn, name), subscriber_id=subscriber_id, created_at=at)
            .returning(M.list_id)
        ).first()
        if joined is not None:
            changes.append(f"joined {name}")
    for name in change.leave:
        left = conn.execute(
            sa.delete(db.memberships).where(
                M.subscriber_id == subscriber_id, M.list_id == list_id(conn, name)
            )
        ).rowcount
        if left:
            changes.append(f"left {name}")
    return changes
