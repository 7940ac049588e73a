"""Sending one batch: the worker's part of a send.

``Sender.send_batch`` claims the batch (``lease.claim``: pending → sending, its
recipients logged as ``queued``), renders the frozen email for each recipient, calls
the provider outside any transaction, within the shared rate limit, retrying what is
safe to retry, and then records the result in bulk: the log and the batch say ``sent``
or ``failed``, or the batch is ``ambiguous`` when the provider may have it. The log's
key (issue, subscriber) makes a second delivery impossible.
"""

from __future__ import annotations

import html as html_lib
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.audience.tokens import Signer
from pipeline.render.emails import ONE_CLICK
from pipeline.sending import issues, lease
from pipeline.sending.batches import VARIANT, Outcome, count, finish_if_done
from pipeline.sending.lease import Claim
from pipeline.sending.providers.base import (
    Ambiguous,
    BatchResult,
    Message,
    Provider,
    ProviderError,
    Recipient,
    Rejected,
    Throttled,
    Transient,
)
from pipeline.sending.ratelimit import Limiter
from pipeline.settings import Settings
from pipeline.statuses import BatchStatus, DeliveryStatus, IssueStatus
from pipeline.store import db

log = logging.getLogger(__name__)


class _LimiterFailed(Exception):
    pass


def unsubscribe_list(engine: Engine, issue_id: int) -> int:
    """The list an issue's unsubscribe link leaves: its list when it goes to one, else
    0 (every list: an issue for several lists or for everyone cannot say which)."""
    with engine.connect() as conn:
        audience = conn.scalar(sa.select(db.issues.c.audience).where(db.issues.c.id == issue_id))
        if not audience or len(audience) != 1:
            return 0
        list_id = conn.scalar(sa.select(db.lists.c.id).where(db.lists.c.name == audience[0]))
    return int(list_id or 0)


