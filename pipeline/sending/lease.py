"""A worker's lease on one batch: claim it, keep it while waiting, give it back.

``claim`` takes a pending batch (pending → sending, with a lease that runs out after
``lease_seconds``) and writes its recipients to the delivery log as ``queued`` in the
same transaction, so a batch is either not started or fully known. ``renew`` pushes the
lease out before each wait; ``release`` hands the batch back when nothing was sent. A
lease that runs out is found by ``recover.sweep``.

The lease names its holder for people: the worker as Celery names it (``celery@host``,
from the task's request) and the process id. Both stay on the batch after the lease
ends, so a batch whose worker died says which worker that was.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.sending.batches import Outcome, count
from pipeline.sending.prepare import audience_filter
from pipeline.settings import Settings
from pipeline.statuses import BatchStatus, DeliveryStatus, IssueStatus, SubscriberStatus
from pipeline.store import db


@dataclass
class Claim:
    """A batch this worker holds: its lease token, idempotency key and recipients."""

    batch_id: int
    issue_id: int
    token: str
    key: str
    recipients: list[tuple[int, str, str]]  # id, email, name
    skipped: int


def holder(worker: str = "") -> str:
    """The name a lease is held under: the Celery worker's (``celery@host``), or for a
    process that is no worker (the CLI, the service without Redis) ``letterpress@host``."""
    return (worker or f"letterpress@{socket.gethostname()}")[:200]


def claim(engine: Engine, settings: Settings, batch_id: int, worker: str = "") -> Claim | Outcome:
    """Lease a pending batch and log its recipients as ``queued``, in one transaction.
    ``worker`` names the holder (``holder``); the process id is this process's.

    An ``Outcome`` (``skipped``) says why the batch is not this worker's to send."""
    token = secrets.token_hex(16)
    at = db.now()
    with engine.begin() as conn:
        leased = _lease(conn, settings, batch_id, token, at, holder(worker))
        if isinstance(leased, Outcome):
            return leased
        batch, issue, key = leased
        if not batch.retry and batch.attempts == 0:
            # Queued now, in this transaction, are exactly those who have not left.
            skipped = _materialise(conn, batch, batch_id, issue, at)
        else:
            skipped = _skip_departed(conn, batch_id, issue.audience, at)
        if skipped:
            count(conn, batch.issue_id, 0, 0, skipped)
        recipients = _queued(conn, batch_id)
    return Claim(batch_id, int(batch.issue_id), token, key, recipients, skipped)


def _lease(
    conn: Connection, settings: Settings, batch_id: int, token: str, at: datetime, name: str
) -> tuple[Any, Any, str] | Outcome:
    """(batch row, issue row, idempotency key) once leased, or why not."""
    b = db.batches.c
    batch = conn.execute(
        sa.select(
            b.issue_id, b.status, b.retry, b.attempts, b.first_id, b.last_id, b.idempotency_key
        ).where(b.id == batch_id)
    ).first()
    if batch is None:
        return Outcome(batch_id, "skipped", detail="no such batch")
    if batch.status != BatchStatus.PENDING:
        return Outcome(batch_id, "skipped", detail=f"batch is {batch.status}")
    i = db.issues.c
    issue = conn.execute(
        sa.select(i.status, i.started_at, i.audience).where(i.id == batch.issue_id)
    ).one()
    if issue.status != IssueStatus.SENDING:
        return Outcome(batch_id, "skipped", detail=f"issue is {issue.status}")
    key = batch.idempotency_key or f"lp-{batch.issue_id}-{batch_id}-{secrets.token_hex(6)}"
    claimed = conn.execute(
        sa.update(db.batches)
        .where(b.id == batch_id, b.status == BatchStatus.PENDING)
        .values(
            status=BatchStatus.SENDING,
            lease_token=token,
            lease_holder=name,
            lease_pid=os.getpid(),
            idempotency_key=key,
            lease_until=at + timedelta(seconds=settings.lease_seconds),
            attempts=b.attempts + 1,
            updated_at=at,
        )
    ).rowcount
    if claimed != 1:
        return Outcome(batch_id, "skipped", detail="claimed by another worker")
    return batch, issue, key


