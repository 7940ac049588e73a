"""The moderators' work on replies, and what a reader's own data rights reach.

A decision (approve, reject, mark as spam) applies to one reply or many at once; a ban
names the address or the IP range of replies, refuses their next ones and turns their
waiting ones into spam. Closing an article's replies refuses new ones and keeps the
approved ones shown. Spam is purged after ``reply_spam_days``. Every change names who
made it, in the reply and in the audit log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from pipeline.people import audit
from pipeline.statuses import ReplyNotify, ReplyStatus
from pipeline.store import db

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from pipeline.settings import Settings

R = db.replies.c
B = db.reply_bans.c
Decision = Literal["approve", "reject", "spam"]
STATUS_OF: dict[str, ReplyStatus] = {
    "approve": ReplyStatus.APPROVED,
    "reject": ReplyStatus.REJECTED,
    "spam": ReplyStatus.SPAM,
}
PAGE = 50


@dataclass(frozen=True)
class Held:
    """A reply as moderators see it (the address included)."""

    id: int
    slug: str
    name: str
    email: str
    website: str
    body: str
    status: str
    created_at: datetime
    answers_id: int | None
    answers_name: str
    answers_body: str
    notify: str


def queue(
    engine: Engine, status: ReplyStatus = ReplyStatus.PENDING, offset: int = 0, limit: int = PAGE
) -> tuple[list[Held], int]:
    """Replies in ``status``, oldest first for those waiting, newest first otherwise,
    with the reply each answers (its context); and how many there are."""
    answered = db.replies.alias("answered")
    a = answered.c
    order = R.id.asc() if status is ReplyStatus.PENDING else R.id.desc()
    with engine.connect() as conn:
        total = conn.scalar(sa.select(sa.func.count()).where(R.status == status)) or 0
        rows = conn.execute(
            sa.select(
                R.id,
                R.article_slug,
                R.name,
                R.email,
                R.website,
                R.body,
                R.status,
                R.created_at,
                R.answers_id,
                R.notify,
                a.name.label("answers_name"),
                a.body.label("answers_body"),
            )
            .select_from(db.replies.outerjoin(answered, a.id == R.answers_id))
            .where(R.status == status)
            .order_by(order)
            .offset(offset)
            .limit(limit)
        ).all()
    held = [_held(r, r.answers_name or "", r.answers_body or "") for r in rows]
    return held, int(total)


def _held(r: Any, answers_name: str = "", answers_body: str = "") -> Held:
    return Held(
        r.id, r.article_slug, r.name, r.email, r.website, r.body, r.status, r.created_at,
        r.answers_id, answers_name, answers_body, r.notify,
    )  # fmt: skip


def status_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(R.status, sa.func.count()).group_by(R.status)).all()
    counts = {s.value: 0 for s in ReplyStatus}
    counts.update({status: int(n) for status, n in rows})
    return counts


@dataclass(frozen=True)
class Decided:
    changed: list[int]
    approved: list[int]  # newly approved: they rank, and their answered authors are told
    slugs: list[str]  # the articles of the changed replies (one entry per reply)


def decide(
    engine: Engine, ids: Sequence[int], decision: Decision, by: str, user_id: int | None
) -> Decided:
    """Approve, reject or mark as spam the replies ``ids`` (those already so are left)."""
    status = STATUS_OF[decision]
    wanted = sorted({int(i) for i in ids})
    if not wanted:
        return Decided([], [], [])
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(R.id, R.article_slug)
            .where(R.id.in_(wanted), R.status != status)
            .order_by(R.id)
        ).all()
        changed = [r.id for r in rows]
        if changed:
            conn.execute(
                sa.update(db.replies)
                .where(R.id.in_(changed))
                .values(status=status, decided_at=db.now(), decided_by=by)
            )
            audit.record(
                conn, user_id, f"reply {decision}", f"replies {', '.join(map(str, changed))}"
            )
    approved = changed if status is ReplyStatus.APPROVED else []
    return Decided(changed, approved, [r.article_slug for r in rows])


def ban(
    engine: Engine,
    ids: Sequence[int],
    kind: Literal["address", "range"],
    by: str,
    user_id: int | None,
) -> int:
    """Ban the addresses (or IP ranges) of the replies ``ids``; their waiting replies
    become spam. Returns how many bans are new."""
    wanted = sorted({int(i) for i in ids})
    new = 0
    with engine.begin() as conn:
        rows = conn.execute(sa.select(R.id, R.email, R.range_hash).where(R.id.in_(wanted))).all()
        values: dict[str, str] = {}
        for r in rows:
            if kind == "address":
                values[r.email] = r.email
            elif r.range_hash:
                values[r.range_hash] = f"the IP range of reply {r.id}"
        for value, label in values.items():
            added = conn.execute(
                db.insert_ignore(conn, db.reply_bans)
                .values(kind=kind, value=value, label=label, created_at=db.now(), created_by=by)
                .returning(B.id)
            ).first()
            new += added is not None
        if values:
            column = R.email if kind == "address" else R.range_hash
            conn.execute(
                sa.update(db.replies)
                .where(column.in_(list(values)), R.status == ReplyStatus.PENDING)
                .values(status=ReplyStatus.SPAM, decided_at=db.now(), decided_by=by)
            )
            audit.record(
                conn, user_id, f"reply ban {kind}", f"from replies {', '.join(map(str, wanted))}"
            )
    return new


@dataclass(frozen=True)
class Ban:
    id: int
    kind: str
    label: str
    created_at: datetime
    created_by: str


def bans(engine: Engine) -> list[Ban]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(B.id, B.kind, B.label, B.created_at, B.created_by).order_by(B.id.desc())
        ).all()
    return [Ban(*r) for r in rows]


def unban(engine: Engine, ban_id: int, user_id: int | None) -> bool:
    with engine.begin() as conn:
        gone = conn.execute(sa.delete(db.reply_bans).where(B.id == ban_id)).rowcount
        if gone:
            audit.record(conn, user_id, "reply unban", f"ban {ban_id}")
    return bool(gone)


def set_closed(engine: Engine, slug: str, closed: bool, by: str, user_id: int | None) -> None:
    """Close (or open again) the replies of article ``slug``."""
    a = db.reply_articles.c
    with engine.begin() as conn:
        stmt = db.insert(conn, db.reply_articles).values(
            slug=slug, closed=closed, changed_at=db.now(), changed_by=by
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[a.slug],
                set_={"closed": closed, "changed_at": db.now(), "changed_by": by},
            )
        )
        audit.record(conn, user_id, "replies closed" if closed else "replies opened", slug)


def closed_slugs(engine: Engine) -> set[str]:
    a = db.reply_articles.c
    with engine.connect() as conn:
        return set(conn.scalars(sa.select(a.slug).where(a.closed)))


def counts(engine: Engine) -> dict[str, dict[str, int]]:
    """Per article: its approved and waiting replies (the console's article list)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(R.article_slug, R.status, sa.func.count())
            .where(R.status.in_([ReplyStatus.APPROVED, ReplyStatus.PENDING]))
            .group_by(R.article_slug, R.status)
        ).all()
    out: dict[str, dict[str, int]] = {}
    for slug, status, n in rows:
        out.setdefault(slug, {"approved": 0, "pending": 0})[
            "approved" if status == ReplyStatus.APPROVED else "pending"
        ] = int(n)
    return out