class Sender:
    """Sends batches. One per worker process: it keeps the provider's connections."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        provider: Provider,
        limiter: Limiter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.provider = provider
        self.limiter = limiter
        self.signer = Signer.from_settings(settings)
        self.sleep = sleep
        self._snapshots: dict[int, Message] = {}
        self._lists: dict[int, int] = {}

    # The steps, each its own short transaction.

    def send_batch(self, batch_id: int, worker: str = "") -> Outcome:
        """Send one batch; ``worker`` is the Celery worker's name, kept with the lease."""
        claim = lease.claim(self.engine, self.settings, batch_id, worker)
        if isinstance(claim, Outcome):
            return claim
        if not claim.recipients:
            return self._settle(claim, BatchResult(), provider_id="")
        message = self._message(claim.issue_id, claim.key)
        recipients = [self._recipient(claim.issue_id, *r) for r in claim.recipients]
        try:
            result = self._call(claim, message, recipients)
        except _LimiterFailed as exc:
            return lease.release(self.engine, claim, str(exc.__cause__ or exc))
        except Ambiguous as exc:
            return self._ambiguous(claim, exc)
        except Rejected as exc:
            return self._give_up(claim, f"the provider refused the batch: {exc}", True, exc.partial)
        except ProviderError as exc:
            reason = f"gave up after {self.settings.retry_attempts} attempts: {exc}"
            return self._give_up(claim, reason, False, exc.partial)
        except Exception as exc:  # a fault in the adapter: what it sent is unknown
            log.exception("batch %s: the %s adapter failed", batch_id, self.provider.name)
            doubt = Ambiguous(f"the {self.provider.name} adapter failed: {type(exc).__name__}")
            return self._ambiguous(claim, doubt)
        ids = set(result.accepted.values())
        return self._settle(claim, result, provider_id=ids.pop() if len(ids) == 1 else "")

    # Rendering for each recipient: the frozen snapshot and the merge fields.

    def _message(self, issue_id: int, key: str) -> Message:
        base = self._snapshots.get(issue_id)
        if base is None:
            with self.engine.connect() as conn:
                snap = conn.execute(
                    sa.select(db.snapshots).where(
                        db.snapshots.c.issue_id == issue_id, db.snapshots.c.variant == VARIANT
                    )
                ).one()
            base = Message(
                subject=snap.subject,
                html=snap.html,
                text=snap.text,
                from_name=self.settings.sender_name,
                from_email=self.settings.sender_email,
                tag=snap.campaign,
                headers=dict(ONE_CLICK),
                metadata={"issue": str(issue_id)},
            )
            self._snapshots[issue_id] = base
            self._lists[issue_id] = unsubscribe_list(self.engine, issue_id)
        return Message(
            subject=base.subject,
            html=base.html,
            text=base.text,
            from_name=base.from_name,
            from_email=base.from_email,
            tag=base.tag,
            headers=base.headers,
            metadata={**base.metadata, "batch": key},
        )

    def _recipient(self, issue_id: int, sid: int, email: str, name: str) -> Recipient:
        name = " ".join(name.split())  # a name imported with line breaks fits in a header
        base = self.settings.base_url
        if issue_id not in self._lists:
            self._lists[issue_id] = unsubscribe_list(self.engine, issue_id)
        list_id = self._lists[issue_id]
        unsubscribe = f"{base}/unsubscribe/{self.signer.sign('unsubscribe', sid, list_id)}"
        return Recipient(
            subscriber_id=sid,
            email=email,
            name=name,
            fields={
                "unsubscribe_url": unsubscribe,
                "preferences_url": f"{base}/preferences/{self.signer.sign('preferences', sid)}",
                "click_token": self.signer.sign("click", sid, issue_id),
                "name": name,
                "name_html": html_lib.escape(name),
            },
            headers={"List-Unsubscribe": f"<{unsubscribe}>"},
        )

    # The provider call.

    def _call(self, claim: Claim, message: Message, recipients: list[Recipient]) -> BatchResult:
        """The provider call with the shared rate limit and bounded, jittered retries.

        Throttling waits as long as the provider asks (within the retry budget); 5xx and
        refused connections count against ``retry_attempts``. Everything stays well
        inside the lease, which is renewed before each wait. When a provider answered
        for some recipients before failing (SMTP), only the others are tried again, and
        an error raised from here carries everything answered so far in ``partial``."""
        s = self.settings
        budget = s.retry_attempts * s.retry_max_seconds
        deadline = time.monotonic() + budget
        failures = 0
        done = BatchResult()
        while True:
            try:
                self.limiter.acquire(len(recipients), max_wait=max(deadline - time.monotonic(), 1))
            except Exception as exc:  # Redis down or no tokens in time: nothing was sent
                if done.accepted or done.rejected:
                    raise Transient("the rate limiter is unavailable", partial=done) from exc
                raise _LimiterFailed("the rate limiter is unavailable") from exc
            try:
                result = self.provider.send(message, recipients, claim.key)
                done.accepted.update(result.accepted)
                done.rejected.update(result.rejected)
                return done
            except ProviderError as exc:
                if exc.partial is not None:
                    done.accepted.update(exc.partial.accepted)
                    done.rejected.update(exc.partial.rejected)
                    answered = done.accepted.keys() | done.rejected.keys()
                    recipients = [r for r in recipients if r.subscriber_id not in answered]
                exc.partial = done
                if isinstance(exc, Throttled):
                    wait = exc.retry_after if exc.retry_after is not None else self._backoff(0)
                    wait = min(max(wait, 0.0), s.retry_max_seconds)
                    self.limiter.penalise(wait)
                elif isinstance(exc, Transient) or (
                    isinstance(exc, Ambiguous) and self.provider.idempotent
                ):  # an idempotent provider drops the repeat: the same key is safe
                    failures += 1
                    if failures >= s.retry_attempts:
                        raise
                    wait = self._backoff(failures)
                else:
                    raise
                if not recipients:
                    return done
                if time.monotonic() + wait > deadline:
                    raise
                log.info("batch %s: %s; retrying in %.2f s", claim.batch_id, exc, wait)
            lease.renew(self.engine, self.settings, claim)
            self.sleep(wait)

    def _backoff(self, failures: int) -> float:
        s = self.settings
        return random.uniform(0, min(s.retry_max_seconds, s.retry_base_seconds * 2**failures))

    # Recording what happened, in bulk.

    def _settle(self, claim: Claim, result: BatchResult, provider_id: str) -> Outcome:
        at = db.now()
        answered = result.accepted.keys() | result.rejected.keys()
        missing = [sid for sid, _, _ in claim.recipients if sid not in answered]
        failures = dict(result.rejected)
        failures.update({sid: "the provider did not answer for this recipient" for sid in missing})
        with self.engine.begin() as conn:
            if result.accepted and not failures and provider_id:
                _mark_all_sent(conn, claim.batch_id, provider_id, at)
            else:
                _mark(conn, claim.issue_id, result.accepted, failures, at)
            b = db.batches.c
            conn.execute(
                sa.update(db.batches)
                .where(b.id == claim.batch_id, b.lease_token == claim.token)
                .values(
                    status=BatchStatus.SENT,
                    lease_until=None,
                    provider_id=provider_id or None,
                    updated_at=at,
                )
            )
            count(conn, claim.issue_id, len(result.accepted), len(failures), 0)
            if failures:
                sample = next(iter(failures.values()))
                issues.event(
                    conn,
                    claim.issue_id,
                    "warning",
                    f"batch {claim.batch_id}: {len(failures)} failed ({sample})",
                )
            self._check_threshold(conn, claim.issue_id)
            finish_if_done(conn, claim.issue_id)
        return Outcome(
            claim.batch_id,
            "sent",
            sent=len(result.accepted),
            failed=len(failures),
            skipped=claim.skipped,
        )

    def _check_threshold(self, conn: Connection, issue_id: int) -> None:
        i = db.issues.c
        row = conn.execute(sa.select(i.sent, i.failed, i.status).where(i.id == issue_id)).one()
        tried = row.sent + row.failed
        s = self.settings
        if row.status != IssueStatus.SENDING or tried < s.error_min_recipients:
            return
        share = row.failed / tried
        if share > s.error_threshold:
            reason = (
                f"paused: {share:.0%} of {tried} deliveries failed (error_threshold is"
                f" {s.error_threshold:.0%}); see `letterpress status`, fix the cause, then run"
                f" `letterpress issue retry-failed {issue_id}` (it resumes the send too)"
            )
            conn.execute(
                sa.update(db.issues)
                .where(i.id == issue_id, i.status == IssueStatus.SENDING)
                .values(status=IssueStatus.PAUSED, status_reason=reason, updated_at=db.now())
            )
            issues.event(conn, issue_id, "error", reason)

    def _ambiguous(self, claim: Claim, exc: ProviderError) -> Outcome:
        """The provider may have the batch: record what is known, never send it again
        blindly. Recipients the provider confirmed (a partial result) count as sent."""
        partial = getattr(exc, "partial", None)
        at = db.now()
        b = db.batches.c
        with self.engine.begin() as conn:
            if partial is not None and (partial.accepted or partial.rejected):
                _mark_partial(conn, claim, partial, at)
            conn.execute(
                sa.update(db.batches)
                .where(b.id == claim.batch_id, b.lease_token == claim.token)
                .values(
                    status=BatchStatus.AMBIGUOUS,
                    lease_until=None,
                    error=str(exc)[:500],
                    updated_at=at,
                )
            )
            issues.event(
                conn,
                claim.issue_id,
                "error",
                f"batch {claim.batch_id} is ambiguous ({exc}): run"
                f" `letterpress issue reconcile {claim.issue_id}`",
            )
        return Outcome(claim.batch_id, "ambiguous", detail=str(exc))

    def _give_up(
        self, claim: Claim, reason: str, pause: bool, partial: BatchResult | None
    ) -> Outcome:
        """The provider took none of the rest (it said so): those recipients failed."""
        at = db.now()
        d, b, i = db.deliveries.c, db.batches.c, db.issues.c
        with self.engine.begin() as conn:
            if partial is not None and (partial.accepted or partial.rejected):
                _mark_partial(conn, claim, partial, at)
            failed = conn.execute(
                sa.update(db.deliveries)
                .where(d.batch_id == claim.batch_id, d.status == DeliveryStatus.QUEUED)
                .values(status=DeliveryStatus.FAILED, reason=reason[:500], updated_at=at)
            ).rowcount
            conn.execute(
                sa.update(db.batches)
                .where(b.id == claim.batch_id, b.lease_token == claim.token)
                .values(
                    status=BatchStatus.FAILED, lease_until=None, error=reason[:500], updated_at=at
                )
            )
            count(conn, claim.issue_id, 0, failed, 0)
            issues.event(conn, claim.issue_id, "error", f"batch {claim.batch_id}: {reason}")
            if pause:
                conn.execute(
                    sa.update(db.issues)
                    .where(i.id == claim.issue_id, i.status == IssueStatus.SENDING)
                    .values(
                        status=IssueStatus.PAUSED, status_reason=f"paused: {reason}", updated_at=at
                    )
                )
            else:
                self._check_threshold(conn, claim.issue_id)
            finish_if_done(conn, claim.issue_id)
        return Outcome(claim.batch_id, "failed", failed=failed, detail=reason)


