"""Reading subscribers, for editors and for the subscriber service's pages: a page of
subscribers at a time (keyset pagination in id order), one subscriber in detail with
their recent events, and the small look-ups a page needs (an address, a list's name).

The console's search (``search``) finds subscribers by address (a prefix, or the exact
address), status, list and signup date, a page at a time and never by OFFSET: by
address in address order, each page after the last address shown (a prefix is a range
of the unique index on ``email``, which compares byte by byte on both databases); by a
signup date, newest signup first (``ix_subscribers_created_at_id``); otherwise newest
first, each page before the last id shown (``ix_subscribers_status_id`` for one status,
the memberships' key for a list). ``profile`` is one subscriber with their whole
history, gathered from their events, deliveries, provider reports and clicks;
``suppressed`` the addresses that bounced or complained, with the reason and the date.

Nothing here changes anything; changes are in ``pipeline.audience.changes`` (editors)
and ``pipeline.audience.consent`` (the subscribers themselves).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.audience.subscribers import check_status, normalise_email
from pipeline.statuses import SubscriberStatus
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


# -- the console's search -------------------------------------------------------------------

SEARCH_PAGE = 50  # subscribers a page of the search shows
ADDRESS_MAX = 320  # the longest address (or prefix of one) searched for


@dataclass(frozen=True)
class Search:
    """What to look for; empty fields look for everything. ``address`` is a prefix of
    the address, or with ``exact`` the whole address; ``joined_from`` and ``joined_to``
    are days (UTC) of the signup, both included."""

    address: str = ""
    exact: bool = False
    status: str | None = None
    list_name: str | None = None
    joined_from: date | None = None
    joined_to: date | None = None

    def checked(self) -> Search:
        """The search with its values as stored; a ValueError says what is wrong."""
        address = self.address.strip()
        if len(address) > ADDRESS_MAX:
            raise ValueError(f"the address is longer than {ADDRESS_MAX} characters")
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in address):
            raise ValueError("an address has no spaces, line breaks or control characters")
        if self.list_name and any(ord(c) < 32 or ord(c) == 127 for c in self.list_name):
            raise ValueError("a list name has no control characters")
        if address and self.exact:
            address = normalise_email(address)
        if self.joined_from and self.joined_to and self.joined_from > self.joined_to:
            raise ValueError(
                f"the signup dates run backwards ({self.joined_from} is after"
                f" {self.joined_to}): put the earlier day first"
            )
        return replace(
            self,
            address=address.lower(),
            status=None if self.status is None else check_status(self.status),
            list_name=self.list_name.strip() if self.list_name else None,
        )

    @property
    def by_address(self) -> bool:
        """Pages in address order (a prefix), rather than newest first."""
        return bool(self.address) and not self.exact


@dataclass(frozen=True)
class Found:
    items: list[Summary]
    next: str | None  # the ``after`` of the next page: an address, or an id; None: last


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """The addresses that start with ``prefix`` are ``>= low`` and ``< high`` in code
    point order (which is UTF-8's byte order); None: no upper bound."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return prefix, None
    following = last + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates are no characters: skip past them
        following = 0xE000
    return prefix, prefix[:-1] + chr(following)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _cursor(after: str, by_signup: bool) -> tuple[datetime, int] | int:
    """The ``after`` of a page in id order (an id), or in signup order (microseconds
    since 1970 and an id: ``1733140800000000-42``); a ValueError for anything else."""
    moment, _, sid = after.rpartition("-") if by_signup else ("", "", after)
    if not sid.isdigit() or int(sid) > db.MAX_ID or (by_signup and not moment.isdigit()):
        raise ValueError(f"{after[:40]!r} is not where a page of subscribers starts")
    if not by_signup:
        return int(sid)
    try:
        return EPOCH + timedelta(microseconds=int(moment)), int(sid)
    except OverflowError:
        raise ValueError(f"{after[:40]!r} is not where a page of subscribers starts") from None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _signup_cursor(item: Summary) -> str:
    return f"{(item.created_at - EPOCH) // timedelta(microseconds=1)}-{item.id}"


def search_query(
    conn: Connection, wanted: Search, after: str = "", limit: int = SEARCH_PAGE
) -> sa.Select[Any]:
    """The SELECT of ``search`` (``limit`` + 1 rows, to tell whether a page follows),
    for it and for looking at its plan (``bench/console.py --explain``).

    The order is the one an index gives, so a page reads about ``limit`` entries of it:
    by address, the unique index on ``email``; with a signup date, newest signup first
    (``ix_subscribers_created_at_id``); with a list alone, down the memberships' key
    (list, subscriber), where a list of a few members among a million is a short range;
    otherwise newest id first (the key, or ``ix_subscribers_status_id`` for a status).
    """
    wanted = wanted.checked()
    query = sa.select(*SUMMARY).limit(limit + 1)
    on = None if wanted.list_name is None else list_id(conn, wanted.list_name)
    dated = wanted.joined_from is not None or wanted.joined_to is not None
    if wanted.by_address:
        low, high = prefix_range(wanted.address)
        # One lower bound, the higher: given both, a planner may seek to the lower one.
        query = query.where(S.email > after if after >= low else S.email >= low)
        if high is not None:
            query = query.where(S.email < high)
        query = query.order_by(S.email)
    elif dated and not wanted.address:
        if after:
            query = query.where(sa.tuple_(S.created_at, S.id) < _cursor(after, True))
        query = query.order_by(S.created_at.desc(), S.id.desc())
    else:
        key = S.id
        if wanted.address:
            query = query.where(S.email == wanted.address)
        elif on is not None and wanted.status is None:
            query = query.join(db.memberships, sa.and_(M.subscriber_id == S.id, M.list_id == on))
            key, on = M.subscriber_id, None
        if after:
            query = query.where(key < _cursor(after, False))
        query = query.order_by(key.desc())
    if on is not None:
        query = query.where(sa.exists().where(M.subscriber_id == S.id, M.list_id == on))
    if wanted.status is not None:
        query = query.where(S.status == wanted.status)
    if wanted.joined_from is not None:
        query = query.where(S.created_at >= _day_start(wanted.joined_from))
    if wanted.joined_to is not None:
        query = query.where(S.created_at < _day_start(wanted.joined_to + timedelta(days=1)))
    return query


def search(engine: Engine, wanted: Search, after: str = "", limit: int = SEARCH_PAGE) -> Found:
    """One page of the subscribers ``wanted`` describes, after ``after`` (the ``next`` of
    the page before; "" for the first). ValueError for a search or ``after`` that makes
    no sense, and for a list that does not exist."""
    wanted = wanted.checked()
    with engine.connect() as conn:
        rows = conn.execute(search_query(conn, wanted, after, limit)).all()
        shown = rows[:limit]
        names = _list_names(conn, [int(r.id) for r in shown])
    items = [Summary(**_summary(r, names.get(int(r.id), ()))) for r in shown]
    if len(rows) <= limit:
        return Found(items, None)
    last = items[-1]
    if wanted.by_address:
        return Found(items, last.email)
    if wanted.address or (wanted.joined_from is None and wanted.joined_to is None):
        return Found(items, str(last.id))
    return Found(items, _signup_cursor(last))


def all_lists(engine: Engine) -> list[str]:
    """Every list's name, in order."""
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(L.name).order_by(L.name)))