def purge_spam(engine: Engine, settings: Settings, now: datetime | None = None) -> int:
    """Delete spam older than ``reply_spam_days``; how many went."""
    cutoff = (now or db.now()) - timedelta(days=settings.reply_spam_days)
    with engine.begin() as conn:
        # Answers to a purged reply lose their link to it (ON DELETE SET NULL).
        gone = conn.execute(
            sa.delete(db.replies).where(R.status == ReplyStatus.SPAM, R.created_at < cutoff)
        ).rowcount
    return int(gone or 0)


def take_digest(engine: Engine) -> list[Held]:
    """The waiting replies no moderator has been told of yet, marked as told."""
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(db.replies)
            .where(R.status == ReplyStatus.PENDING, R.in_digest.is_(False))
            .order_by(R.id)
            .limit(200)
        ).all()
        if rows:
            told = [r.id for r in rows]
            conn.execute(sa.update(db.replies).where(R.id.in_(told)).values(in_digest=True))
    return [_held(r) for r in rows]


def untake_digest(engine: Engine, ids: Iterable[int]) -> None:
    """The digest could not be sent: its replies go in the next one."""
    with engine.begin() as conn:
        conn.execute(sa.update(db.replies).where(R.id.in_(list(ids))).values(in_digest=False))


@dataclass(frozen=True)
class Notice:
    """Tell the author of reply ``answered_id`` (``to``) that ``reply_id`` answers it."""

    reply_id: int
    answered_id: int
    to: str
    to_name: str
    slug: str
    name: str
    body: str