def _mark_all_sent(conn: Connection, batch_id: int, provider_id: str, at: datetime) -> None:
    """Everyone took one message id: one statement for the whole batch."""
    d = db.deliveries.c
    conn.execute(
        sa.update(db.deliveries)
        .where(d.batch_id == batch_id, d.status == DeliveryStatus.QUEUED)
        .values(status=DeliveryStatus.SENT, provider_id=provider_id, updated_at=at)
    )


def _mark(
    conn: Connection, issue_id: int, sent: dict[int, str], failed: dict[int, str], at: datetime
) -> None:
    """Queued log rows become sent (with the provider's message id) or failed (reason)."""
    d = db.deliveries.c
    queued = sa.and_(
        d.issue_id == issue_id,
        d.subscriber_id == sa.bindparam("sid"),
        d.status == DeliveryStatus.QUEUED,
    )
    if sent:
        conn.execute(
            sa.update(db.deliveries)
            .where(queued)
            .values(status=DeliveryStatus.SENT, provider_id=sa.bindparam("pid"), updated_at=at),
            [{"sid": k, "pid": v} for k, v in sent.items()],
        )
    if failed:
        conn.execute(
            sa.update(db.deliveries)
            .where(queued)
            .values(status=DeliveryStatus.FAILED, reason=sa.bindparam("why"), updated_at=at),
            [{"sid": k, "why": v[:500]} for k, v in failed.items()],
        )


def _mark_partial(conn: Connection, claim: Claim, partial: BatchResult, at: datetime) -> None:
    """What the provider answered before it failed: logged and counted."""
    _mark(conn, claim.issue_id, partial.accepted, partial.rejected, at)
    count(conn, claim.issue_id, len(partial.accepted), len(partial.rejected), 0)
