"""The public archive of sent issues: what ``BASE/issues/`` lists, and each issue's web
version (``BASE/issues/ID/``), the page frozen with the send without anyone's name or
personal links."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.sending.batches import WEB_VARIANT
from pipeline.statuses import IssueStatus
from pipeline.store import db

SHOWN = 500  # issues listed at most, newest first

ISSUES = db.issues.c
SNAPSHOTS = db.snapshots.c


@dataclass(frozen=True)
class ArchivedIssue:
    id: int
    subject: str
    started_at: datetime


def sent_issues(engine: Engine, limit: int = SHOWN) -> list[ArchivedIssue]:
    """The issues whose sending started and that have a web version, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ISSUES.id, ISSUES.subject, ISSUES.started_at)
            .join(
                db.snapshots,
                sa.and_(SNAPSHOTS.issue_id == ISSUES.id, SNAPSHOTS.variant == WEB_VARIANT),
            )
            .where(ISSUES.status.in_([IssueStatus.SENDING, IssueStatus.SENT]))
            .order_by(ISSUES.started_at.desc())
            .limit(limit)
        ).all()
    return [ArchivedIssue(r.id, r.subject, r.started_at) for r in rows]


def web_version(engine: Engine, issue_id: int) -> str | None:
    """The HTML of the issue's web version; None before its sending started."""
    with engine.connect() as conn:
        html = conn.scalar(
            sa.select(SNAPSHOTS.html).where(
                SNAPSHOTS.issue_id == issue_id, SNAPSHOTS.variant == WEB_VARIANT
            )
        )
    return None if html is None else str(html)
