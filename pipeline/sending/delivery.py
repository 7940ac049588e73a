"""Delivery: from a started issue to every recipient's inbox, once.

1. ``prepare`` (when a send starts): render the email once and freeze it in
   ``snapshots``; cut the audience into batches of subscriber-id ranges (rows in
   ``batches``). Nobody is copied: the audience is "members of the lists, active,
   confirmed before the send started", evaluated range by range, so a million
   recipients cost one pass over their ids.
2. ``Sender.send_batch`` (one worker task per batch): claim the batch (pending →
   sending, with a lease) and write its recipients to the delivery log as ``queued``
   in the same transaction; call the provider outside any transaction, within the
   shared rate limit, retrying what is safe to retry; then mark the log and the batch
   in bulk. The log's key (issue, subscriber) makes a second delivery impossible.
3. ``sweep`` (periodic): a batch whose lease ran out may have been accepted by the
   provider. It goes back to pending (and is sent again with the same idempotency
   key) only when the provider honours that key; otherwise it becomes ``ambiguous``
   and waits for ``reconcile``. Pending batches whose task was lost (a broker restart)
   are enqueued again. The issue is finished by counting batches, not by callbacks.
"""

from __future__ import annotations

import html as html_lib
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.audience import tracking
from pipeline.audience.subscribers import normalise_email
from pipeline.audience.tokens import Signer
from pipeline.content.store import Catalog
from pipeline.render.emails import ONE_CLICK, EmailRenderer
from pipeline.sending import issues
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
from pipeline.settings import Settings
from pipeline.store import db

log = logging.getLogger(__name__)

VARIANT = "default"  # the email, with merge fields
WEB_VARIANT = "web"  # the public web page of the issue ("view in browser")


class Dispatcher(Protocol):
    """Puts batch ids on a queue (Celery in production, inline in the demo)."""

    def enqueue(self, batch_ids: Sequence[int]) -> None: ...


class Limiter(Protocol):
    def acquire(self, n: int, max_wait: float) -> float: ...

    def penalise(self, seconds: float) -> None: ...


# -- 1. prepare ------------------------------------------------------------------------


def audience_filter(
    conn: Connection,
    audience: Sequence[str],
    started_at: datetime,
    first: int | None = None,
    last: int | None = None,
) -> Any:
    """Who an issue is for: members of its lists (everyone if none) confirmed before it
    started, optionally within an id range. Their status now decides between sending
    and skipping.

    The range is repeated on the memberships, so each batch reads one slice of the
    (list, subscriber) key, whatever the planner knows of the table's size."""
    s, m = db.subscribers.c, db.memberships.c
    conditions = [s.confirmed_at.is_not(None), s.confirmed_at <= started_at]
    if first is not None and last is not None:
        conditions += [s.id >= first, s.id <= last]
    if audience:
        list_ids = list(
            conn.scalars(sa.select(db.lists.c.id).where(db.lists.c.name.in_(list(audience))))
        )
        member = sa.select(1).where(m.subscriber_id == s.id, m.list_id.in_(list_ids))
        if first is not None and last is not None:
            member = member.where(m.subscriber_id >= first, m.subscriber_id <= last)
        conditions.append(sa.exists(member))
    return sa.and_(*conditions)


def view_url(settings: Settings, issue_id: int) -> str:
    return f"{settings.base_url}/issues/{issue_id}/"


