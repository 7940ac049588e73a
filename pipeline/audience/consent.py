"""What subscribers decide for themselves: joining (double opt-in), leaving, their
preferences, and their data (export and erasure). The HTTP service calls these; so can
anything else.

Every change is one transaction and leaves a ``subscriber_events`` row saying what
happened and how (``one-click``, ``page``, ``mailgun``, ...). A change of status stamps
``status_changed_at``. A running send reads status, pause and lists before each batch:
whoever leaves is skipped from the next batch on.
"""

from __future__ import annotations

import html as html_lib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.audience.lists import check_list_name, ensure_list
from pipeline.audience.subscribers import check_time_zone, normalise_email
from pipeline.audience.tokens import Signer
from pipeline.errors import NotFound
from pipeline.render.templating import environment, site_context
from pipeline.replies import moderation
from pipeline.sending.providers.base import Message, Recipient
from pipeline.settings import Settings
from pipeline.store import db

log = logging.getLogger(__name__)

S = db.subscribers.c
M = db.memberships.c
SUPPRESSED = frozenset({"bounced", "complained"})


def event(conn: Connection, subscriber_id: int, kind: str, detail: str = "") -> None:
    conn.execute(
        sa.insert(db.subscriber_events).values(
            subscriber_id=subscriber_id, at=db.now(), kind=kind, detail=detail[:2000]
        )
    )


def _set_status(conn: Connection, subscriber_id: int, status: str, from_: Iterable[str]) -> bool:
    at = db.now()
    values: dict[str, Any] = {"status": status, "updated_at": at, "status_changed_at": at}
    if status == "active":
        values["confirmed_at"] = at
    return bool(
        conn.execute(
            sa.update(db.subscribers)
            .where(S.id == subscriber_id, S.status.in_(list(from_)))
            .values(**values)
        ).rowcount
    )


# -- joining ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signup:
    """What a sign-up led to. ``mail`` is the email to send: ``confirm`` (a new or
    returning address), ``known`` (already subscribed: a note with their preferences
    link) or ``None`` (a suppressed address: nothing, ever)."""

    subscriber_id: int
    mail: str | None


def check_lists(requested: Sequence[str], settings: Settings) -> list[str]:
    """The lists a person may choose themselves: ``public_lists``; none means the first."""
    names = [check_list_name(n) for n in requested] or settings.public_lists[:1]
    unknown = [n for n in names if n not in settings.public_lists]
    if unknown:
        raise ValueError(
            f"unknown list {unknown[0]!r}: choose from {', '.join(settings.public_lists)}"
        )
    return list(dict.fromkeys(names))


def signup(
    engine: Engine, settings: Settings, email: str, name: str = "", lists: Sequence[str] = ()
) -> Signup:
    """Record a sign-up. A new address is ``pending`` until it confirms; the lists are
    noted now and count from the confirmation. Raises ValueError for a bad address,
    name or list."""
    address = normalise_email(email)
    clean_name = check_name(name)
    names = check_lists(lists, settings)
    at = db.now()
    with engine.begin() as conn:
        row = conn.execute(sa.select(S.id, S.status).where(S.email == address)).first()
        if row is None:
            subscriber_id = int(
                conn.execute(
                    sa.insert(db.subscribers)
                    .values(
                        email=address,
                        name=clean_name,
                        status="pending",
                        attributes={},
                        created_at=at,
                        updated_at=at,
                        status_changed_at=at,
                    )
                    .returning(S.id)
                ).scalar_one()
            )
            status = "pending"
        else:
            subscriber_id, status = int(row.id), row.status
        if status in SUPPRESSED:
            event(conn, subscriber_id, "signup-refused", f"the address is {status}")
            return Signup(subscriber_id, None)
        _join(conn, subscriber_id, names, at)
        event(conn, subscriber_id, "signup", ", ".join(names))
    return Signup(subscriber_id, "known" if status == "active" else "confirm")


def check_name(name: str) -> str:
    """A display name: one line (a name goes into headers), at most 200 characters."""
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029" for c in name):
        raise ValueError("the name contains control characters (line breaks, tabs)")
    name = " ".join(name.split())
    if len(name) > 200:
        raise ValueError("the name is longer than 200 characters")
    return name


