"""What became of an issue, for the editors' console: who it will go to before it is
scheduled, what the provider said afterwards (``deliveries.feedback``), the clicks on
each article, the failed deliveries with their reasons and the ambiguous batches that
wait for someone to reconcile them (``recover.reconcile``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.sending import issues, prepare
from pipeline.statuses import BatchStatus, DeliveryStatus
from pipeline.store import db

D = db.deliveries.c
S = db.subscribers.c


@dataclass(frozen=True)
class Feedback:
    """Deliveries of the issue by the provider's latest word on each (webhooks)."""

    delivered: int = 0
    soft_bounced: int = 0
    bounced: int = 0
    complained: int = 0
    unsubscribed: int = 0
    unknown: int = 0  # sent, and nothing heard since

    @property
    def heard(self) -> int:
        return (
            self.delivered + self.soft_bounced + self.bounced + self.complained + self.unsubscribed
        )


@dataclass(frozen=True)
class Failure:
    email: str | None  # None: the subscriber has been erased since
    reason: str
    at: datetime


@dataclass(frozen=True)
class ArticleClicks:
    slug: str
    clicks: int
    subscribers: int  # distinct subscribers who clicked any link to the article


@dataclass(frozen=True)
class AmbiguousBatch:
    id: int
    seq: int
    recipients: int  # deliveries still queued in it: the ones in doubt
    since: datetime


def recipients_now(engine: Engine, issue_id: int) -> int:
    """How many subscribers the issue would go to if it started now: active members of
    its lists (everyone if it names none), confirmed by now."""
    issue = issues.get(engine, issue_id)
    with engine.connect() as conn:
        return prepare.recipients_now(conn, issue.audience)


def feedback(engine: Engine, issue_id: int) -> Feedback:
    """The provider feedback on the issue's sent deliveries: the counts the database's
    triggers keep in ``issue_feedback``; those not heard of yet are the rest of ``sent``."""
    f = db.issue_feedback.c
    with engine.connect() as conn:
        counts = {
            str(kind): int(n)
            for kind, n in conn.execute(sa.select(f.kind, f.n).where(f.issue_id == issue_id))
        }
        sent = int(conn.scalar(sa.select(db.issues.c.sent).where(db.issues.c.id == issue_id)) or 0)
    return Feedback(
        delivered=counts.get("delivered", 0),
        soft_bounced=counts.get("soft_bounce", 0),
        bounced=counts.get("bounced", 0),
        complained=counts.get("complained", 0),
        unsubscribed=counts.get("unsubscribed", 0),
        unknown=max(sent - sum(counts.values()), 0),
    )


def failure_count(engine: Engine, issue_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                sa.select(sa.func.count()).where(
                    D.issue_id == issue_id, D.status == DeliveryStatus.FAILED
                )
            )
            or 0
        )


def failures(engine: Engine, issue_id: int, limit: int = 50, offset: int = 0) -> list[Failure]:
    """The issue's failed deliveries, by address, with the provider's reason."""
    query = (
        sa.select(S.email, D.reason, D.updated_at)
        .select_from(db.deliveries.outerjoin(db.subscribers, S.id == D.subscriber_id))
        .where(D.issue_id == issue_id, D.status == DeliveryStatus.FAILED)
        .order_by(D.subscriber_id)
        .limit(max(0, limit))
        .offset(max(0, offset))
    )
    with engine.connect() as conn:
        return [
            Failure(r.email, r.reason or "no reason was given", r.updated_at)
            for r in conn.execute(query)
        ]


def article_clicks(engine: Engine, issue_id: int) -> list[ArticleClicks]:
    """Clicks on the links to each article of the issue, most clicked first."""
    c, k = db.clicks.c, db.issue_links.c
    query = (
        sa.select(
            k.slug,
            sa.func.count(c.subscriber_id).label("clicks"),
            sa.func.count(sa.distinct(c.subscriber_id)).label("subscribers"),
        )
        .select_from(
            db.issue_links.outerjoin(
                db.clicks, sa.and_(c.issue_id == k.issue_id, c.position == k.position)
            )
        )
        .where(k.issue_id == issue_id, k.slug.is_not(None))
        .group_by(k.slug)
        .order_by(sa.func.count(c.subscriber_id).desc(), k.slug)
    )
    with engine.connect() as conn:
        return [
            ArticleClicks(r.slug, int(r.clicks), int(r.subscribers)) for r in conn.execute(query)
        ]


def ambiguous_batches(engine: Engine, issue_id: int) -> list[AmbiguousBatch]:
    """The issue's batches the provider may or may not have taken."""
    b = db.batches.c
    queued = (
        sa.select(sa.func.count())
        .where(D.batch_id == b.id, D.status == DeliveryStatus.QUEUED)
        .scalar_subquery()
    )
    query = (
        sa.select(b.id, b.seq, b.updated_at, queued.label("queued"))
        .where(b.issue_id == issue_id, b.status == BatchStatus.AMBIGUOUS)
        .order_by(b.seq)
    )
    with engine.connect() as conn:
        return [
            AmbiguousBatch(int(r.id), int(r.seq), int(r.queued or 0), r.updated_at)
            for r in conn.execute(query)
        ]