def prepare(
    engine: Engine,
    settings: Settings,
    catalog: Catalog,
    issue_id: int,
    batch_size: int,
    scores: dict[str, float] | None = None,
) -> list[int]:
    """Freeze the email and the batches of a started issue; idempotent.

    Returns the ids of its pending batches (to enqueue). A broken article fails the
    issue with the reason, rather than sending something else.
    """
    issue = issues.get(engine, issue_id)
    if issue.status != "sending" or issue.started_at is None:
        return []
    if issue.prepared_at is not None:
        with engine.connect() as conn:
            return issues._pending_batches(conn, issue_id)
    try:
        email = EmailRenderer(settings).render(
            catalog,
            [a.slug for a in issue.articles],
            subject=issue.subject,
            preheader=issue.preheader or None,
            intro=issue.intro,
            campaign=f"issue-{issue_id}",
            scores=scores,
            full_articles=None,
            full_slugs=[a.slug for a in issue.articles if a.full],
            view_url=view_url(settings, issue_id),
        )
    except Exception as exc:  # the content is broken: say so on the issue, send nothing
        with engine.begin() as conn:
            issues._transition(
                conn,
                issue_id,
                ("sending",),
                "failed",
                status="failed",
                status_reason=f"could not render the email: {exc}",
                finished_at=db.now(),
            )
            issues.event(conn, issue_id, "error", f"could not render the email: {exc}")
        raise
    started = issue.started_at
    at = db.now()
    with engine.begin() as conn:
        where = audience_filter(conn, issue.audience, started)
        if conn.scalar(sa.select(db.issues.c.prepared_at).where(db.issues.c.id == issue_id)):
            return issues._pending_batches(conn, issue_id)  # prepared meanwhile
        tracked, links = tracking.track_links(_html_merge_fields(email.html), settings)
        snapshot = {
            "issue_id": issue_id,
            "subject": email.subject,
            "preheader": email.preheader,
            "text": email.text,
            "campaign": f"issue-{issue_id}",
            "created_at": at,
        }
        conn.execute(
            sa.insert(db.snapshots),
            [
                {**snapshot, "variant": VARIANT, "html": tracked},
                {
                    **snapshot,
                    "variant": WEB_VARIANT,
                    "html": tracking.web_variant(email.html, settings),
                },
            ],
        )
        tracking.save_links(conn, issue_id, links)
        rows = []
        total = 0
        for seq, (first, last, count) in enumerate(_ranges(conn, where, batch_size), 1):
            rows.append(
                {
                    "issue_id": issue_id,
                    "seq": seq,
                    "first_id": first,
                    "last_id": last,
                    "status": "pending",
                    "updated_at": at,
                }
            )
            total += count
        if rows:
            conn.execute(sa.insert(db.batches), rows)
        conn.execute(
            sa.update(db.issues)
            .where(db.issues.c.id == issue_id)
            .values(prepared_at=at, recipients=total, updated_at=at)
        )
        issues.event(conn, issue_id, "info", f"started: {total} recipients in {len(rows)} batches")
        if not rows:
            _finish_if_done(conn, issue_id)
        return issues._pending_batches(conn, issue_id)


def unsubscribe_list(engine: Engine, issue_id: int) -> int:
    """The list an issue's unsubscribe link leaves: its list when it goes to one, else
    0 (every list: an issue for several lists or for everyone cannot say which)."""
    with engine.connect() as conn:
        audience = conn.scalar(sa.select(db.issues.c.audience).where(db.issues.c.id == issue_id))
        if not audience or len(audience) != 1:
            return 0
        list_id = conn.scalar(sa.select(db.lists.c.id).where(db.lists.c.name == audience[0]))
    return int(list_id or 0)


def _html_merge_fields(html: str) -> str:
    # In the HTML part a name must arrive escaped; the text part takes it as it is.
    return html.replace("%%name%%", "%%name_html%%")


def _ranges(conn: Connection, where: Any, size: int) -> Iterator[tuple[int, int, int]]:
    """(first id, last id, count) of consecutive runs of ``size`` audience members."""
    s = db.subscribers.c
    result = conn.execute(
        sa.select(s.id).where(where).order_by(s.id), execution_options={"yield_per": 20_000}
    )
    first = last = None
    count = 0
    for (sid,) in result:
        if first is None:
            first = sid
        last = sid
        count += 1
        if count == size:
            yield int(first), int(last), count
            first, count = None, 0
    if first is not None and last is not None:
        yield int(first), int(last), count


# -- 2. send one batch -----------------------------------------------------------------


