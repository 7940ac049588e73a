"""Putting a send back on track: leases that ran out, tasks the broker lost, batches
the provider may or may not have, and workers that cannot send.

``sweep`` (periodic): a batch whose lease ran out may have been accepted by the
provider. It goes back to pending (and is sent again with the same idempotency key)
only when the provider honours that key; otherwise it becomes ``ambiguous`` and waits
for ``reconcile``. Pending batches whose task was lost (a broker restart) are enqueued
again, and started issues whose preparation never finished are prepared again.

One batch at a time, an operator (the console's batches page, ``letterpress issue
requeue-batch``, ``reconcile --batch``, ``settle-batch``) does the same by hand:
``requeue_batch`` sends again a batch whose worker's lease ran out, or one that failed;
``reconcile_batch`` settles a batch in doubt from the provider's own records;
``settle_batch`` settles an ambiguous one by the operator's choice. ``reconcile`` does
the second for every ambiguous batch of an issue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.audience.subscribers import normalise_email
from pipeline.errors import NotFound
from pipeline.sending import issues
from pipeline.sending.batches import count, finish_if_done
from pipeline.sending.issues import IssueStateError
from pipeline.sending.providers.base import Provider
from pipeline.settings import Settings
from pipeline.statuses import BatchStatus, DeliveryStatus, IssueStatus
from pipeline.store import db

# -- sweep -------------------------------------------------------------------------------


@dataclass
class Sweep:
    requeue: list[int]  # batches to enqueue again
    ambiguous: list[int]  # batches newly found ambiguous
    prepare: list[int]  # started issues whose preparation never finished


def sweep(
    engine: Engine,
    settings: Settings,
    idempotent: bool,
    queue_empty: bool,
    at: datetime | None = None,
) -> Sweep:
    """Find batches whose worker died (lease ran out) and tasks the broker lost."""
    at = at or db.now()
    result = Sweep([], [], [])
    with engine.begin() as conn:
        for batch_id, issue_id in _expired(conn, at):
            if idempotent:
                if _send_again(conn, batch_id, issue_id, at):
                    result.requeue.append(batch_id)
            elif _hold_as_ambiguous(conn, batch_id, issue_id, at):
                result.ambiguous.append(batch_id)
        if queue_empty:
            stale = at - timedelta(seconds=settings.sweep_seconds * 2)
            result.requeue.extend(_lost(conn, stale))
        result.prepare = _unprepared(conn, at - timedelta(seconds=settings.sweep_seconds))
    return result


def _still_expired(batch_id: int, at: datetime) -> sa.ColumnElement[bool]:
    b = db.batches.c
    return sa.and_(b.id == batch_id, b.status == BatchStatus.SENDING, b.lease_until < at)


def _expired(conn: Connection, at: datetime) -> list[tuple[int, int]]:
    """(batch, issue) of the leased batches whose lease ran out before ``at``."""
    b = db.batches.c
    rows = conn.execute(
        sa.select(b.id, b.issue_id).where(b.status == BatchStatus.SENDING, b.lease_until < at)
    )
    return [(int(batch_id), int(issue_id)) for batch_id, issue_id in rows]


def _send_again(conn: Connection, batch_id: int, issue_id: int, at: datetime) -> bool:
    """The provider drops a repeated key: back to pending, the key kept."""
    done = conn.execute(
        sa.update(db.batches)
        .where(_still_expired(batch_id, at))
        .values(
            status=BatchStatus.PENDING,
            lease_token=None,
            lease_until=None,
            enqueued_at=at,
            updated_at=at,
        )
    ).rowcount
    if done:
        issues.event(
            conn,
            issue_id,
            "warning",
            f"batch {batch_id}: lease ran out; sending again with the same idempotency key",
        )
    return bool(done)


def _hold_as_ambiguous(conn: Connection, batch_id: int, issue_id: int, at: datetime) -> bool:
    """The provider may have the batch and would send it twice: ambiguous."""
    done = conn.execute(
        sa.update(db.batches)
        .where(_still_expired(batch_id, at))
        .values(
            status=BatchStatus.AMBIGUOUS,
            lease_until=None,
            updated_at=at,
            error="the worker stopped during the provider call",
        )
    ).rowcount
    if done:
        issues.event(
            conn,
            issue_id,
            "error",
            f"batch {batch_id} is ambiguous (its worker stopped during the"
            f" provider call): run `letterpress issue reconcile {issue_id}`",
        )
    return bool(done)


def _lost(conn: Connection, stale: datetime) -> list[int]:
    """Pending batches of sending issues not enqueued since ``stale`` (or ever)."""
    b, i = db.batches.c, db.issues.c
    return [
        int(x)
        for x in conn.scalars(
            sa.select(b.id)
            .select_from(db.batches.join(db.issues, i.id == b.issue_id))
            .where(
                b.status == BatchStatus.PENDING,
                i.status == IssueStatus.SENDING,
                sa.or_(b.enqueued_at.is_(None), b.enqueued_at < stale),
            )
            .order_by(b.id)
        )
    ]


def _unprepared(conn: Connection, started_before: datetime) -> list[int]:
    """Sending issues started before then whose preparation never finished."""
    i = db.issues.c
    return [
        int(x)
        for x in conn.scalars(
            sa.select(i.id).where(
                i.status == IssueStatus.SENDING,
                i.prepared_at.is_(None),
                i.started_at < started_before,
            )
        )
    ]


# -- a worker that cannot send -----------------------------------------------------------


def pause_for_configuration(engine: Engine, batch_id: int, problem: str) -> None:
    """A worker cannot send with its settings: the batch stays pending and its issue
    pauses with the reason (``issue show``, ``letterpress status``), once; resuming after
    the settings are fixed sends the batch."""
    b, i = db.batches.c, db.issues.c
    with engine.begin() as conn:
        issue_id = conn.scalar(sa.select(b.issue_id).where(b.id == batch_id))
        if issue_id is None:
            return
        reason = (
            f"paused: the workers cannot send: {problem}. Fix the settings, restart the"
            f" workers, then run `letterpress issue resume {issue_id}`"
        )
        paused = conn.execute(
            sa.update(db.issues)
            .where(i.id == issue_id, i.status == IssueStatus.SENDING)
            .values(status=IssueStatus.PAUSED, status_reason=reason[:2000], updated_at=db.now())
        ).rowcount
        conn.execute(
            sa.update(db.batches)
            .where(b.id == batch_id, b.status == BatchStatus.PENDING)
            .values(enqueued_at=None, error=problem[:500], updated_at=db.now())
        )
        if paused:
            issues.event(conn, int(issue_id), "error", reason)


# -- reconcile ---------------------------------------------------------------------------


@dataclass
class Reconciled:
    batches: int
    sent: int
    requeued: list[int]
    unknown: list[int]  # batches the provider could not tell about (need --assume)


def reconcile(
    engine: Engine,
    issue_id: int,
    provider: Provider,
    assume: str | None = None,
) -> Reconciled:
    """Settle an issue's ambiguous batches.

    From the provider's own records where the adapter can ask (Mailgun events,
    Postmark message search, the outbox): recipients it accepted are marked sent, the
    rest are sent again in a new batch. Otherwise the operator decides: ``assume="sent"``
    (better a missed email than a doubled one) or ``assume="unsent"`` (send again).
    """
    if assume not in (None, "sent", "unsent"):
        raise ValueError("assume is sent or unsent")
    ambiguous = _ambiguous_batches(engine, issue_id)
    out = Reconciled(len(ambiguous), 0, [], [])
    for batch_id, key, updated_at in ambiguous:
        known = _accepted(provider, key, updated_at)
        if known is None and assume is None:
            out.unknown.append(batch_id)
            continue
        with engine.begin() as conn:
            if not _still_ambiguous(conn, batch_id):
                continue  # settled meanwhile (another operator, the batch's own page)
            sent, again = _settle(conn, issue_id, batch_id, known, assume)
        out.sent += sent
        if again:
            out.requeued.append(batch_id)
    return out


def _still_ambiguous(conn: Connection, batch_id: int) -> bool:
    """Lock the ambiguous batch for this transaction (PostgreSQL); False once it is not."""
    b = db.batches.c
    found = conn.execute(
        sa.select(b.id)
        .where(b.id == batch_id, b.status == BatchStatus.AMBIGUOUS)
        .with_for_update(of=db.batches)
    ).first()
    return found is not None


def _ambiguous_batches(engine: Engine, issue_id: int) -> list[tuple[int, str | None, datetime]]:
    """(batch, idempotency key, last change) of an issue's ambiguous batches."""
    b = db.batches.c
    with engine.connect() as conn:
        issues._load(conn, issue_id)  # NotFound for an unknown issue
        rows = conn.execute(
            sa.select(b.id, b.idempotency_key, b.updated_at).where(
                b.issue_id == issue_id, b.status == BatchStatus.AMBIGUOUS
            )
        )
        found = [(int(batch_id), key, updated_at) for batch_id, key, updated_at in rows]
        conn.rollback()
    return found