def _join(conn: Connection, subscriber_id: int, names: Iterable[str], at: datetime) -> None:
    for name in names:
        conn.execute(
            db.insert_ignore(conn, db.memberships).values(
                list_id=ensure_list(conn, name), subscriber_id=subscriber_id, created_at=at
            )
        )


def confirm(engine: Engine, subscriber_id: int) -> bool:
    """The confirmation link was followed: pending (or unsubscribed and back) becomes
    active. False when there was nothing to confirm (already active, or suppressed)."""
    with engine.begin() as conn:
        changed = _set_status(conn, subscriber_id, "active", ("pending", "unsubscribed"))
        if changed:
            event(conn, subscriber_id, "confirmed")
        elif conn.scalar(sa.select(S.id).where(S.id == subscriber_id)) is None:
            raise NotFound(f"no subscriber with id {subscriber_id}")
    return changed


# -- leaving ------------------------------------------------------------------------------


def unsubscribe(engine: Engine, subscriber_id: int, list_id: int, via: str) -> bool:
    """Leave one list (``list_id``), or everything (0). Leaving the last list is
    leaving. Idempotent; True when something changed. Unknown ids change nothing."""
    with engine.begin() as conn:
        return leave(conn, subscriber_id, list_id, via)


def leave(conn: Connection, subscriber_id: int, list_id: int, via: str) -> bool:
    changed = False
    if list_id:
        changed = bool(
            conn.execute(
                sa.delete(db.memberships).where(
                    M.subscriber_id == subscriber_id, M.list_id == list_id
                )
            ).rowcount
        )
        remaining = conn.scalar(sa.select(sa.func.count()).where(M.subscriber_id == subscriber_id))
        if remaining:  # still on other lists: leaving this one is all that was asked
            if changed:
                name = conn.scalar(sa.select(db.lists.c.name).where(db.lists.c.id == list_id))
                event(conn, subscriber_id, "left-list", f"{name} ({via})")
            return changed
    if _set_status(conn, subscriber_id, "unsubscribed", ("active", "pending")):
        event(conn, subscriber_id, "unsubscribed", via)
        return True
    return changed


def leave_everything(conn: Connection, subscriber_ids: Sequence[int], via: str) -> set[int]:
    """``leave(conn, id, 0, via)`` for many subscribers in two statements; the ids
    whose status changed."""
    at = db.now()
    changed = {
        int(i)
        for i in conn.scalars(
            sa.update(db.subscribers)
            .where(S.id.in_(sorted(set(subscriber_ids))), S.status.in_(["active", "pending"]))
            .values(status="unsubscribed", updated_at=at, status_changed_at=at)
            .returning(S.id)
        )
    }
    if changed:
        conn.execute(
            sa.insert(db.subscriber_events),
            [
                {"subscriber_id": i, "at": at, "kind": "unsubscribed", "detail": via}
                for i in sorted(changed)
            ],
        )
    return changed


def suppress(conn: Connection, subscriber_id: int, status: str, reason: str) -> bool:
    """A hard bounce or a complaint: no more mail to the address, whatever it chose."""
    if status not in SUPPRESSED:
        raise ValueError(f"{status!r} does not suppress an address")
    others = ("pending", "active", "unsubscribed", "bounced")
    changed = _set_status(conn, subscriber_id, status, [s for s in others if s != status])
    if changed:
        event(conn, subscriber_id, status, reason)
    return changed


# -- preferences --------------------------------------------------------------------------


@dataclass(frozen=True)
class Preferences:
    subscriber_id: int
    email: str
    name: str
    status: str
    paused: bool
    time_zone: str
    lists: dict[str, bool] = field(default_factory=dict)  # public list -> member