@dataclass
class Outcome:
    batch_id: int
    status: str  # sent, failed, ambiguous, skipped (not ours to send), released
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    detail: str = ""


class _LimiterFailed(Exception):
    pass


@dataclass
class _Claim:
    batch_id: int
    issue_id: int
    token: str
    key: str
    recipients: list[tuple[int, str, str]]  # id, email, name
    skipped: int


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

    def send_batch(self, batch_id: int) -> Outcome:
        claim = self._claim(batch_id)
        if isinstance(claim, Outcome):
            return claim
        if not claim.recipients:
            return self._settle(claim, BatchResult(), provider_id="")
        message = self._message(claim.issue_id, claim.key)
        recipients = [self._recipient(claim.issue_id, *r) for r in claim.recipients]
        try:
            result = self._call(claim, message, recipients)
        except _LimiterFailed as exc:
            return self._release(claim, str(exc.__cause__ or exc))
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

    def _claim(self, batch_id: int) -> _Claim | Outcome:
        token = secrets.token_hex(16)
        at = db.now()
        b = db.batches.c
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(
                    b.issue_id,
                    b.status,
                    b.retry,
                    b.attempts,
                    b.first_id,
                    b.last_id,
                    b.idempotency_key,
                ).where(b.id == batch_id)
            ).first()
            if row is None:
                return Outcome(batch_id, "skipped", detail="no such batch")
            if row.status != "pending":
                return Outcome(batch_id, "skipped", detail=f"batch is {row.status}")
            issue = conn.execute(
                sa.select(db.issues.c.status, db.issues.c.started_at, db.issues.c.audience).where(
                    db.issues.c.id == row.issue_id
                )
            ).one()
            if issue.status != "sending":
                return Outcome(batch_id, "skipped", detail=f"issue is {issue.status}")
            key = row.idempotency_key or f"lp-{row.issue_id}-{batch_id}-{secrets.token_hex(6)}"
            claimed = conn.execute(
                sa.update(db.batches)
                .where(b.id == batch_id, b.status == "pending")
                .values(
                    status="sending",
                    lease_token=token,
                    idempotency_key=key,
                    lease_until=at + timedelta(seconds=self.settings.lease_seconds),
                    attempts=b.attempts + 1,
                    updated_at=at,
                )
            ).rowcount
            if claimed != 1:
                return Outcome(batch_id, "skipped", detail="claimed by another worker")
            skipped = 0
            if not row.retry and row.attempts == 0:
                skipped = self._materialise(conn, row, batch_id, issue, at)
            skipped += self._skip_departed(conn, batch_id, issue.audience, at)
            if skipped:
                self._count(conn, row.issue_id, 0, 0, skipped)
            d, s = db.deliveries.c, db.subscribers.c
            recipients = [
                (int(r.id), r.email, r.name)
                for r in conn.execute(
                    sa.select(s.id, s.email, s.name)
                    .select_from(db.deliveries.join(db.subscribers, s.id == d.subscriber_id))
                    .where(d.batch_id == batch_id, d.status == "queued")
                    .order_by(s.id)
                )
            ]
        return _Claim(batch_id, int(row.issue_id), token, key, recipients, skipped)

    def _materialise(
        self, conn: Connection, batch: Any, batch_id: int, issue: Any, at: datetime
    ) -> int:
        """Write the batch's recipients to the log, once: ``queued`` for those still
        active, ``skipped`` for those who left after the send started (their number)."""
        s, d = db.subscribers.c, db.deliveries.c
        where = audience_filter(
            conn, issue.audience, issue.started_at, batch.first_id, batch.last_id
        )
        active = sa.and_(s.status == "active", s.paused.is_(False))
        rows = sa.select(
            sa.literal(batch.issue_id, db.ID),
            s.id,
            sa.literal(batch_id, db.ID),
            sa.case((active, "queued"), else_="skipped"),
            sa.case((active, None), (s.status == "active", "paused"), else_=s.status),
            sa.literal(at, db.UTCDateTime()),
        ).where(where)
        columns = ["issue_id", "subscriber_id", "batch_id", "status", "reason", "updated_at"]
        # One statement, run inside the database: no row passes through Python.
        conn.execute(db.insert_ignore(conn, db.deliveries).from_select(columns, rows))
        skipped = conn.scalar(
            sa.select(sa.func.count()).where(d.batch_id == batch_id, d.status == "skipped")
        )
        return int(skipped or 0)

    def _skip_departed(
        self, conn: Connection, batch_id: int, audience: Sequence[str], at: datetime
    ) -> int:
        """Queued recipients who unsubscribed, bounced, complained, paused or left the
        issue's lists since: skipped."""
        d, s, m = db.deliveries.c, db.subscribers.c, db.memberships.c
        departed = sa.or_(
            sa.exists().where(
                s.id == d.subscriber_id, sa.or_(s.status != "active", s.paused.is_(True))
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
                .where(d.batch_id == batch_id, d.status == "queued", departed)
                .values(status="skipped", reason="left before delivery", updated_at=at)
            ).rowcount
        )

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

    def _call(self, claim: _Claim, message: Message, recipients: list[Recipient]) -> BatchResult:
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
            self._renew(claim)
            self.sleep(wait)

    def _backoff(self, failures: int) -> float:
        s = self.settings
        return random.uniform(0, min(s.retry_max_seconds, s.retry_base_seconds * 2**failures))

    def _renew(self, claim: _Claim) -> None:
        b = db.batches.c
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(db.batches)
                .where(b.id == claim.batch_id, b.lease_token == claim.token)
                .values(lease_until=db.now() + timedelta(seconds=self.settings.lease_seconds))
            )

    def _settle(self, claim: _Claim, result: BatchResult, provider_id: str) -> Outcome:
        at = db.now()
        d, b = db.deliveries.c, db.batches.c
        answered = result.accepted.keys() | result.rejected.keys()
        missing = [sid for sid, _, _ in claim.recipients if sid not in answered]
        failures = dict(result.rejected)
        failures.update({sid: "the provider did not answer for this recipient" for sid in missing})
        with self.engine.begin() as conn:
            if result.accepted and not failures and provider_id:
                # Everyone took one message id: one statement for the whole batch.
                conn.execute(
                    sa.update(db.deliveries)
                    .where(d.batch_id == claim.batch_id, d.status == "queued")
                    .values(status="sent", provider_id=provider_id, updated_at=at)
                )
            else:
                _mark(conn, claim.issue_id, result.accepted, failures, at)
            conn.execute(
                sa.update(db.batches)
                .where(b.id == claim.batch_id, b.lease_token == claim.token)
                .values(
                    status="sent", lease_until=None, provider_id=provider_id or None, updated_at=at
                )
            )
            self._count(conn, claim.issue_id, len(result.accepted), len(failures), 0)
            if failures:
                sample = next(iter(failures.values()))
                issues.event(
                    conn,
                    claim.issue_id,
                    "warning",
                    f"batch {claim.batch_id}: {len(failures)} failed ({sample})",
                )
            self._check_threshold(conn, claim.issue_id)
            _finish_if_done(conn, claim.issue_id)
        return Outcome(
            claim.batch_id,
            "sent",
            sent=len(result.accepted),
            failed=len(failures),
            skipped=claim.skipped,
        )

    def _count(self, conn: Connection, issue_id: int, sent: int, failed: int, skipped: int) -> None:
        i = db.issues.c
        conn.execute(
            sa.update(db.issues)
            .where(i.id == issue_id)
            .values(sent=i.sent + sent, failed=i.failed + failed, skipped=i.skipped + skipped)
        )

    def _check_threshold(self, conn: Connection, issue_id: int) -> None:
        row = conn.execute(
            sa.select(db.issues.c.sent, db.issues.c.failed, db.issues.c.status).where(
                db.issues.c.id == issue_id
            )
        ).one()
        tried = row.sent + row.failed
        s = self.settings
        if row.status == "sending" and tried >= s.error_min_recipients:
            share = row.failed / tried
            if share > s.error_threshold:
                reason = (
                    f"paused: {share:.0%} of {tried} deliveries failed (error_threshold is"
                    f" {s.error_threshold:.0%}); see `letterpress status`, fix the cause, then run"
                    f" `letterpress issue retry-failed {issue_id}` (it resumes the send too)"
                )
                conn.execute(
                    sa.update(db.issues)
                    .where(db.issues.c.id == issue_id, db.issues.c.status == "sending")
                    .values(status="paused", status_reason=reason, updated_at=db.now())
                )
                issues.event(conn, issue_id, "error", reason)

    def _ambiguous(self, claim: _Claim, exc: ProviderError) -> Outcome:
        """The provider may have the batch: record what is known, never send it again
        blindly. Recipients the provider confirmed (a partial result) count as sent."""
        partial = getattr(exc, "partial", None)
        at = db.now()
        with self.engine.begin() as conn:
            if partial is not None and (partial.accepted or partial.rejected):
                self._mark_partial(conn, claim, partial, at)
            conn.execute(
                sa.update(db.batches)
                .where(db.batches.c.id == claim.batch_id, db.batches.c.lease_token == claim.token)
                .values(status="ambiguous", lease_until=None, error=str(exc)[:500], updated_at=at)
            )
            issues.event(
                conn,
                claim.issue_id,
                "error",
                f"batch {claim.batch_id} is ambiguous ({exc}): run"
                f" `letterpress issue reconcile {claim.issue_id}`",
            )
        return Outcome(claim.batch_id, "ambiguous", detail=str(exc))

    def _mark_partial(
        self, conn: Connection, claim: _Claim, partial: BatchResult, at: datetime
    ) -> None:
        _mark(conn, claim.issue_id, partial.accepted, partial.rejected, at)
        self._count(conn, claim.issue_id, len(partial.accepted), len(partial.rejected), 0)

    def _release(self, claim: _Claim, reason: str) -> Outcome:
        """Nothing was sent: the batch goes back to pending, for the sweeper to enqueue."""
        b = db.batches.c
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(db.batches)
                .where(b.id == claim.batch_id, b.lease_token == claim.token)
                .values(
                    status="pending",
                    lease_token=None,
                    lease_until=None,
                    enqueued_at=None,
                    error=reason[:500],
                    updated_at=db.now(),
                )
            )
        return Outcome(claim.batch_id, "released", detail=reason)

    def _give_up(
        self, claim: _Claim, reason: str, pause: bool, partial: BatchResult | None
    ) -> Outcome:
        """The provider took none of the rest (it said so): those recipients failed."""
        at = db.now()
        d = db.deliveries.c
        with self.engine.begin() as conn:
            if partial is not None and (partial.accepted or partial.rejected):
                self._mark_partial(conn, claim, partial, at)
            failed = conn.execute(
                sa.update(db.deliveries)
                .where(d.batch_id == claim.batch_id, d.status == "queued")
                .values(status="failed", reason=reason[:500], updated_at=at)
            ).rowcount
            conn.execute(
                sa.update(db.batches)
                .where(db.batches.c.id == claim.batch_id, db.batches.c.lease_token == claim.token)
                .values(status="failed", lease_until=None, error=reason[:500], updated_at=at)
            )
            self._count(conn, claim.issue_id, 0, failed, 0)
            issues.event(conn, claim.issue_id, "error", f"batch {claim.batch_id}: {reason}")
            if pause:
                conn.execute(
                    sa.update(db.issues)
                    .where(db.issues.c.id == claim.issue_id, db.issues.c.status == "sending")
                    .values(status="paused", status_reason=f"paused: {reason}", updated_at=at)
                )
            else:
                self._check_threshold(conn, claim.issue_id)
            _finish_if_done(conn, claim.issue_id)
        return Outcome(claim.batch_id, "failed", failed=failed, detail=reason)