def _accepted(provider: Provider, key: str | None, updated_at: datetime) -> set[str] | None:
    """The addresses the provider's records say it accepted under ``key``, when it can tell
    (in the stored form: providers answer in the wire form, xn-- domains)."""
    if not key:
        return None
    known = provider.accepted(key, updated_at - timedelta(days=1))
    return None if known is None else {_stored_form(address) for address in known}


def _stored_form(address: str) -> str:
    try:
        return normalise_email(address)
    except ValueError:
        return address.lower()


def _settle(
    conn: Connection, issue_id: int, batch_id: int, known: set[str] | None, assume: str | None
) -> tuple[int, bool]:
    """Mark the batch's accepted recipients sent and send the rest again; returns
    (recipients now sent, whether the batch goes again)."""
    d, s = db.deliveries.c, db.subscribers.c
    at = db.now()
    queued = list(
        conn.execute(
            sa.select(d.subscriber_id, s.email)
            .select_from(db.deliveries.join(db.subscribers, s.id == d.subscriber_id))
            .where(d.batch_id == batch_id, d.status == DeliveryStatus.QUEUED)
        )
    )
    if known is not None:
        accepted = {sid for sid, email in queued if email.lower() in known}
        how = "from the provider's records"
    else:
        accepted = {sid for sid, _ in queued} if assume == "sent" else set()
        how = f"by the operator's choice ({assume})"
    if accepted:
        _mark_sent(conn, issue_id, accepted, f"reconciled {how}", at)
    rest = len(queued) - len(accepted)
    if rest:
        _reopen(conn, batch_id, at)
    else:
        _close(conn, batch_id, at)
    issues.event(
        conn,
        issue_id,
        "info",
        f"batch {batch_id} reconciled {how}: {len(accepted)} sent, {rest} to send again",
    )
    finish_if_done(conn, issue_id)
    return len(accepted), bool(rest)


