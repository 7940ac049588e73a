"""Subscribers: who they are. Their fields, checked; adding, finding and counting them.

Statuses::

    pending ──confirm──> active ──> unsubscribed | bounced | complained   (sticky)

An unsubscribed, bounced or complained subscriber is never re-activated or put back on a
list by ``add`` or an import (``pipeline.audience.imports``); only an explicit change
does that: the subscriber's own (``pipeline.audience.consent``), a provider's report
(``pipeline.audience.feedback``) or an editor's (the admin API).

Addresses are validated with email-validator (no DNS) and stored normalised and
lower-cased, so the same person is always the same row (``subscribers.email`` is unique).

Attributes are text: a mapping of names to non-empty strings. An empty value means "no
value", so an attribute never holds ``""``. An attribute cannot take the name of a
subscriber field (``FIELDS``, ``FIELD_ALIASES``): those are the columns of a CSV file
(``pipeline.audience.exports``), and the rest of its columns are attributes.

Lists and memberships are in ``pipeline.audience.lists``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import email_validator
import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from email_validator.syntax import validate_email_domain_name, validate_email_local_part

from pipeline.audience.lists import check_list_name, ensure_list, find_list
from pipeline.statuses import SubscriberStatus
from pipeline.store import db
from pipeline.store.db import lists, memberships, subscribers

STATUSES = tuple(SubscriberStatus)
STICKY = frozenset(
    {SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED}
)
# A subscriber's fields, in the order of a CSV file's columns; other names are attributes.
FIELDS = ("email", "name", "status", "time_zone", "lists", "created_at", "confirmed_at")
FIELD_ALIASES = {"timezone": "time_zone"}  # other spellings a CSV header may use
RESERVED = frozenset({*FIELDS, *FIELD_ALIASES})  # names an attribute cannot take
_NAME_MAX = subscribers.c.name.type.length  # type: ignore[attr-defined]


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


# Validation


def normalise_email(raw: str) -> str:
    """The address as stored: validated (syntax only, no DNS), normalised, lower-cased."""
    text = raw.strip()
    if not text:
        raise ValueError("the email address is empty")
    if (plain := _plain(text)) is not None:
        return plain
    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{text!r} is not a valid email address: {exc}") from None
    return valid.normalized.lower()


# An address of the usual kind: ASCII, one @, no quotes, brackets, spaces or comments,
# the characters email-validator splits on (``split_email``) unambiguously.
_PLAIN = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_MAX_LENGTH = 254  # RFC 3696 erratum 1690, as email-validator counts it, in UTF-8 bytes


def _plain(text: str) -> str | None:
    """The stored form of a usual address, or None when it needs email-validator in full.

    The same rules as ``validate_email``, by email-validator's own functions for the
    local part and the domain, but the domain's verdict is remembered: the domain is
    most of the cost (IDNA and the special-use names, about 30 µs), and a list has few.
    Whatever is not plainly valid here (an error included) goes to ``validate_email``,
    which gives its own message; ``tests/test_subscribers.py`` checks both agree.
    """
    if len(text) > _MAX_LENGTH or not _PLAIN.fullmatch(text):
        return None
    local, domain = text.split("@")
    known = _domain(domain)
    if known is None:
        return None
    unicode_domain, ascii_domain = known
    try:
        validate_email_local_part(
            local,
            allow_smtputf8=email_validator.ALLOW_SMTPUTF8,
            allow_empty_local=email_validator.ALLOW_EMPTY_LOCAL,
            strict=email_validator.STRICT,
        )
    except EmailNotValidError:
        return None
    normalised = f"{local}@{unicode_domain}"
    if max(len(normalised.encode()), len(local) + 1 + len(ascii_domain)) > _MAX_LENGTH:
        return None
    # RFC 2142's role names email-validator lower-cases: everything is lower-cased here.
    return normalised.lower()


@lru_cache(maxsize=65_536)
def _domain(domain: str) -> tuple[str, str] | None:
    """A valid domain's Unicode and ASCII (IDNA) forms, or None."""
    try:
        found = validate_email_domain_name(
            domain,
            test_environment=email_validator.TEST_ENVIRONMENT,
            globally_deliverable=email_validator.GLOBALLY_DELIVERABLE,
        )
    except EmailNotValidError:
        return None
    return found["domain"], found["ascii_domain"]


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


def trim_name(name: str) -> str:
    """The name without surrounding space; a ValueError if it does not fit its column.

    (``consent.check_name`` is stricter, for names people type into a form.)"""
    name = name.strip()
    if len(name) > _NAME_MAX:
        raise ValueError(f"the name is longer than {_NAME_MAX} characters")
    return name


def check_attributes(attributes: Mapping[str, str] | None) -> dict[str, str]:
    """The attributes as stored: names stripped, empty values left out."""
    result: dict[str, str] = {}
    for key, value in (attributes or {}).items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError("attribute names must be non-empty text")
        if key.strip().lower() in RESERVED:
            raise ValueError(f"{key!r} is a subscriber field, not an attribute")
        if not isinstance(value, str):
            raise ValueError(f"attribute {key!r} must be text, not {type(value).__name__}")
        if value:
            result[key.strip()] = value
    return result


# Single subscribers (the signup service, webhooks, editors)


def add(
    engine: sa.Engine,
    email: str,
    *,
    name: str = "",
    lists: Iterable[str] = (),
    status: str = SubscriberStatus.PENDING,
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
        "name": trim_name(name),
        "status": check_status(status),
        "time_zone": check_time_zone(time_zone),
        "attributes": check_attributes(attributes),
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
                "confirmed_at": now if status == SubscriberStatus.ACTIVE else None,
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
            _join(conn, subscriber_id, names, now, touch=inserted is None)
    return subscriber_id


def _join(
    conn: sa.Connection, subscriber_id: int, names: list[str], now: datetime, *, touch: bool
) -> None:
    """Put the subscriber on the lists (created if needed); with ``touch``, an existing
    subscriber who joined one is updated now."""
    added = conn.execute(
        db.insert(conn, memberships).on_conflict_do_nothing().returning(memberships.c.list_id),
        [
            {"list_id": ensure_list(conn, n), "subscriber_id": subscriber_id, "created_at": now}
            for n in names
        ],
    ).all()
    if added and touch:
        conn.execute(
            subscribers.update().where(subscribers.c.id == subscriber_id).values(updated_at=now)
        )


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


def selected(query: sa.Select[Any], list_id: int | None, status: str | None) -> sa.Select[Any]:
    """``query`` (of subscribers) narrowed to one list and/or one status."""
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
        on = None if list_name is None else find_list(conn, list_name)
        query = selected(sa.select(sa.func.count()).select_from(subscribers), on, status)
        return int(conn.execute(query).scalar_one())
