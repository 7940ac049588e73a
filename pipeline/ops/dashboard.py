"""The operators' dashboard: what the sending machinery is doing, at a glance.

``gather`` reads what is quick to read on every refresh: the broker's queues, the issues
that are sending, paused or scheduled, ambiguous batches, the provider's rate-limit
bucket and any hold a 429 put on it, and the recent errors. Three things are slow to
ask and change slowly, so ``Slow`` keeps each and asks again in the background once it
is older than its ``ttl``, while the page shows the last answer with the time it was
made (listmonk keeps its dashboard counts in a materialised view for the same reason):

- the workers, from Celery's ping and inspect (each waits for the workers' replies);
- the subscribers by status (a count over every subscriber);
- sent messages and clicks a day over the last 30 days, for the chart.

Sent messages are counted by the day their issue started sending (the issues' running
totals), not per message: a million-recipient send counts once, on its first day.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.broker import WorkerInfo
from pipeline.ops.status import IssueLine, QueueDepths, depths_of
from pipeline.sending import issues
from pipeline.sending.ratelimit import BucketState, Limiter
from pipeline.settings import Settings
from pipeline.statuses import BatchStatus, IssueStatus, SubscriberStatus
from pipeline.store import db

T = TypeVar("T")

CHART_DAYS = 30
ERRORS_SHOWN = 10


@dataclass(frozen=True)
class Known(Generic[T]):
    """A slow answer and when it was made."""

    value: T
    at: datetime
    seconds: float  # how long it took to find


class Slow(Generic[T]):
    """One slow question, answered in a background thread: ``get`` returns the last
    answer at once (waiting up to ``wait`` seconds for the very first) and, when it is
    older than ``ttl``, asks again without making the caller wait. A question that
    raises keeps the previous answer and shows the error."""

    def __init__(self, ask: Callable[[], T], ttl: float) -> None:
        self.ask = ask
        self.ttl = ttl
        self._lock = threading.Lock()
        self._known: Known[T] | None = None
        self._asked: float | None = None  # monotonic time the last question started
        self._running: threading.Thread | None = None
        self.error = ""

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            value = self.ask()
        except Exception as exc:  # shown beside the last answer, asked again next time
            self.error = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            return
        self._known = Known(value, db.now(), time.perf_counter() - started)
        self.error = ""

    def get(self, wait: float = 0.0) -> Known[T] | None:
        with self._lock:
            stale = self._asked is None or time.monotonic() - self._asked > self.ttl
            if stale and (self._running is None or not self._running.is_alive()):
                self._asked = time.monotonic()
                self._running = threading.Thread(target=self._run, daemon=True)
                self._running.start()
            running = self._running
        if self._known is None and running is not None and wait > 0:
            running.join(wait)
        return self._known


@dataclass(frozen=True)
class Ambiguous:
    issue_id: int
    subject: str
    batches: int


@dataclass(frozen=True)
class Day:
    day: date
    sent: int
    clicks: int


@dataclass
class Dashboard:
    at: datetime
    broker: bool  # REDIS_URL is set: a broker and workers are expected
    queues: QueueDepths | None
    sending: list[IssueLine]
    paused: list[issues.Issue]
    ambiguous: list[Ambiguous]
    bucket: BucketState | None
    bucket_error: str
    errors: list[Any]
    workers: Known[list[WorkerInfo] | None] | None = None
    subscribers: Known[dict[str, int]] | None = None
    chart: Known[list[Day]] | None = None
    slow_errors: dict[str, str] = field(default_factory=dict)

    def waiting(self) -> int:
        """Batches on the work queue, every priority included."""
        if self.queues is None or not self.queues.reachable:
            return 0
        return sum(self.queues.queues.values())


def gather(
    engine: Engine, settings: Settings, redis_client: Any | None, limiter: Limiter | None
) -> Dashboard:
    """What is quick to read (see the module's docstring); the slow parts are added by
    the caller from its ``Slow`` answers."""
    at = db.now()
    depths = depths_of(redis_client, settings)
    active = issues.list_issues(
        engine, (IssueStatus.SENDING, IssueStatus.SCHEDULED, IssueStatus.PAUSED)
    )
    bucket, bucket_error = None, ""
    if limiter is not None:
        try:
            bucket = limiter.state()
        except Exception as exc:  # Redis is down: the queues say so too
            bucket_error = str(exc)
    return Dashboard(
        at=at,
        broker=bool(settings.redis_url),
        queues=depths,
        sending=[
            IssueLine(i, i.rate(at), i.seconds_left(at))
            for i in active
            if i.status != IssueStatus.PAUSED
        ],
        paused=[i for i in active if i.status == IssueStatus.PAUSED],
        ambiguous=ambiguous(engine),
        bucket=bucket,
        bucket_error=bucket_error,
        errors=errors(engine),
    )


def ambiguous(engine: Engine) -> list[Ambiguous]:
    """Issues with batches the provider may or may not have taken, most first."""
    b, i = db.batches, db.issues
    query = (
        sa.select(b.c.issue_id, i.c.subject, sa.func.count().label("n"))
        .select_from(b.join(i, i.c.id == b.c.issue_id))
        .where(b.c.status == BatchStatus.AMBIGUOUS)
        .group_by(b.c.issue_id, i.c.subject)
        .order_by(sa.desc("n"), b.c.issue_id)
    )
    with engine.connect() as conn:
        return [Ambiguous(int(r.issue_id), r.subject, int(r.n)) for r in conn.execute(query)]


def errors(engine: Engine, limit: int = ERRORS_SHOWN) -> list[Any]:
    """The newest errors and warnings of every issue."""
    e, i = db.issue_events, db.issues
    query = (
        sa.select(e.c.id, e.c.issue_id, e.c.at, e.c.level, e.c.message, i.c.subject)
        .select_from(e.join(i, i.c.id == e.c.issue_id))
        .where(e.c.level.in_(("error", "warning")))
        .order_by(e.c.id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def subscriber_counts(engine: Engine) -> dict[str, int]:
    """Subscribers by status, every status present (0 when there are none)."""
    s = db.subscribers
    with engine.connect() as conn:
        rows = conn.execute(sa.select(s.c.status, sa.func.count()).group_by(s.c.status))
        found: dict[str, int] = {str(status): int(n) for status, n in rows}
    return {str(status): int(found.get(status, 0)) for status in SubscriberStatus}


def chart(engine: Engine, days: int = CHART_DAYS, today: date | None = None) -> list[Day]:
    """Sent messages and clicks a day, oldest first, ``days`` days ending today (UTC)."""
    last = today or db.now().date()
    first = last - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    i, c = db.issues, db.clicks
    started = sa.func.date(i.c.started_at).label("day")
    clicked = sa.func.date(c.c.at).label("day")
    with engine.connect() as conn:
        sent = conn.execute(
            sa.select(started, sa.func.sum(i.c.sent))
            .where(i.c.started_at >= since)
            .group_by(started)
        )
        clicks = conn.execute(
            sa.select(clicked, sa.func.count()).where(c.c.at >= since).group_by(clicked)
        )
        by_day_sent = {str(d)[:10]: int(n or 0) for d, n in sent}
        by_day_clicks = {str(d)[:10]: int(n or 0) for d, n in clicks}
    out = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        key = day.isoformat()
        out.append(Day(day, by_day_sent.get(key, 0), by_day_clicks.get(key, 0)))
    return out