def _mark_sent(
    conn: Connection, issue_id: int, accepted: set[int], reason: str, at: datetime
) -> None:
    d = db.deliveries.c
    conn.execute(
        sa.update(db.deliveries)
        .where(
            d.issue_id == issue_id,
            d.subscriber_id == sa.bindparam("sid"),
            d.status == DeliveryStatus.QUEUED,
        )
        .values(status=DeliveryStatus.SENT, reason=reason, updated_at=at),
        [{"sid": sid} for sid in accepted],
    )
    conn.execute(
        sa.update(db.issues)
        .where(db.issues.c.id == issue_id)
        .values(sent=db.issues.c.sent + len(accepted))
    )


def _reopen(conn: Connection, batch_id: int, at: datetime) -> None:
    """The others never reached the provider: the same batch goes again, with a fresh
    key, to them only (the log keeps the ones settled before out)."""
    conn.execute(
        sa.update(db.batches)
        .where(db.batches.c.id == batch_id)
        .values(
            status=BatchStatus.PENDING,
            idempotency_key=None,
            lease_token=None,
            retry=True,
            updated_at=at,
            error="",
        )
    )


def _close(conn: Connection, batch_id: int, at: datetime) -> None:
    conn.execute(
        sa.update(db.batches)
        .where(db.batches.c.id == batch_id)
        # No lease: a worker that comes back late finds the batch is no longer its own.
        .values(status=BatchStatus.SENT, lease_token=None, updated_at=at, error="")
    )


