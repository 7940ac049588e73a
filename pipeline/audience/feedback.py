"""What the mail providers report after accepting a message, applied: the events of a
verified webhook request (``pipeline.audience.webhooks``) recorded against deliveries and
subscribers, all of one request in one transaction:

    delivered      the delivery's feedback; the address's soft bounces start again
    soft_bounce    the feedback; one more soft bounce (one per message): the
                   ``soft_bounce_limit``-th in a row suppresses the address as bounced
    unsubscribed   the subscriber leaves every list
    bounced        the address is suppressed: never mailed again
    complained     the address is suppressed as complained

A delivery's feedback only ever grows stronger (``db.FEEDBACK``): a late "delivered"
never hides a bounce. Every applied event is remembered (``provider_events``), so
the provider's retry of an event changes nothing, and a Mailgun token (the request's
nonce) is accepted once (``webhook_nonces``). Events about addresses or issues that are
not ours (another system sharing the account) are ignored, as are events of no kind.

Nothing here logs an address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.audience import consent
from pipeline.audience.subscribers import normalise_email
from pipeline.audience.webhooks import PROVIDERS, Event, WebhookRefused
from pipeline.settings import Settings
from pipeline.statuses import SubscriberStatus
from pipeline.store import db

log = logging.getLogger(__name__)

KINDS = db.FEEDBACK


@dataclass
class Applied:
    """What a request did: events applied, already applied before, and ignored."""

    applied: int = 0
    duplicates: int = 0
    ignored: int = 0


S = db.subscribers.c
D = db.deliveries.c
_prune_lock = threading.Lock()
_pruned_at = 0.0  # when this process last forgot old nonces (time.monotonic)


def apply(
    engine: Engine,
    settings: Settings,
    provider: str,
    events: Iterable[Event],
    *,
    nonce: str | None = None,
) -> Applied:
    """Apply a request's events in one transaction; ``nonce`` (Mailgun's token) is
    recorded in it, and a nonce seen before refuses the whole request (403)."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    result = Applied()
    with engine.begin() as conn:
        if nonce is not None:
            _use_nonce(conn, provider, nonce, settings.webhook_max_age_seconds)
        for event in events:
            outcome = _apply_one(conn, settings, provider, event)
            setattr(result, outcome, getattr(result, outcome) + 1)
    log.info(
        "%s webhook: %d applied, %d duplicates, %d ignored",
        provider,
        result.applied,
        result.duplicates,
        result.ignored,
    )
    return result


def _use_nonce(conn: Connection, provider: str, nonce: str, max_age: int) -> None:
    """Record the nonce, refusing one already recorded; forget those too old to matter
    (their timestamps are refused anyway) now and then."""
    global _pruned_at
    at = db.now()
    fresh = conn.execute(
        db.insert(conn, db.webhook_nonces)
        .on_conflict_do_nothing()
        .returning(db.webhook_nonces.c.nonce),
        {"provider": provider, "nonce": nonce, "at": at},
    ).first()
    if fresh is None:
        raise WebhookRefused(403, "this signature was used before: a replayed request")
    with _prune_lock:
        due = time.monotonic() - _pruned_at > max_age or not _pruned_at
        if due:
            _pruned_at = time.monotonic()
    if due:
        conn.execute(
            sa.delete(db.webhook_nonces).where(
                db.webhook_nonces.c.at < at - timedelta(seconds=2 * max_age)
            )
        )


def _normalised(email: str) -> str | None:
    try:
        return normalise_email(email) if email else None
    except ValueError:
        return None


def _subscriber(conn: Connection, event: Event) -> int | None:
    """The subscriber an event is about: by the id the message carried, when the address
    agrees (ids of erased subscribers can come back), else by the address."""
    address = _normalised(event.email)
    if event.subscriber_id is not None:
        row = conn.execute(sa.select(S.id, S.email).where(S.id == event.subscriber_id)).first()
        if row is not None and (address is None or row.email == address):
            return int(row.id)
    if address is None:
        return None
    found = conn.scalar(sa.select(S.id).where(S.email == address))
    return None if found is None else int(found)


def _apply_one(conn: Connection, settings: Settings, provider: str, event: Event) -> str:
    """``applied``, ``duplicates`` or ``ignored``."""
    kind = event.kind
    if kind is None:
        return "ignored"
    if kind not in KINDS:
        raise ValueError(f"unknown feedback {kind!r}")
    sid = _subscriber(conn, event)
    if sid is None:
        return "ignored"
    current: str | None = None
    if event.issue_id is not None:
        row = conn.execute(
            sa.select(D.feedback).where(D.issue_id == event.issue_id, D.subscriber_id == sid)
        ).first()
        if row is None:  # not a message of ours
            return "ignored"
        current = row.feedback
    first = conn.execute(
        db.insert(conn, db.provider_events)
        .on_conflict_do_nothing()
        .returning(db.provider_events.c.event_id),
        {
            "provider": provider,
            "event_id": event.event_id,
            "at": db.now(),
            "kind": kind,
            "subscriber_id": sid,
            "issue_id": event.issue_id,
        },
    ).first()
    if first is None:
        return "duplicates"
    detail = event.detail or f"{provider}: {kind}"
    if event.issue_id is not None:
        detail += f" (issue {event.issue_id})"
        _set_feedback(conn, event.issue_id, sid, kind)
    match kind:
        case "delivered":
            conn.execute(
                sa.update(db.subscribers)
                .where(S.id == sid, S.soft_bounces != 0)
                .values(soft_bounces=0)
            )
        case "soft_bounce":
            _soft_bounce(conn, settings, provider, sid, current, detail)
        case "unsubscribed":
            consent.leave(conn, sid, 0, provider)
        case "bounced" | "complained":
            consent.suppress(conn, sid, kind, detail)
    return "applied"


def _set_feedback(conn: Connection, issue: int, sid: int, kind: str) -> None:
    """The delivery's feedback becomes ``kind`` unless it already says something stronger."""
    weaker_or_same = list(KINDS[: KINDS.index(kind) + 1])
    conn.execute(
        sa.update(db.deliveries)
        .where(
            D.issue_id == issue,
            D.subscriber_id == sid,
            sa.or_(D.feedback.is_(None), D.feedback.in_(weaker_or_same)),
        )
        .values(feedback=kind, feedback_at=db.now())
    )


def _soft_bounce(
    conn: Connection,
    settings: Settings,
    provider: str,
    sid: int,
    current: str | None,
    detail: str,
) -> None:
    """Count the soft bounce, once per message (a provider reports each of its retries);
    the ``soft_bounce_limit``-th in a row suppresses the address as bounced."""
    if current is not None and current != "delivered":
        return
    conn.execute(
        sa.update(db.subscribers).where(S.id == sid).values(soft_bounces=S.soft_bounces + 1)
    )
    count = int(conn.scalar(sa.select(S.soft_bounces).where(S.id == sid)) or 0)
    limit = settings.soft_bounce_limit
    consent.event(conn, sid, "soft-bounce", f"{detail}: {min(count, limit)} of {limit}")
    if count >= limit:
        consent.suppress(
            conn, sid, SubscriberStatus.BOUNCED, f"{provider}: {count} soft bounces in a row"
        )
