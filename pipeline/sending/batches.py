"""What the steps of a send share: the snapshot variants, a batch's ``Outcome``, the
queue batches go on (``Dispatcher``), and how an issue's counters and end are kept.

A send is three steps, each in its own module:

1. ``prepare`` (when a send starts): render the email once and freeze it in
   ``snapshots``; cut the audience into batches of subscriber-id ranges (rows in
   ``batches``). Nobody is copied: the audience is "members of the lists, active,
   confirmed before the send started", evaluated range by range, so a million
   recipients cost one pass over their ids.
2. ``sender.Sender.send_batch`` (one worker task per batch): claim the batch (pending →
   sending, with a lease, ``lease``) and write its recipients to the delivery log as
   ``queued`` in the same transaction; call the provider outside any transaction, within
   the shared rate limit, retrying what is safe to retry; then mark the log and the batch
   in bulk. The log's key (issue, subscriber) makes a second delivery impossible.
3. ``recover.sweep`` (periodic): a batch whose lease ran out may have been accepted by
   the provider. It goes back to pending (and is sent again with the same idempotency
   key) only when the provider honours that key; otherwise it becomes ``ambiguous``
   and waits for ``recover.reconcile``. Pending batches whose task was lost (a broker
   restart) are enqueued again. The issue is finished by counting batches
   (``finish_if_done``), not by callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.sending import issues
from pipeline.statuses import BatchStatus, IssueStatus
from pipeline.store import db

VARIANT = "default"  # the email, with merge fields
WEB_VARIANT = "web"  # the public web page of the issue ("view in browser")

# Batches that keep their issue from being sent.
OPEN = (BatchStatus.PENDING, BatchStatus.SENDING, BatchStatus.AMBIGUOUS)


@dataclass
class Outcome:
    batch_id: int
    status: str  # sent, failed, ambiguous, skipped (not ours to send), released
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    detail: str = ""


class Dispatcher(Protocol):
    """Puts batch ids on a queue (Celery in production, inline in the demo)."""

    def enqueue(self, batch_ids: Sequence[int]) -> None: ...


class BatchSender(Protocol):
    """What sends one batch (``sender.Sender``)."""

    def send_batch(self, batch_id: int) -> Outcome: ...


class InlineDispatcher:
    """Runs each batch at once in this process: the embedded default, without a broker."""

    def __init__(
        self, sender: BatchSender, progress: Callable[[Outcome], None] | None = None
    ) -> None:
        self.sender = sender
        self.progress = progress
        self.outcomes: list[Outcome] = []

    def enqueue(self, batch_ids: Sequence[int]) -> None:
        for batch_id in batch_ids:
            outcome = self.sender.send_batch(batch_id)
            self.outcomes.append(outcome)
            if self.progress is not None:
                self.progress(outcome)


def mark_enqueued(engine: Engine, batch_ids: Sequence[int]) -> None:
    """Record when batches went on the queue (the sweeper requeues the ones long lost)."""
    if not batch_ids:
        return
    at = db.now()
    with engine.begin() as conn:
        for start in range(0, len(batch_ids), 500):
            conn.execute(
                sa.update(db.batches)
                .where(db.batches.c.id.in_(list(batch_ids[start : start + 500])))
                .values(enqueued_at=at)
            )


def count(conn: Connection, issue_id: int, sent: int, failed: int, skipped: int) -> None:
    """Add to an issue's counters of settled deliveries."""
    i = db.issues.c
    conn.execute(
        sa.update(db.issues)
        .where(i.id == issue_id)
        .values(sent=i.sent + sent, failed=i.failed + failed, skipped=i.skipped + skipped)
    )


def finish_if_done(conn: Connection, issue_id: int) -> bool:
    """Sent once no batch is pending, sending or ambiguous (counted, not called back)."""
    b = db.batches.c
    open_batches = conn.scalar(
        sa.select(sa.func.count()).where(b.issue_id == issue_id, b.status.in_(OPEN))
    )
    if open_batches:
        return False
    at = db.now()
    done = conn.execute(
        sa.update(db.issues)
        .where(
            db.issues.c.id == issue_id,
            db.issues.c.status.in_((IssueStatus.SENDING, IssueStatus.PAUSED)),
            db.issues.c.prepared_at.is_not(None),
        )
        .values(status=IssueStatus.SENT, finished_at=at, updated_at=at)
    ).rowcount
    if done:
        issues.event(conn, issue_id, "info", "sent")
    return bool(done)
