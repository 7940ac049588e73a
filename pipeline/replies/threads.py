"""Posting a reply, and the approved replies of an article as the public sees them.

Whether a new reply waits for a moderator is ``reply_moderation``: ``all`` hold every
reply, ``first`` (the default) holds an address's replies until one of them is
approved, ``none`` publishes at once. A reply with a word of ``reply_blocklist`` is
spam: kept out of sight. Replies from a banned address or IP range, and to an article
whose replies are closed, are refused.

Threads are one level deep: a reply to a reply joins the thread of the reply it
answers, and its ``answers_id`` remembers which one it answered (that author may be
told). The public never sees an address: ``PublicReply`` has none.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from pipeline.replies.text import Fields, Paragraph, blocked_word, segments
from pipeline.statuses import ReplyNotify, ReplyStatus, SubscriberStatus
from pipeline.store import db

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from pipeline.settings import Settings

R = db.replies.c


@dataclass(frozen=True)
class NewReply:
    slug: str
    fields: Fields
    answers_id: int | None  # the reply it answers; None for a reply to the article
    notify: bool  # the reader asked to be told of replies to this one
    range_hash: str  # ``range_hash`` of the poster's address


@dataclass(frozen=True)
class Posted:
    id: int
    status: ReplyStatus
    notify: ReplyNotify
    slug: str
    email: str
    name: str
    website: str
    body: str
    parent_id: int | None
    created_at: datetime

    def public(self) -> PublicReply:
        """The reply as the public sees it (once it is approved)."""
        return PublicReply(
            self.id, self.parent_id, self.name, self.website, self.created_at, segments(self.body)
        )


@dataclass(frozen=True)
class Closed:
    """The reply was not stored: ``why`` says so to the reader, ``status`` is the HTTP
    status of the answer."""

    why: str
    status: int = 403


@dataclass(frozen=True)
class PublicReply:
    id: int
    parent_id: int | None
    name: str
    website: str
    created_at: datetime
    paragraphs: list[Paragraph]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "name": self.name,
            "website": self.website,
            "date": self.created_at.isoformat(timespec="seconds"),
            "paragraphs": self.paragraphs,
        }


@dataclass(frozen=True)
class Thread:
    reply: PublicReply
    answers: list[PublicReply]


def range_of(client: str) -> str:
    """The IP range a ban names: the /24 of an IPv4 address, the /48 of an IPv6 one
    (``client`` is ``pipeline.web.limits.client_of``: an address or a /64)."""
    try:
        network = ipaddress.ip_network(client, strict=False)
    except ValueError:
        return client
    prefix = 24 if network.version == 4 else 48
    return str(network.supernet(new_prefix=prefix)) if network.prefixlen > prefix else str(network)


def range_hash(secret: str, client: str) -> str:
    """The keyed hash of ``client``'s range that replies and bans store instead of it."""
    key = secret.encode("utf-8")
    return hmac.new(key, f"range|{range_of(client)}".encode(), hashlib.sha256).hexdigest()[:32]


def is_closed(conn: Connection, slug: str) -> bool:
    a = db.reply_articles.c
    return bool(conn.scalar(sa.select(a.closed).where(a.slug == slug)))


CLOSED = "Replies to this article are closed."
GONE = "The reply you answered is not on this page any more."
BANNED = "Replies from this address are not accepted."


def post(conn: Connection, settings: Settings, new: NewReply) -> Posted | Closed:
    """Store ``new`` in ``conn``'s transaction, held, published or as spam; ``Closed``
    when it may not be stored (closed, banned, or answering a reply that is not shown on
    this article)."""
    return post_many(conn, settings, [new])[0]


