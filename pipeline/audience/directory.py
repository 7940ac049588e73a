"""Reading subscribers, for editors and for the subscriber service's pages: a page of
subscribers at a time (keyset pagination in id order), one subscriber in detail with
their recent events, and the small look-ups a page needs (an address, a list's name).

Nothing here changes anything; changes are in ``pipeline.audience.changes`` (editors)
and ``pipeline.audience.consent`` (the subscribers themselves).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.audience.subscribers import check_status, normalise_email
from pipeline.store import db

S = db.subscribers.c
M = db.memberships.c
L = db.lists.c
E = db.subscriber_events.c

EVENTS_SHOWN = 20  # the events a detail shows, newest first
SUMMARY = (
    S.id,
    S.email,
    S.name,
    S.status,
    S.time_zone,
    S.paused,
    S.created_at,
    S.confirmed_at,
    S.updated_at,
)


@dataclass(frozen=True)
class Summary:
    id: int
    email: str
    name: str
    status: str
    time_zone: str
    paused: bool
    lists: tuple[str, ...]  # by name
    created_at: datetime
    confirmed_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str
    detail: str


@dataclass(frozen=True)
class Detail(Summary):
    attributes: dict[str, str]
    soft_bounces: int  # since the last delivery
    status_changed_at: datetime | None
    events: tuple[Event, ...]  # the last EVENTS_SHOWN, newest first


@dataclass(frozen=True)
class Page:
    items: list[Summary]
    next: int | None  # the ``after`` of the next page; None on the last page


def list_id(conn: Connection, name: str) -> int:
    """The id of the list called ``name``; a ValueError when there is none."""
    found = conn.scalar(sa.select(L.id).where(L.name == name))
    if found is None:
        raise ValueError(f"no list named {name!r}")
    return int(found)


def require_list(engine: Engine, name: str) -> None:
    """A ValueError unless there is a list called ``name``."""
    with engine.connect() as conn:
        list_id(conn, name)


def _summary(row: Any, lists: tuple[str, ...]) -> dict[str, Any]:
    return {
        "id": int(row.id),
        "email": row.email,
        "name": row.name,
        "status": row.status,
        "time_zone": row.time_zone,
        "paused": bool(row.paused),
        "lists": lists,
        "created_at": row.created_at,
        "confirmed_at": row.confirmed_at,
        "updated_at": row.updated_at,
    }


def _list_names(conn: Connection, subscriber_ids: list[int]) -> dict[int, tuple[str, ...]]:
    names: dict[int, list[str]] = {}
    if subscriber_ids:
        for sid, name in conn.execute(
            sa.select(M.subscriber_id, L.name)
            .join(db.lists, L.id == M.list_id)
            .where(M.subscriber_id.in_(subscriber_ids))
            .order_by(L.name)
        ):
            names.setdefault(int(sid), []).append(name)
    return {sid: tuple(found) for sid, found in names.items()}


def page(
    engine: Engine,
    *,
    status: str | None = None,
    list_name: str | None = None,
    email: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> Page:
    """Subscribers with ids after ``after``, in id order, at most ``limit``: optionally
    one status, one list (a ValueError when there is no such list) or one address."""
    query = sa.select(*SUMMARY).where(S.id > after).order_by(S.id).limit(limit + 1)
    if status is not None:
        query = query.where(S.status == check_status(status))
    if email is not None:
        query = query.where(S.email == normalise_email(email))
    with engine.connect() as conn:
        if list_name is not None:
            on = list_id(conn, list_name)
            query = query.where(sa.exists().where(M.subscriber_id == S.id, M.list_id == on))
        rows = conn.execute(query).all()
        shown = rows[:limit]
        names = _list_names(conn, [int(r.id) for r in shown])
    items = [Summary(**_summary(r, names.get(int(r.id), ()))) for r in shown]
    return Page(items, items[-1].id if len(rows) > limit else None)


def detail(engine: Engine, subscriber_id: int, events: int = EVENTS_SHOWN) -> Detail | None:
    """One subscriber, with their lists, attributes and last ``events`` events; None
    when there is no such subscriber."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(*SUMMARY, S.attributes, S.soft_bounces, S.status_changed_at).where(
                S.id == subscriber_id
            )
        ).first()
        if row is None:
            return None
        lists = _list_names(conn, [subscriber_id]).get(subscriber_id, ())
        recent = conn.execute(
            sa.select(E.at, E.kind, E.detail)
            .where(E.subscriber_id == subscriber_id)
            .order_by(E.id.desc())
            .limit(events)
        ).all()
    return Detail(
        **_summary(row, lists),
        attributes={str(k): str(v) for k, v in dict(row.attributes or {}).items()},
        soft_bounces=int(row.soft_bounces),
        status_changed_at=row.status_changed_at,
        events=tuple(Event(r.at, r.kind, r.detail) for r in recent),
    )


def email_of(engine: Engine, subscriber_id: int) -> str | None:
    """The subscriber's address; None when there is no such subscriber (erased)."""
    with engine.connect() as conn:
        email = conn.scalar(sa.select(S.email).where(S.id == subscriber_id))
    return None if email is None else str(email)


def list_name(engine: Engine, list_id: int) -> str:
    """The list's name; "" for 0 (every list) and for a list that is gone."""
    if not list_id:
        return ""
    with engine.connect() as conn:
        return str(conn.scalar(sa.select(L.name).where(L.id == list_id)) or "")