def _mark(
    conn: Connection, issue_id: int, sent: dict[int, str], failed: dict[int, str], at: datetime
) -> None:
    """Queued log rows become sent (with the provider's message id) or failed (reason)."""
    d = db.deliveries.c
    queued = sa.and_(
        d.issue_id == issue_id, d.subscriber_id == sa.bindparam("sid"), d.status == "queued"
    )
    if sent:
        conn.execute(
            sa.update(db.deliveries)
            .where(queued)
            .values(status="sent", provider_id=sa.bindparam("pid"), updated_at=at),
            [{"sid": k, "pid": v} for k, v in sent.items()],
        )
    if failed:
        conn.execute(
            sa.update(db.deliveries)
            .where(queued)
            .values(status="failed", reason=sa.bindparam("why"), updated_at=at),
            [{"sid": k, "why": v[:500]} for k, v in failed.items()],
        )


def _finish_if_done(conn: Connection, issue_id: int) -> bool:
    """Sent once no batch is pending, sending or ambiguous (counted, not called back)."""
    b = db.batches.c
    open_batches = conn.scalar(
        sa.select(sa.func.count()).where(
            b.issue_id == issue_id, b.status.in_(("pending", "sending", "ambiguous"))
        )
    )
    if open_batches:
        return False
    at = db.now()
    done = conn.execute(
        sa.update(db.issues)
        .where(
            db.issues.c.id == issue_id,
            db.issues.c.status.in_(("sending", "paused")),
            db.issues.c.prepared_at.is_not(None),
        )
        .values(status="sent", finished_at=at, updated_at=at)
    ).rowcount
    if done:
        issues.event(conn, issue_id, "info", "sent")
    return bool(done)


