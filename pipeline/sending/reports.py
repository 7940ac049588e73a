"""Reports on a sent issue: the clicks on each of its links."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.errors import NotFound
from pipeline.store import db


@dataclass(frozen=True)
class LinkClicks:
    position: int
    url: str
    slug: str | None  # the article the link leads to, if any
    clicks: int
    engaged: int  # by people: not link scanners, not within the grace after delivery
    subscribers: int  # distinct subscribers who clicked


@dataclass(frozen=True)
class ClickReport:
    issue_id: int
    clicks: int
    engaged: int
    subscribers: int  # distinct subscribers who clicked any link
    links: list[LinkClicks]  # every link of the issue's email, in order


def clicks(engine: Engine, issue_id: int) -> ClickReport:
    """The clicks on the issue's links; ``NotFound`` when there is no such issue."""
    # Every count reads columns of the clicks index on (issue_id, position, subscriber_id,
    # engaged), never the id, so PostgreSQL counts from the index alone.
    c, k = db.clicks.c, db.issue_links.c
    engaged = sa.func.coalesce(sa.func.sum(sa.case((c.engaged, 1), else_=0)), 0)
    with engine.connect() as conn:
        if conn.scalar(sa.select(db.issues.c.id).where(db.issues.c.id == issue_id)) is None:
            raise NotFound(f"no issue {issue_id}")
        links = conn.execute(
            sa.select(
                k.position,
                k.url,
                k.slug,
                sa.func.count(c.subscriber_id).label("clicks"),
                engaged.label("engaged"),
                sa.func.count(sa.distinct(c.subscriber_id)).label("subscribers"),
            )
            .select_from(
                db.issue_links.outerjoin(
                    db.clicks, sa.and_(c.issue_id == k.issue_id, c.position == k.position)
                )
            )
            .where(k.issue_id == issue_id)
            .group_by(k.position, k.url, k.slug)
            .order_by(k.position)
        ).all()
        total = conn.execute(
            sa.select(
                sa.func.count(c.subscriber_id),
                engaged,
                sa.func.count(sa.distinct(c.subscriber_id)),
            ).where(c.issue_id == issue_id)
        ).one()
    return ClickReport(
        issue_id=issue_id,
        clicks=int(total[0]),
        engaged=int(total[1]),
        subscribers=int(total[2]),
        links=[
            LinkClicks(
                position=int(r.position),
                url=r.url,
                slug=r.slug,
                clicks=int(r.clicks),
                engaged=int(r.engaged),
                subscribers=int(r.subscribers),
            )
            for r in links
        ],
    )