# -- one subscriber and everything that happened to them -------------------------------------

HISTORY_MAX = 1000  # the newest entries of each kind a profile gathers
D = db.deliveries.c
P = db.provider_events.c
C = db.clicks.c


@dataclass(frozen=True)
class Happening:
    """One line of a subscriber's history: ``source`` is ``event`` (a change of their
    own or an editor's, from ``subscriber_events``), ``delivery``, ``report`` (what a
    provider's webhook said) or ``click``."""

    at: datetime
    source: str
    kind: str
    detail: str
    issue_id: int | None = None


@dataclass(frozen=True)
class Profile:
    subscriber: Detail
    history: tuple[Happening, ...]  # newest first
    cut: bool  # True when there was more than HISTORY_MAX of some kind
    lists: tuple[str, ...]  # every list there is, for choosing


def _history(conn: Connection, subscriber_id: int, limit: int) -> tuple[list[Happening], bool]:
    found: list[Happening] = []
    cut = False

    def gather(query: sa.Select[Any], make: Any) -> None:
        nonlocal cut
        rows = conn.execute(query.limit(limit + 1)).all()
        cut = cut or len(rows) > limit
        found.extend(make(r) for r in rows[:limit])

    gather(
        sa.select(E.at, E.kind, E.detail)
        .where(E.subscriber_id == subscriber_id)
        .order_by(E.at.desc(), E.id.desc()),
        lambda r: Happening(r.at, "event", r.kind, r.detail),
    )
    issues = db.issues.c
    gather(
        sa.select(D.updated_at, D.status, D.reason, D.issue_id, issues.subject)
        .join(db.issues, issues.id == D.issue_id)
        .where(D.subscriber_id == subscriber_id)
        .order_by(D.updated_at.desc()),
        lambda r: Happening(
            r.updated_at,
            "delivery",
            r.status,
            f"“{r.subject}”" + (f": {r.reason}" if r.reason else ""),
            int(r.issue_id),
        ),
    )
    gather(
        sa.select(P.at, P.kind, P.provider, P.issue_id)
        .where(P.subscriber_id == subscriber_id)
        .order_by(P.at.desc()),
        lambda r: Happening(
            r.at,
            "report",
            r.kind,
            f"{r.provider} reported {r.kind.replace('_', ' ')}",
            None if r.issue_id is None else int(r.issue_id),
        ),
    )
    links = db.issue_links.c
    gather(
        sa.select(C.at, C.issue_id, C.engaged, links.url)
        .join(
            db.issue_links,
            sa.and_(links.issue_id == C.issue_id, links.position == C.position),
        )
        .where(C.subscriber_id == subscriber_id)
        .order_by(C.at.desc(), C.id.desc()),
        lambda r: Happening(
            r.at,
            "click",
            "click" if r.engaged else "not engagement",
            r.url,
            int(r.issue_id),
        ),
    )
    found.sort(key=lambda h: h.at, reverse=True)
    return found, cut