# -- 3. sweep and reconcile ------------------------------------------------------------


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
    b = db.batches.c
    result = Sweep([], [], [])
    with engine.begin() as conn:
        expired = list(
            conn.execute(
                sa.select(b.id, b.issue_id).where(b.status == "sending", b.lease_until < at)
            )
        )
        for batch_id, issue_id in expired:
            if idempotent:
                done = conn.execute(
                    sa.update(db.batches)
                    .where(b.id == batch_id, b.status == "sending", b.lease_until < at)
                    .values(
                        status="pending",
                        lease_token=None,
                        lease_until=None,
                        enqueued_at=at,
                        updated_at=at,
                    )
                ).rowcount
                if done:
                    result.requeue.append(int(batch_id))
                    issues.event(
                        conn,
                        issue_id,
                        "warning",
                        f"batch {batch_id}: lease ran out; sending again with the"
                        " same idempotency key",
                    )
            else:
                done = conn.execute(
                    sa.update(db.batches)
                    .where(b.id == batch_id, b.status == "sending", b.lease_until < at)
                    .values(
                        status="ambiguous",
                        lease_until=None,
                        updated_at=at,
                        error="the worker stopped during the provider call",
                    )
                ).rowcount
                if done:
                    result.ambiguous.append(int(batch_id))
                    issues.event(
                        conn,
                        issue_id,
                        "error",
                        f"batch {batch_id} is ambiguous (its worker stopped during the"
                        f" provider call): run `letterpress issue reconcile {issue_id}`",
                    )
        if queue_empty:
            stale = at - timedelta(seconds=settings.sweep_seconds * 2)
            lost = conn.execute(
                sa.select(b.id)
                .select_from(db.batches.join(db.issues, db.issues.c.id == b.issue_id))
                .where(
                    b.status == "pending",
                    db.issues.c.status == "sending",
                    sa.or_(b.enqueued_at.is_(None), b.enqueued_at < stale),
                )
                .order_by(b.id)
            ).scalars()
            result.requeue.extend(int(x) for x in lost)
        result.prepare = [
            int(x)
            for x in conn.scalars(
                sa.select(db.issues.c.id).where(
                    db.issues.c.status == "sending",
                    db.issues.c.prepared_at.is_(None),
                    db.issues.c.started_at < at - timedelta(seconds=settings.sweep_seconds),
                )
            )
        ]
    return result


