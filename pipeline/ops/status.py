"""What operators watch: queue depths, workers, each sending issue's progress, errors.

``letterpress status`` prints it; ``letterpress metrics`` serves the same figures to
Prometheus. Queue depths are read from the broker as Celery's Redis transport keeps
them: a list per queue and one more per priority step (``name\\x06\\x16{n}``), plus
the ``unacked`` hash of messages a worker took and has not acknowledged yet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.sending import issues
from pipeline.settings import Settings
from pipeline.store import db
from pipeline.store.keys import Keys

PRIORITY_STEPS = (3, 6, 9)  # kombu's default steps besides 0
SEP = "\x06\x16"


@dataclass
class QueueDepths:
    queues: dict[str, int] = field(default_factory=dict)  # queue or sub-queue -> messages
    unacked: int = 0
    reachable: bool = True
    error: str = ""

    def waiting(self, queue: str) -> int:
        return sum(n for name, n in self.queues.items() if name.split(SEP)[0] == queue)


def queue_names(settings: Settings) -> list[str]:
    keys = Keys(settings.redis_prefix)
    return [keys.work_queue, keys.control_queue]


def queue_depths(client: Any, settings: Settings) -> QueueDepths:
    depths = QueueDepths()
    names = []
    for queue in queue_names(settings):
        names.append(queue)
        names.extend(f"{queue}{SEP}{step}" for step in PRIORITY_STEPS)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    pipe.hlen("unacked")
    values = pipe.execute()
    depths.queues = dict(zip(names, (int(v) for v in values[:-1]), strict=True))
    depths.unacked = int(values[-1])
    return depths


def depths_of(redis_client: Any | None, settings: Settings) -> QueueDepths | None:
    """The queue depths; None without a broker, unreachable ones when it is down."""
    if redis_client is None:
        return None
    try:
        return queue_depths(redis_client, settings)
    except Exception as exc:  # the broker is down: say so, report the rest
        return QueueDepths(reachable=False, error=str(exc))


@dataclass
class IssueLine:
    issue: issues.Issue
    rate: float
    seconds_left: float | None


@dataclass
class Report:
    at: datetime
    queues: QueueDepths | None
    workers: list[str] | None  # None: could not ask (no broker)
    sending: list[IssueLine]
    recent: list[IssueLine]
    events: list[Any]
    ambiguous_batches: int
    totals: dict[str, int]


def gather(
    engine: Engine,
    settings: Settings,
    redis_client: Any | None,
    workers: list[str] | None,
) -> Report:
    at = db.now()
    depths = depths_of(redis_client, settings)
    active = issues.list_issues(engine, ("sending", "paused", "scheduled"))
    finished = [i for i in issues.list_issues(engine, ("sent", "failed"))[:5]]
    with engine.connect() as conn:
        ambiguous = int(
            conn.scalar(sa.select(sa.func.count()).where(db.batches.c.status == "ambiguous")) or 0
        )
        totals = {
            status: int(n)
            for status, n in conn.execute(
                sa.select(db.issues.c.status, sa.func.count()).group_by(db.issues.c.status)
            )
        }
    return Report(
        at=at,
        queues=depths,
        workers=workers,
        sending=[IssueLine(i, i.rate(at), i.seconds_left(at)) for i in active],
        recent=[IssueLine(i, i.rate(at), None) for i in finished],
        events=issues.events(engine, limit=10),
        ambiguous_batches=ambiguous,
        totals=totals,
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def format_report(report: Report) -> Iterator[str]:
    yield f"Letterpress status at {report.at:%Y-%m-%d %H:%M:%S} UTC"
    yield ""
    if report.queues is None:
        yield "queues:   no REDIS_URL (sending runs inline)"
    elif not report.queues.reachable:
        yield f"queues:   broker unreachable: {report.queues.error}"
    else:
        waiting = ", ".join(
            f"{name.replace(SEP, ':')} {n}"
            for name, n in report.queues.queues.items()
            if n or SEP not in name
        )
        yield f"queues:   {waiting}; unacked {report.queues.unacked}"
    if report.workers is None:
        yield "workers:  unknown (no broker)"
    else:
        yield f"workers:  {len(report.workers)} online" + (
            f" ({', '.join(sorted(report.workers))})" if report.workers else ""
        )
    if report.ambiguous_batches:
        yield (
            f"ATTENTION: {report.ambiguous_batches} ambiguous batch(es): the provider may have"
            " them; run `letterpress issue reconcile ID`"
        )
    yield ""
    if not report.sending:
        yield "no issue is sending, paused or scheduled"
    for line in report.sending:
        yield from _issue_lines(line)
    if report.recent:
        yield ""
        yield "recently finished:"
        for line in report.recent:
            i = line.issue
            yield (
                f"  #{i.id} {i.status:9} {i.progress.sent:,} sent, {i.progress.failed:,} failed,"
                f" {i.progress.skipped:,} skipped  {i.subject[:50]}"
            )
    if report.events:
        yield ""
        yield "recent events:"
        for row in report.events:
            yield f"  {row['at']:%H:%M:%S} #{row['issue_id']} {row['level']:7} {row['message']}"


def _issue_lines(line: IssueLine) -> Iterator[str]:
    i, p = line.issue, line.issue.progress
    yield f"#{i.id} {i.status.upper()}  {i.subject[:60]}"
    if i.status == "scheduled" and i.local_send_at is not None:
        yield f"    sends at {i.local_send_at:%Y-%m-%d %H:%M %Z}"
    if i.status_reason:
        yield f"    {i.status_reason}"
    if i.started_at is not None:
        share = p.done / p.recipients if p.recipients else 1.0
        yield (
            f"    {share:6.1%}  queued {p.queued:,}  sent {p.sent:,}  failed {p.failed:,}"
            f"  skipped {p.skipped:,}  ambiguous batches {p.ambiguous}"
        )
        yield f"    rate {line.rate:,.0f}/s  time left {duration(line.seconds_left)}"