# -- one batch, by an operator -------------------------------------------------------------


@dataclass
class BatchDone:
    """What an operator's action did to one batch."""

    batch_id: int
    issue_id: int
    sent: int = 0  # recipients now counted as sent
    again: int = 0  # recipients to be sent it again
    enqueue: list[int] = field(default_factory=list)  # to hand to the queue now
    unknown: bool = False  # the provider could not say what it accepted


def _batch(conn: Connection, issue_id: int, batch_id: int) -> Any:
    b, i = db.batches.c, db.issues.c
    row = conn.execute(
        sa.select(
            b.id,
            b.issue_id,
            b.seq,
            b.status,
            b.lease_until,
            b.idempotency_key,
            b.updated_at,
            i.status.label("issue_status"),
        )
        .select_from(db.batches.join(db.issues, i.id == b.issue_id))
        .where(b.id == batch_id, b.issue_id == issue_id)
        .with_for_update(of=db.batches)
    ).first()
    if row is None:
        raise NotFound(
            f"issue {issue_id} has no batch {batch_id}"
            f" (`letterpress issue batches {issue_id}` lists them)"
        )
    return row


def lease_ran_out(status: str, lease_until: datetime | None, at: datetime) -> bool:
    """A leased batch whose worker has not renewed its lease in time."""
    return status == BatchStatus.SENDING and lease_until is not None and lease_until < at


def _wrong_state(row: Any, doing: str, allowed: str) -> IssueStateError:
    return IssueStateError(
        f"batch {row.id} (seq {row.seq} of issue {row.issue_id}) is {row.status}: only {allowed}"
        f" can be {doing}"
    )


def _issue_sends(row: Any) -> bool:
    return bool(row.issue_status == IssueStatus.SENDING)


def requeue_batch(
    engine: Engine, issue_id: int, batch_id: int, idempotent: bool, at: datetime | None = None
) -> BatchDone:
    """Send a batch again: one whose worker's lease ran out, or one that failed.

    A leased batch goes back to pending with its idempotency key, as ``sweep`` does for
    a provider that drops a repeated key; with one that does not, whoever it accepted
    before the worker stopped gets it twice (reconcile it instead, when the provider
    keeps records). A failed batch's failed recipients are queued again in it, with a
    fresh key, and a finished issue goes back to sending. Either way, recipients the log
    already has as sent or skipped are never sent it again."""
    at = at or db.now()
    d, b = db.deliveries.c, db.batches.c
    with engine.begin() as conn:
        row = _batch(conn, issue_id, batch_id)
        if row.issue_status in (IssueStatus.CANCELLED, IssueStatus.DRAFT, IssueStatus.SCHEDULED):
            raise IssueStateError(
                f"issue {row.issue_id} is {row.issue_status}: its batches cannot be re-queued"
            )
        out = BatchDone(batch_id, int(row.issue_id))
        if lease_ran_out(row.status, row.lease_until, at):
            conn.execute(
                sa.update(db.batches)
                .where(_still_expired(batch_id, at))
                .values(
                    status=BatchStatus.PENDING,
                    lease_token=None,
                    lease_until=None,
                    enqueued_at=None,
                    updated_at=at,
                    error="",
                )
            )
            how = "with the same idempotency key" + (
                "" if idempotent else " (the provider does not drop repeats)"
            )
        elif row.status == BatchStatus.FAILED:
            failed = conn.execute(
                sa.update(db.deliveries)
                .where(d.batch_id == batch_id, d.status == DeliveryStatus.FAILED)
                .values(status=DeliveryStatus.QUEUED, reason=None, updated_at=at)
            ).rowcount
            conn.execute(
                sa.update(db.batches)
                .where(b.id == batch_id, b.status == BatchStatus.FAILED)
                .values(
                    status=BatchStatus.PENDING,
                    retry=True,
                    idempotency_key=None,
                    lease_token=None,
                    lease_until=None,
                    enqueued_at=None,
                    updated_at=at,
                    error="",
                )
            )
            count(conn, int(row.issue_id), 0, -int(failed), 0)
            conn.execute(
                sa.update(db.issues)
                .where(
                    db.issues.c.id == row.issue_id,
                    db.issues.c.status.in_((IssueStatus.SENT, IssueStatus.FAILED)),
                )
                .values(
                    status=IssueStatus.SENDING, finished_at=None, status_reason="", updated_at=at
                )
            )
            how = f"with a new key: {failed} failed recipient(s) queued again"
        else:
            raise _wrong_state(row, "re-queued", "a failed batch or one whose lease ran out")
        out.again = _queued_count(conn, batch_id)
        issues.event(conn, int(row.issue_id), "warning", f"batch {batch_id} re-queued {how}")
        status = conn.scalar(sa.select(db.issues.c.status).where(db.issues.c.id == row.issue_id))
        if status == IssueStatus.SENDING:
            out.enqueue.append(batch_id)
    return out