def notices(engine: Engine, approved_ids: Sequence[int]) -> list[Notice]:
    """Who is to be told of the newly approved replies ``approved_ids``: the authors of
    the replies they answer who turned notifications on, but never of their own."""
    if not approved_ids:
        return []
    answered = db.replies.alias("answered")
    a = answered.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                R.id, R.answers_id, a.email, a.name.label("to_name"), R.article_slug, R.name, R.body
            )
            .join(answered, a.id == R.answers_id)
            .where(
                R.id.in_(list(approved_ids)),
                R.status == ReplyStatus.APPROVED,
                a.notify == ReplyNotify.ON,
                a.email != R.email,
            )
        ).all()
    return [
        Notice(r.id, r.answers_id, r.email, r.to_name, r.article_slug, r.name, r.body) for r in rows
    ]


def reply_email(engine: Engine, reply_id: int) -> tuple[str, str] | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(R.email, R.name).where(R.id == reply_id)).first()
    return None if row is None else (row.email, row.name)


def confirm_notify(engine: Engine, reply_id: int) -> int:
    """The address of ``reply_id`` confirmed it wants notifications: every one of its
    replies that asked for them gets them. How many changed (0: nothing to confirm)."""
    with engine.begin() as conn:
        email = conn.scalar(sa.select(R.email).where(R.id == reply_id))
        if email is None:
            return 0
        return int(
            conn.execute(
                sa.update(db.replies)
                .where(R.email == email, R.notify == ReplyNotify.UNCONFIRMED)
                .values(notify=ReplyNotify.ON)
            ).rowcount
            or 0
        )


def stop_notify(engine: Engine, reply_id: int) -> bool:
    """No more notifications for the address of ``reply_id``, of any of its replies.
    False when the reply is gone."""
    with engine.begin() as conn:
        email = conn.scalar(sa.select(R.email).where(R.id == reply_id))
        if email is None:
            return False
        conn.execute(
            sa.update(db.replies)
            .where(R.email == email, R.notify != ReplyNotify.OFF)
            .values(notify=ReplyNotify.OFF)
        )
    return True


# -- the reader's data ------------------------------------------------------------------------


def export_for(conn: Connection, email: str) -> list[dict[str, Any]]:
    """The replies written from ``email``, for the subscriber's data export."""
    rows = conn.execute(
        sa.select(R.id, R.article_slug, R.name, R.website, R.body, R.status, R.notify, R.created_at)
        .where(R.email == email)
        .order_by(R.id)
    ).all()
    return [
        {
            "id": r.id,
            "article": r.article_slug,
            "name": r.name,
            "website": r.website,
            "text": r.body,
            "status": r.status,
            "notifications": r.notify,
            "created_at": r.created_at.isoformat(),
        }
        for r in rows
    ]


ANONYMOUS = "a reader"


def writers(engine: Engine, ids: Sequence[int]) -> list[tuple[str, int]]:
    """The addresses that wrote the replies ``ids``, each with how many replies it has
    in all (what ``erase_writers`` would erase)."""
    wanted = sorted({int(i) for i in ids})
    with engine.connect() as conn:
        emails = sa.select(R.email).where(R.id.in_(wanted), R.email != "").distinct()
        rows = conn.execute(
            sa.select(R.email, sa.func.count())
            .where(R.email.in_(emails.scalar_subquery()))
            .group_by(R.email)
            .order_by(R.email)
        ).all()
    return [(email, int(n)) for email, n in rows]


def erase_writers(
    engine: Engine, settings: Settings, ids: Sequence[int], user_id: int | None
) -> int:
    """Erase every reply of the addresses that wrote the replies ``ids`` (a reader who
    is not a subscriber asks a moderator), as ``erase_for`` does; how many changed."""
    wanted = sorted({int(i) for i in ids})
    with engine.begin() as conn:
        emails = sorted(
            set(conn.scalars(sa.select(R.email).where(R.id.in_(wanted), R.email != "")))
        )
        changed = sum(erase_for(conn, settings, email) for email in emails)
        if emails:
            audit.record(
                conn,
                user_id,
                "reply erase",
                f"{len(emails)} addresses, from replies {', '.join(map(str, wanted))}",
            )
    return changed


def erase_for(conn: Connection, settings: Settings, email: str) -> int:
    """Remove the replies written from ``email`` (``reply_erasure = "remove"``), or keep
    their text as ``a reader``'s with nothing that names the writer (``anonymise``)."""
    if settings.reply_erasure == "anonymise":
        result = conn.execute(
            sa.update(db.replies)
            .where(R.email == email)
            .values(name=ANONYMOUS, email="", website="", range_hash="", notify=ReplyNotify.OFF)
        )
    else:
        result = conn.execute(sa.delete(db.replies).where(R.email == email))
    return int(result.rowcount or 0)