def _stored_form(address: str) -> str:
    try:
        return normalise_email(address)
    except ValueError:
        return address.lower()


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
            .where(i.id == issue_id, i.status == "sending")
            .values(status="paused", status_reason=reason[:2000], updated_at=db.now())
        ).rowcount
        conn.execute(
            sa.update(db.batches)
            .where(b.id == batch_id, b.status == "pending")
            .values(enqueued_at=None, error=problem[:500], updated_at=db.now())
        )
        if paused:
            issues.event(conn, int(issue_id), "error", reason)


def mark_enqueued(engine: Engine, batch_ids: Sequence[int]) -> None:
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
    b, d, s = db.batches.c, db.deliveries.c, db.subscribers.c
    with engine.connect() as conn:
        issues._load(conn, issue_id)
        ambiguous = list(
            conn.execute(
                sa.select(b.id, b.idempotency_key, b.updated_at, b.attempts).where(
                    b.issue_id == issue_id, b.status == "ambiguous"
                )
            )
        )
        conn.rollback()
    out = Reconciled(len(ambiguous), 0, [], [])
    for batch_id, key, updated_at, _ in ambiguous:
        since = updated_at - timedelta(days=1)
        known = provider.accepted(key, since) if key else None
        if known is not None:  # providers answer in the wire form (xn-- domains)
            known = {_stored_form(address) for address in known}
        if known is None and assume is None:
            out.unknown.append(int(batch_id))
            continue
        at = db.now()
        with engine.begin() as conn:
            queued = list(
                conn.execute(
                    sa.select(d.subscriber_id, s.email)
                    .select_from(db.deliveries.join(db.subscribers, s.id == d.subscriber_id))
                    .where(d.batch_id == batch_id, d.status == "queued")
                )
            )
            if known is not None:
                accepted = {sid for sid, email in queued if email.lower() in known}
                how = "from the provider's records"
            else:
                accepted = {sid for sid, _ in queued} if assume == "sent" else set()
                how = f"by the operator's choice ({assume})"
            if accepted:
                conn.execute(
                    sa.update(db.deliveries)
                    .where(
                        d.issue_id == issue_id,
                        d.subscriber_id == sa.bindparam("sid"),
                        d.status == "queued",
                    )
                    .values(status="sent", reason=f"reconciled {how}", updated_at=at),
                    [{"sid": sid} for sid in accepted],
                )
                conn.execute(
                    sa.update(db.issues)
                    .where(db.issues.c.id == issue_id)
                    .values(sent=db.issues.c.sent + len(accepted))
                )
            rest = len(queued) - len(accepted)
            if rest:
                # The others never reached the provider: the same batch goes again, with a
                # fresh key, to them only (the log keeps the ones settled above out).
                conn.execute(
                    sa.update(db.batches)
                    .where(b.id == batch_id)
                    .values(
                        status="pending",
                        idempotency_key=None,
                        lease_token=None,
                        retry=True,
                        updated_at=at,
                        error="",
                    )
                )
                out.requeued.append(int(batch_id))
            else:
                conn.execute(
                    sa.update(db.batches)
                    .where(b.id == batch_id)
                    .values(status="sent", updated_at=at, error="")
                )
            out.sent += len(accepted)
            issues.event(
                conn,
                issue_id,
                "info",
                f"batch {batch_id} reconciled {how}: {len(accepted)} sent, {rest} to send again",
            )
            _finish_if_done(conn, issue_id)
    return out


class InlineDispatcher:
    """Runs each batch at once in this process: the embedded default, without a broker."""

    def __init__(self, sender: Sender, progress: Callable[[Outcome], None] | None = None) -> None:
        self.sender = sender
        self.progress = progress
        self.outcomes: list[Outcome] = []

    def enqueue(self, batch_ids: Sequence[int]) -> None:
        for batch_id in batch_ids:
            outcome = self.sender.send_batch(batch_id)
            self.outcomes.append(outcome)
            if self.progress is not None:
                self.progress(outcome)