def profile(engine: Engine, subscriber_id: int, limit: int = HISTORY_MAX) -> Profile | None:
    """The subscriber (``detail``), their whole history newest first (at most ``limit``
    entries of each kind) and the lists there are; None when there is no such
    subscriber (or they were erased)."""
    found = detail(engine, subscriber_id, events=0)
    if found is None:
        return None
    with engine.connect() as conn:
        history, cut = _history(conn, subscriber_id, limit)
    return Profile(found, tuple(history), cut, tuple(all_lists(engine)))


# -- the suppression list -------------------------------------------------------------------

SUPPRESSED = (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)


@dataclass(frozen=True)
class Suppression:
    id: int
    email: str
    status: str  # bounced or complained
    since: datetime | None  # when the status was set
    reason: str  # what the provider (or whoever suppressed it) said


@dataclass(frozen=True)
class Suppressions:
    items: list[Suppression]
    next: int | None  # the ``after`` of the next page (older ones); None: the last page


def suppressed(
    engine: Engine, status: str | None = None, after: int = 0, limit: int = SEARCH_PAGE
) -> Suppressions:
    """Addresses no mail goes to because they bounced or complained (or ``status``,
    one of the two), newest first, before id ``after`` (0: from the newest)."""
    kinds = list(SUPPRESSED)
    if status is not None:
        if status not in kinds:
            raise ValueError(f"{status!r} is not a suppression: choose bounced or complained")
        kinds = [SubscriberStatus(status)]
    with engine.connect() as conn:
        rows: list[Any] = []
        for kind in kinds:  # one range of ix_subscribers_status_id each, however few
            query = (
                sa.select(S.id, S.email, S.status, S.status_changed_at)
                .where(S.status == kind)
                .order_by(S.id.desc())
                .limit(limit + 1)
            )
            if after:
                query = query.where(S.id < after)
            rows += conn.execute(query).all()
        rows = sorted(rows, key=lambda r: int(r.id), reverse=True)[: limit + 1]
        shown = rows[:limit]
        reasons: dict[int, str] = {}
        if shown:
            for sid, detail_ in conn.execute(
                sa.select(E.subscriber_id, E.detail)
                .where(E.subscriber_id.in_([int(r.id) for r in shown]), E.kind.in_(kinds))
                .order_by(E.id)
            ):
                reasons[int(sid)] = detail_  # the last one wins
    items = [
        Suppression(int(r.id), r.email, r.status, r.status_changed_at, reasons.get(int(r.id), ""))
        for r in shown
    ]
    return Suppressions(items, items[-1].id if len(rows) > limit else None)