def preferences(engine: Engine, settings: Settings, subscriber_id: int) -> Preferences:
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.subscribers).where(S.id == subscriber_id)).first()
        if row is None:
            raise NotFound(f"no subscriber with id {subscriber_id}")
        member = set(
            conn.scalars(
                sa.select(db.lists.c.name)
                .join(db.memberships, M.list_id == db.lists.c.id)
                .where(M.subscriber_id == subscriber_id)
            )
        )
    return Preferences(
        subscriber_id=subscriber_id,
        email=row.email,
        name=row.name,
        status=row.status,
        paused=bool(row.paused),
        time_zone=row.time_zone,
        lists={name: name in member for name in settings.public_lists},
    )


def update_preferences(
    engine: Engine,
    settings: Settings,
    subscriber_id: int,
    *,
    lists: Sequence[str],
    time_zone: str,
    paused: bool,
    name: str | None = None,
) -> Preferences:
    """Set the public lists, time zone, pause (and name). Choosing a list again after
    unsubscribing is coming back: the signed link proves the address. Choosing none
    is unsubscribing."""
    chosen = [check_list_name(n) for n in lists]
    unknown = [n for n in chosen if n not in settings.public_lists]
    if unknown:
        raise ValueError(f"unknown list {unknown[0]!r}")
    zone = check_time_zone(time_zone)
    at = db.now()
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(S.status, S.paused, S.time_zone, S.name).where(S.id == subscriber_id)
        ).first()
        if row is None:
            raise NotFound(f"no subscriber with id {subscriber_id}")
        values: dict[str, Any] = {"time_zone": zone, "paused": paused, "updated_at": at}
        if name is not None:
            values["name"] = check_name(name)
        conn.execute(sa.update(db.subscribers).where(S.id == subscriber_id).values(**values))
        public = {n: ensure_list(conn, n) for n in settings.public_lists}
        left = [public[n] for n in settings.public_lists if n not in chosen]
        if left:
            conn.execute(
                sa.delete(db.memberships).where(
                    M.subscriber_id == subscriber_id, M.list_id.in_(left)
                )
            )
        _join(conn, subscriber_id, chosen, at)
        changes = [f"lists: {', '.join(chosen) or 'none'}", f"time zone: {zone}"]
        if bool(row.paused) != paused:
            changes.append("paused" if paused else "resumed")
        event(conn, subscriber_id, "preferences", "; ".join(changes))
        remaining = conn.scalar(sa.select(sa.func.count()).where(M.subscriber_id == subscriber_id))
        if not remaining:
            leave(conn, subscriber_id, 0, "preferences")
        elif chosen and row.status == "unsubscribed":
            _set_status(conn, subscriber_id, "active", ("unsubscribed",))
            event(conn, subscriber_id, "resubscribed", "preferences")
    return preferences(engine, settings, subscriber_id)


# -- their data (GDPR) ----------------------------------------------------------------------