def _materialise(conn: Connection, batch: Any, batch_id: int, issue: Any, at: datetime) -> int:
    """Write the batch's recipients to the log, once: ``queued`` for those still
    active, ``skipped`` for those who left after the send started (their number)."""
    s, d = db.subscribers.c, db.deliveries.c
    where = audience_filter(conn, issue.audience, issue.started_at, batch.first_id, batch.last_id)
    active = sa.and_(s.status == SubscriberStatus.ACTIVE, s.paused.is_(False))
    rows = sa.select(
        sa.literal(batch.issue_id, db.ID),
        s.id,
        sa.literal(batch_id, db.ID),
        # Plain strings: a literal's type is inferred from it (an enum member has none).
        sa.case((active, DeliveryStatus.QUEUED.value), else_=DeliveryStatus.SKIPPED.value),
        sa.case((active, None), (s.status == SubscriberStatus.ACTIVE, "paused"), else_=s.status),
        sa.literal(at, db.UTCDateTime()),
    ).where(where)
    columns = ["issue_id", "subscriber_id", "batch_id", "status", "reason", "updated_at"]
    # One statement, run inside the database: no row passes through Python.
    conn.execute(db.insert_ignore(conn, db.deliveries).from_select(columns, rows))
    skipped = conn.scalar(
        sa.select(sa.func.count()).where(d.batch_id == batch_id, d.status == DeliveryStatus.SKIPPED)
    )
    return int(skipped or 0)


def _skip_departed(conn: Connection, batch_id: int, audience: Sequence[str], at: datetime) -> int:
    """Queued recipients who unsubscribed, bounced, complained, paused or left the
    issue's lists since: skipped."""
    d, s, m = db.deliveries.c, db.subscribers.c, db.memberships.c
    departed = sa.or_(
        sa.exists().where(
            s.id == d.subscriber_id,
            sa.or_(s.status != SubscriberStatus.ACTIVE, s.paused.is_(True)),
        ),
        *(
            [
                ~sa.exists().where(
                    m.subscriber_id == d.subscriber_id,
                    m.list_id.in_(
                        sa.select(db.lists.c.id).where(db.lists.c.name.in_(list(audience)))
                    ),
                )
            ]
            if audience
            else []
        ),
    )
    return int(
        conn.execute(
            sa.update(db.deliveries)
            .where(d.batch_id == batch_id, d.status == DeliveryStatus.QUEUED, departed)
            .values(status=DeliveryStatus.SKIPPED, reason="left before delivery", updated_at=at)
        ).rowcount
    )


def _queued(conn: Connection, batch_id: int) -> list[tuple[int, str, str]]:
    """The batch's recipients still to send: (id, email, name), in id order."""
    d, s = db.deliveries.c, db.subscribers.c
    return [
        (int(r.id), r.email, r.name)
        for r in conn.execute(
            sa.select(s.id, s.email, s.name)
            .select_from(db.deliveries.join(db.subscribers, s.id == d.subscriber_id))
            .where(d.batch_id == batch_id, d.status == DeliveryStatus.QUEUED)
            .order_by(s.id)
        )
    ]


def renew(engine: Engine, settings: Settings, claim: Claim) -> None:
    """Push the lease out by ``lease_seconds`` from now (while the lease is still ours)."""
    b = db.batches.c
    with engine.begin() as conn:
        conn.execute(
            sa.update(db.batches)
            .where(b.id == claim.batch_id, b.lease_token == claim.token)
            .values(lease_until=db.now() + timedelta(seconds=settings.lease_seconds))
        )


def release(engine: Engine, claim: Claim, reason: str) -> Outcome:
    """Nothing was sent: the batch goes back to pending, for the sweeper to enqueue."""
    b = db.batches.c
    with engine.begin() as conn:
        conn.execute(
            sa.update(db.batches)
            .where(b.id == claim.batch_id, b.lease_token == claim.token)
            .values(
                status=BatchStatus.PENDING,
                lease_token=None,
                lease_until=None,
                enqueued_at=None,
                error=reason[:500],
                updated_at=db.now(),
            )
        )
    return Outcome(claim.batch_id, "released", detail=reason)
