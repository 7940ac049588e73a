"""A send's machinery as an operator sees it: an issue's batches, page by page, and what
each one's state allows (``recover`` carries the actions out).

A page is read by keyset on the batch's sequence number (an issue of a million
recipients has a thousand batches or more: no OFFSET), optionally of one status, with
how many recipients each batch holds now (its rows in the delivery log; a batch not
claimed yet has none listed) and how many batches the issue has in each status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.errors import NotFound
from pipeline.sending.recover import lease_ran_out
from pipeline.statuses import BatchStatus
from pipeline.store import db

PAGE = 50  # batches a page
REQUEUE, RECONCILE, SETTLE = "requeue", "reconcile", "settle"


@dataclass
class Batch:
    id: int
    issue_id: int
    seq: int
    status: str
    first_id: int
    last_id: int
    retry: bool
    attempts: int
    holder: str | None  # the worker (celery@host) that holds, or last held, the lease
    pid: int | None
    lease_until: datetime | None
    provider_id: str | None
    error: str
    updated_at: datetime
    recipients: dict[str, int] = field(default_factory=dict)  # delivery status -> how many

    @property
    def people(self) -> int:
        return sum(self.recipients.values())

    def lease_ran_out(self, at: datetime) -> bool:
        return lease_ran_out(self.status, self.lease_until, at)

    def holder_words(self) -> str:
        """``celery@host pid 1234``; empty for a batch never leased."""
        if not self.holder:
            return ""
        return self.holder + (f" pid {self.pid}" if self.pid is not None else "")

    def lease_words(self, at: datetime) -> str:
        """The lease in words, e.g. "held by celery@host pid 1234 until 17:42:10 UTC;
        expired 3 min ago" or "last held by celery@host pid 1234"."""
        who = self.holder_words()
        if self.status == BatchStatus.SENDING and self.lease_until is not None:
            until = self.lease_until.astimezone(UTC)
            said = f"held by {who or 'a worker'} until {until:%H:%M:%S} UTC"
            if until.date() != at.astimezone(UTC).date():
                said = f"held by {who or 'a worker'} until {until:%Y-%m-%d %H:%M:%S} UTC"
            if self.lease_ran_out(at):
                said += f"; expired {ago((at - until).total_seconds())} ago"
            return said
        return f"last held by {who}" if who else ""

    def actions(self, at: datetime) -> tuple[str, ...]:
        """What an operator may do to the batch in its state, at ``at``."""
        if self.status == BatchStatus.AMBIGUOUS:
            return (RECONCILE, SETTLE)
        if self.status == BatchStatus.FAILED:
            return (REQUEUE,)
        if self.lease_ran_out(at):
            return (REQUEUE, RECONCILE)
        return ()


def ago(seconds: float) -> str:
    """``12 s``, ``4 min``, ``2 h 05 min``."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


@dataclass
class Page:
    batches: list[Batch]
    next_after: int | None  # the seq to go on after; None: this was the last page
    statuses: dict[str, int]  # the issue's batches in each status


_B = db.batches.c
_COLUMNS = (
    _B.id,
    _B.issue_id,
    _B.seq,
    _B.status,
    _B.first_id,
    _B.last_id,
    _B.retry,
    _B.attempts,
    _B.lease_holder,
    _B.lease_pid,
    _B.lease_until,
    _B.provider_id,
    _B.error,
    _B.updated_at,
)


def _batch(row: Any) -> Batch:
    m = row._mapping
    return Batch(
        id=int(m["id"]),
        issue_id=int(m["issue_id"]),
        seq=int(m["seq"]),
        status=str(m["status"]),
        first_id=int(m["first_id"]),
        last_id=int(m["last_id"]),
        retry=bool(m["retry"]),
        attempts=int(m["attempts"]),
        holder=m["lease_holder"],
        pid=m["lease_pid"],
        lease_until=m["lease_until"],
        provider_id=m["provider_id"],
        error=str(m["error"] or ""),
        updated_at=m["updated_at"],
    )


def page(
    engine: Engine,
    issue_id: int,
    status: str | None = None,
    after: int = 0,
    limit: int = PAGE,
) -> Page:
    """The issue's batches after sequence number ``after``, ``limit`` of them, of one
    ``status`` or all. ``NotFound`` for an unknown issue; ``ValueError`` for a status
    that batches do not have."""
    if status is not None and status not in {s.value for s in BatchStatus}:
        known = ", ".join(s.value for s in BatchStatus)
        raise ValueError(f"batches are {known}, not {status!r}")
    where = [_B.issue_id == issue_id, _B.seq > after]
    if status is not None:
        where.append(_B.status == status)
    with engine.connect() as conn:
        if conn.scalar(sa.select(db.issues.c.id).where(db.issues.c.id == issue_id)) is None:
            raise NotFound(f"no issue {issue_id}")
        rows = conn.execute(
            sa.select(*_COLUMNS).where(*where).order_by(_B.seq).limit(limit + 1)
        ).all()
        found = [_batch(r) for r in rows[:limit]]
        _count_recipients(conn, found)
        statuses = {
            str(s): int(n)
            for s, n in conn.execute(
                sa.select(_B.status, sa.func.count())
                .where(_B.issue_id == issue_id)
                .group_by(_B.status)
            )
        }
    next_after = found[-1].seq if len(rows) > limit else None
    return Page(found, next_after, statuses)


def _count_recipients(conn: sa.Connection, found: Sequence[Batch]) -> None:
    if not found:
        return
    d = db.deliveries.c
    by_id = {b.id: b for b in found}
    for batch_id, status, n in conn.execute(
        sa.select(d.batch_id, d.status, sa.func.count())
        .where(d.batch_id.in_(list(by_id)))
        .group_by(d.batch_id, d.status)
    ):
        by_id[int(batch_id)].recipients[str(status)] = int(n)


def get(engine: Engine, issue_id: int, batch_id: int) -> Batch:
    """One batch of the issue, with its recipients; ``NotFound`` if the issue has none
    by that id."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(*_COLUMNS).where(_B.id == batch_id, _B.issue_id == issue_id)
        ).first()
        if row is None:
            raise NotFound(f"issue {issue_id} has no batch {batch_id}")
        found = _batch(row)
        _count_recipients(conn, [found])
    return found