def export(engine: Engine, subscriber_id: int, via: str | None = None) -> dict[str, Any]:
    """Everything held about the subscriber, as JSON-ready data (the right of access).
    With ``via`` (who asked: ``link``, ``console``), the export is recorded first as an
    ``exported`` event, which it then includes."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    if via is not None:
        with engine.begin() as conn:
            if conn.scalar(sa.select(S.id).where(S.id == subscriber_id)) is None:
                raise NotFound(f"no subscriber with id {subscriber_id}")
            event(conn, subscriber_id, "exported", via)
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.subscribers).where(S.id == subscriber_id)).first()
        if row is None:
            raise NotFound(f"no subscriber with id {subscriber_id}")
        lists = list(
            conn.scalars(
                sa.select(db.lists.c.name)
                .join(db.memberships, M.list_id == db.lists.c.id)
                .where(M.subscriber_id == subscriber_id)
                .order_by(db.lists.c.name)
            )
        )
        events = conn.execute(
            sa.select(db.subscriber_events)
            .where(db.subscriber_events.c.subscriber_id == subscriber_id)
            .order_by(db.subscriber_events.c.id)
        ).all()
        d = db.deliveries.c
        deliveries = conn.execute(
            sa.select(d.issue_id, d.status, d.updated_at, d.feedback, d.feedback_at)
            .where(d.subscriber_id == subscriber_id)
            .order_by(d.issue_id)
        ).all()
        clicks = _clicks(conn, subscriber_id)
        replies = moderation.export_for(conn, row.email)
    return {
        "email": row.email,
        "name": row.name,
        "status": row.status,
        "paused": bool(row.paused),
        "time_zone": row.time_zone,
        "attributes": row.attributes,
        "lists": lists,
        "created_at": iso(row.created_at),
        "confirmed_at": iso(row.confirmed_at),
        "events": [{"at": iso(e.at), "kind": e.kind, "detail": e.detail} for e in events],
        "deliveries": [
            {
                "issue": r.issue_id,
                "status": r.status,
                "at": iso(r.updated_at),
                "feedback": r.feedback,
                "feedback_at": iso(r.feedback_at),
            }
            for r in deliveries
        ],
        "clicks": [{"issue": r.issue_id, "url": r.url, "at": iso(r.at)} for r in clicks],
        "replies": replies,
    }


def _clicks(conn: sa.Connection, subscriber_id: int) -> list[Any]:
    """Each link the subscriber followed, with its issue and when."""
    c, links = db.clicks.c, db.issue_links.c
    return list(
        conn.execute(
            sa.select(c.issue_id, links.url, c.at)
            .join(
                db.issue_links,
                sa.and_(links.issue_id == c.issue_id, links.position == c.position),
            )
            .where(c.subscriber_id == subscriber_id)
            .order_by(c.id)
        ).all()
    )


def erase(engine: Engine, subscriber_id: int, settings: Settings) -> bool:
    """Delete the subscriber and everything that names them (the right to erasure).

    Issue totals keep their counts; what is left of a delivery holds no personal data.
    Their replies to articles are removed, or kept as "a reader"'s
    (``reply_erasure``). False when there was nobody to delete."""
    with engine.begin() as conn:
        d = db.deliveries.c
        email = conn.scalar(sa.select(S.email).where(S.id == subscriber_id))
        if email is not None:
            moderation.erase_for(conn, settings, email)
        conn.execute(sa.delete(db.clicks).where(db.clicks.c.subscriber_id == subscriber_id))
        conn.execute(
            sa.delete(db.subscriber_events).where(
                db.subscriber_events.c.subscriber_id == subscriber_id
            )
        )
        conn.execute(
            sa.update(db.deliveries)
            .where(d.subscriber_id == subscriber_id)
            .values(reason=sa.case((d.reason.is_(None), None), else_="erased"))
        )
        conn.execute(
            sa.update(db.provider_events)
            .where(db.provider_events.c.subscriber_id == subscriber_id)
            .values(subscriber_id=None)
        )
        gone = conn.execute(sa.delete(db.subscribers).where(S.id == subscriber_id)).rowcount
    if gone:
        log.info("subscriber %s erased at their request", subscriber_id)
    return bool(gone)


# -- the emails of the sign-up --------------------------------------------------------------


def signup_message(
    settings: Settings, signer: Signer, signup: Signup, email: str, name: str
) -> tuple[Message, Recipient]:
    """The confirmation (or "you are already subscribed") email, ready for a provider."""
    assert signup.mail is not None
    base = settings.base_url
    sid = signup.subscriber_id
    context = {
        **site_context(settings),
        "kind": signup.mail,
        "name": name,
        "confirm_url": f"{base}/confirm/{signer.sign_dated('confirm', sid)}",
        "preferences_url": f"{base}/preferences/{signer.sign('preferences', sid)}",
        "confirm_hours": int(settings.confirm_hours),
    }
    env = environment(settings.templates_dir)
    subject = (
        f"Confirm your subscription to {settings.site_name}"
        if signup.mail == "confirm"
        else f"You are already subscribed to {settings.site_name}"
    )
    message = Message(
        subject=subject,
        html=env.get_template("email/signup.html").render(context),
        text=env.get_template("email/signup.txt").render(context),
        from_name=settings.sender_name,
        from_email=settings.sender_email,
        tag="signup",
        metadata={"kind": f"signup-{signup.mail}"},  # the outbox files it there
    )
    recipient = Recipient(
        subscriber_id=sid,
        email=email,
        name=name,
        fields={"name": name, "name_html": html_lib.escape(name)},
        headers={},
    )
    return message, recipient