def post_many(
    conn: Connection, settings: Settings, news: Sequence[NewReply]
) -> list[Posted | Closed]:
    """``post`` for several replies at once (the group writer's): one query for the
    closed articles, the bans and the addresses already approved, one for the replies
    answered (if any), and one INSERT for them all."""
    if not news:
        return []
    a, b = db.reply_articles.c, db.reply_bans.c
    slugs = sorted({n.slug for n in news})
    emails = sorted({n.fields.email for n in news})
    ranges = sorted({n.range_hash for n in news})
    # What the group's replies need to know, in one round trip: closed articles, bans,
    # and (for ``first``) the addresses with an approved reply already.
    facts = [
        sa.select(sa.literal("closed").label("what"), a.slug.label("value")).where(
            a.slug.in_(slugs), a.closed
        ),
        sa.select(b.kind, b.value).where(
            sa.or_(
                sa.and_(b.kind == "address", b.value.in_(emails)),
                sa.and_(b.kind == "range", b.value.in_(ranges)),
            )
        ),
    ]
    if settings.reply_moderation == "first":
        facts.append(
            sa.select(sa.literal("known"), R.email)
            .where(R.email.in_(emails), R.status == ReplyStatus.APPROVED)
            .distinct()
        )
    known_facts = {(r[0], r[1]) for r in conn.execute(sa.union_all(*facts))}
    closed = {value for what, value in known_facts if what == "closed"}
    bans = {(what, value) for what, value in known_facts if what in ("address", "range")}
    known = {value for what, value in known_facts if what == "known"}
    wanted = sorted({n.answers_id for n in news if n.answers_id is not None})
    answered = {
        r.id: r
        for r in conn.execute(
            sa.select(R.id, R.parent_id, R.article_slug).where(
                R.id.in_(wanted), R.status == ReplyStatus.APPROVED
            )
        )
    } if wanted else {}  # fmt: skip
    confirmed: set[str] = set()
    asking = sorted({n.fields.email for n in news if n.notify})
    if asking:
        s = db.subscribers.c
        confirmed = set(
            conn.scalars(
                sa.select(s.email).where(s.email.in_(asking), s.status == SubscriberStatus.ACTIVE)
            )
        ) | set(
            conn.scalars(sa.select(R.email).where(R.email.in_(asking), R.notify == ReplyNotify.ON))
        )
    results: list[Posted | Closed | None] = []
    rows: list[dict[str, Any]] = []
    now = db.now()
    for new in news:
        f = new.fields
        if new.slug in closed:
            results.append(Closed(CLOSED))
            continue
        if ("address", f.email) in bans or ("range", new.range_hash) in bans:
            results.append(Closed(BANNED))
            continue
        parent_id = answers_id = None
        if new.answers_id is not None:
            found = answered.get(new.answers_id)
            if found is None or found.article_slug != new.slug:
                results.append(Closed(GONE, 400))
                continue
            answers_id = found.id
            parent_id = found.parent_id or found.id
        status = _status(settings, f, f.email in known)
        if status is ReplyStatus.APPROVED:
            known.add(f.email)  # a second reply in the same group needs no moderator either
        notify = ReplyNotify.OFF
        if new.notify and status is not ReplyStatus.SPAM:
            notify = ReplyNotify.ON if f.email in confirmed else ReplyNotify.UNCONFIRMED
        results.append(None)
        rows.append(
            {
                "article_slug": new.slug,
                "parent_id": parent_id,
                "answers_id": answers_id,
                "name": f.name,
                "email": f.email,
                "website": f.website,
                "body": f.body,
                "status": status,
                "notify": notify,
                "range_hash": new.range_hash,
                "created_at": now,
                "decided_at": now if status is ReplyStatus.APPROVED else None,
                "decided_by": "published at once" if status is ReplyStatus.APPROVED else "",
            }
        )
    ids: list[int] = []
    if rows:
        ids = list(
            conn.scalars(sa.insert(db.replies).returning(R.id, sort_by_parameter_order=True), rows)
        )
    stored = iter(zip(ids, rows, strict=True))
    out: list[Posted | Closed] = []
    for result in results:
        if result is not None:
            out.append(result)
            continue
        reply_id, row = next(stored)
        out.append(
            Posted(
                reply_id,
                row["status"],
                row["notify"],
                row["article_slug"],
                row["email"],
                row["name"],
                row["website"],
                row["body"],
                row["parent_id"],
                row["created_at"],
            )
        )
    return out


def _status(settings: Settings, f: Fields, known: bool) -> ReplyStatus:
    if blocked_word(settings, f) is not None:
        return ReplyStatus.SPAM
    if settings.reply_moderation == "none":
        return ReplyStatus.APPROVED
    if settings.reply_moderation == "first" and known:
        return ReplyStatus.APPROVED
    return ReplyStatus.PENDING


def approved(conn: Connection, slug: str) -> list[Thread]:
    """The approved replies of ``slug``, oldest first, each with its answers."""
    rows = conn.execute(
        sa.select(R.id, R.parent_id, R.name, R.website, R.created_at, R.body)
        .where(R.article_slug == slug, R.status == ReplyStatus.APPROVED)
        .order_by(R.id)
    ).all()
    shown = [
        PublicReply(r.id, r.parent_id, r.name, r.website, r.created_at, segments(r.body))
        for r in rows
    ]
    threads: dict[int, Thread] = {}
    for reply in shown:
        parent = threads.get(reply.parent_id) if reply.parent_id is not None else None
        if parent is not None:
            parent.answers.append(reply)
        else:  # a reply to the article, or one whose thread is no longer shown
            threads[reply.id] = Thread(reply, [])
    return list(threads.values())


def load(engine: Engine, slug: str) -> list[Thread]:
    with engine.connect() as conn:
        return approved(conn, slug)


def closed(engine: Engine, slug: str) -> bool:
    with engine.connect() as conn:
        return is_closed(conn, slug)


def public_json(threads: list[Thread]) -> list[dict[str, Any]]:
    return [{**t.reply.to_json(), "answers": [a.to_json() for a in t.answers]} for t in threads]