def _queued_count(conn: Connection, batch_id: int) -> int:
    d = db.deliveries.c
    return int(
        conn.scalar(
            sa.select(sa.func.count()).where(
                d.batch_id == batch_id, d.status == DeliveryStatus.QUEUED
            )
        )
        or 0
    )


def reconcile_batch(
    engine: Engine,
    issue_id: int,
    batch_id: int,
    provider: Provider,
    assume: str | None = None,
    at: datetime | None = None,
) -> BatchDone:
    """Settle one batch in doubt from the provider's records: an ambiguous batch, or a
    leased one whose lease ran out (its worker stopped, perhaps during the provider
    call). Recipients the provider accepted are marked sent; the rest are sent again.
    When the provider cannot tell, ``assume`` decides (as ``reconcile``); without it the
    batch is held as ambiguous for the operator to settle (``settle_batch``)."""
    if assume not in (None, "sent", "unsent"):
        raise ValueError("assume is sent or unsent")
    at = at or db.now()
    with engine.connect() as conn:
        row = _batch(conn, issue_id, batch_id)
        conn.rollback()
    leased = lease_ran_out(row.status, row.lease_until, at)
    if row.status != BatchStatus.AMBIGUOUS and not leased:
        raise _wrong_state(row, "reconciled", "an ambiguous batch or one whose lease ran out")
    known = _accepted(provider, row.idempotency_key, row.updated_at)  # outside any transaction
    out = BatchDone(batch_id, int(row.issue_id), unknown=known is None)
    with engine.begin() as conn:
        again = _batch(conn, issue_id, batch_id)
        if (again.status, again.lease_until) != (row.status, row.lease_until):
            raise IssueStateError(
                f"batch {batch_id} changed while the provider was asked (it is {again.status}"
                " now): look at it again"
            )
        if leased and not _hold_as_ambiguous(conn, batch_id, int(row.issue_id), at):
            raise _wrong_state(again, "reconciled", "a batch whose lease ran out")
        if known is None and assume is None:
            return out
        out.sent, resend = _settle(conn, int(row.issue_id), batch_id, known, assume)
        if resend:
            out.again = _queued_count(conn, batch_id)
            if _issue_sends(again):
                out.enqueue.append(batch_id)
    return out


def settle_batch(engine: Engine, issue_id: int, batch_id: int, choice: str) -> BatchDone:
    """Settle an ambiguous batch by the operator's choice: ``sent`` (its recipients are
    counted as sent and not sent it again; some may miss it) or ``unsent`` (they are sent
    it again; some may get it twice). The provider is not asked."""
    if choice not in ("sent", "unsent"):
        raise ValueError("choose sent or unsent")
    with engine.begin() as conn:
        row = _batch(conn, issue_id, batch_id)
        if row.status != BatchStatus.AMBIGUOUS:
            raise _wrong_state(row, "settled", "an ambiguous batch")
        out = BatchDone(batch_id, int(row.issue_id))
        out.sent, resend = _settle(conn, int(row.issue_id), batch_id, None, choice)
        if resend:
            out.again = _queued_count(conn, batch_id)
            if _issue_sends(row):
                out.enqueue.append(batch_id)
    return out
