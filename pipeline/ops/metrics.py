"""Prometheus metrics: the figures of ``letterpress status``, gathered at each scrape, and
what the alerts in ``deploy/prometheus/alerts.yml`` need besides.

Every series keeps its identity. An issue's series are labelled by ``issue`` alone, so
they stay the same series when its status changes; the status is a state set of its own,
``letterpress_issue_status{issue, status}``, 1 for the issue's status and 0 for every
other. Counts are written for every state they can take, 0 included, so a count never
disappears for being 0: ``letterpress_issues{status}``, ``letterpress_subscribers{status}``,
``letterpress_issue_batches{issue, status}``,
``letterpress_webhook_signature_failures_total{provider}``.

The issues that have series (``watched``): those scheduled, sending or paused, and those
that ended (sent, failed, cancelled) in the last ``SERIES_AFTER_END``, so a series does
not vanish the moment its send ends, and the dashboards show today's sends to the end.
An issue leaves the metrics a day after it ended, or when it goes back to being a draft.

Absent, rather than 0, is what is not known: the queue depths while the broker does not
answer (``letterpress_broker_up`` is 0 then), and the workers when there is no broker at
all (no ``REDIS_URL``: the beat sends inline, and no worker is needed). A broker that is
configured and does not answer has 0 workers online: none can take work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.audience import webhook_failures
from pipeline.ops import dashboard, status
from pipeline.sending import issues
from pipeline.sending.parts import SendingParts
from pipeline.settings import Settings
from pipeline.statuses import BatchStatus, IssueStatus
from pipeline.store import db

SERIES_AFTER_END = timedelta(hours=24)
ENDED = (IssueStatus.SENT, IssueStatus.FAILED, IssueStatus.CANCELLED)
# A batch in one of these states was settled by a worker: the issue made progress.
SETTLED = (BatchStatus.SENT, BatchStatus.FAILED, BatchStatus.AMBIGUOUS)


class Figure(NamedTuple):
    name: str
    help: str
    labels: dict[str, str]
    value: float
    kind: Literal["gauge", "counter"] = "gauge"


@dataclass
class Watch:
    """What the metrics add to the status report."""

    issues: list[status.IssueLine]  # the report's active issues, then those ended lately
    last_progress: dict[int, datetime] = field(default_factory=dict)  # issue -> last settled
    subscribers: dict[str, int] = field(default_factory=dict)  # status -> subscribers
    webhook_failures: dict[str, int] = field(default_factory=dict)  # provider -> refused
    error_threshold: float = 0.0
    error_min_recipients: int = 0


def watch(engine: Engine, settings: Settings, report: status.Report) -> Watch:
    at = report.at
    active = {line.issue.id for line in report.sending}
    with engine.connect() as conn:
        ended = [
            int(issue_id)
            for issue_id in conn.scalars(
                sa.select(db.issues.c.id)
                .where(
                    db.issues.c.status.in_(ENDED),
                    db.issues.c.updated_at >= at - SERIES_AFTER_END,
                )
                .order_by(db.issues.c.id.desc())
            )
            if int(issue_id) not in active
        ]
    lines = list(report.sending)
    for issue_id in ended:
        issue = issues.get(engine, issue_id)
        lines.append(status.IssueLine(issue, issue.rate(at), None))
    ids = [line.issue.id for line in lines]
    b = db.batches.c
    with engine.connect() as conn:
        last_progress = {
            int(issue_id): last
            for issue_id, last in conn.execute(
                sa.select(b.issue_id, sa.func.max(b.updated_at))
                .where(b.issue_id.in_(ids), b.status.in_(SETTLED))
                .group_by(b.issue_id)
            )
        }
    return Watch(
        issues=lines,
        last_progress=last_progress,
        subscribers=dashboard.subscriber_counts(engine),
        webhook_failures=webhook_failures.counts(engine),
        error_threshold=settings.error_threshold,
        error_min_recipients=settings.error_min_recipients,
    )


def figures(report: status.Report, watched: Watch) -> Iterator[Figure]:
    """Every figure of the report and of what is watched."""
    if report.queues is not None and report.queues.reachable:
        for name, n in report.queues.queues.items():
            queue, _, priority = name.partition(status.SEP)
            yield Figure(
                "letterpress_queue_messages",
                "Messages waiting in a broker queue",
                {"queue": queue, "priority": priority or "0"},
                n,
            )
        yield Figure(
            "letterpress_queue_unacked",
            "Messages taken by a worker, not yet acknowledged",
            {},
            report.queues.unacked,
        )
    yield Figure(
        "letterpress_broker_up",
        "1 when the broker answered",
        {},
        1.0 if report.queues is not None and report.queues.reachable else 0.0,
    )
    if report.queues is not None:  # a broker is configured: None means it did not answer
        yield Figure(
            "letterpress_workers_online",
            "Celery workers that answered a ping",
            {},
            len(report.workers or []),
        )
    yield Figure(
        "letterpress_ambiguous_batches",
        "Batches the provider may or may not have: run `letterpress issue reconcile ID`",
        {},
        report.ambiguous_batches,
    )
    for state in IssueStatus:
        yield Figure(
            "letterpress_issues",
            "Issues by status",
            {"status": state.value},
            report.totals.get(state, 0),
        )
    for kind, n in watched.subscribers.items():
        yield Figure("letterpress_subscribers", "Subscribers by status", {"status": kind}, n)
    for provider, n in watched.webhook_failures.items():
        yield Figure(
            "letterpress_webhook_signature_failures",
            "Webhook requests refused for their signature or credentials (401, 403)",
            {"provider": provider},
            n,
            "counter",
        )
    yield Figure(
        "letterpress_error_threshold",
        "Share of failed deliveries above which a send pauses (error_threshold)",
        {},
        watched.error_threshold,
    )
    yield Figure(
        "letterpress_error_min_recipients",
        "Deliveries tried before the error threshold applies (error_min_recipients)",
        {},
        watched.error_min_recipients,
    )
    for line in watched.issues:
        yield from _issue_metrics(line, watched.last_progress.get(line.issue.id))


def _issue_metrics(line: status.IssueLine, last_settled: datetime | None) -> Iterator[Figure]:
    i, p = line.issue, line.issue.progress
    labels = {"issue": str(i.id)}
    for state in IssueStatus:
        yield Figure(
            "letterpress_issue_status",
            "1 for the issue's status, 0 for the others",
            {**labels, "status": state.value},
            1.0 if i.status == state else 0.0,
        )
    for what, value in (
        ("recipients", p.recipients),
        ("queued", p.queued),
        ("sent", p.sent),
        ("failed", p.failed),
        ("skipped", p.skipped),
    ):
        yield Figure(
            f"letterpress_issue_{what}",
            f"Recipients of an issue: {what}",
            labels,
            value,
        )
    for batch_status in BatchStatus:
        yield Figure(
            "letterpress_issue_batches",
            "An issue's batches by status (sending: leased by a worker)",
            {**labels, "status": batch_status.value},
            p.batches.get(batch_status, 0),
        )
    tried = p.sent + p.failed
    yield Figure(
        "letterpress_issue_failure_ratio",
        "Failed deliveries over those tried (sent + failed); 0 before any",
        labels,
        p.failed / tried if tried else 0.0,
    )
    yield Figure("letterpress_issue_rate", "Recipients settled per second", labels, line.rate)
    seconds_left = line.seconds_left
    if seconds_left is None:  # not sending, or no rate yet: nothing left, or not known
        seconds_left = 0.0 if i.status in ENDED else math.nan
    yield Figure(
        "letterpress_issue_seconds_left",
        "Estimated time to finish: 0 once ended, NaN while it cannot be estimated",
        labels,
        seconds_left,
    )
    # A send that starts, resumes or is retried has made progress too: its batches
    # settled before then say nothing about whether the workers keep up now.
    last = None if i.started_at is None else max(i.updated_at, last_settled or i.started_at)
    yield Figure(
        "letterpress_issue_last_progress_timestamp_seconds",
        "When a worker last settled one of the issue's batches, or the issue last started,"
        " resumed or was retried, whichever is later (0 before the start)",
        labels,
        0.0 if last is None else last.timestamp(),
    )


def families(found: Iterable[Figure]) -> list[Any]:
    """The figures as Prometheus metric families, one per name."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    by_name: dict[str, Any] = {}
    for figure in found:
        family = by_name.get(figure.name)
        names = sorted(figure.labels)
        if family is None:
            kind = CounterMetricFamily if figure.kind == "counter" else GaugeMetricFamily
            family = kind(figure.name, figure.help, labels=names)
            by_name[figure.name] = family
        family.add_metric([figure.labels[k] for k in names], float(figure.value))
    return list(by_name.values())


class StatusCollector:
    def __init__(self, parts: SendingParts, workers: Callable[[], list[str] | None]) -> None:
        self.parts = parts
        self.workers = workers

    def collect(self) -> Iterator[Any]:
        rt = self.parts
        report = status.gather(rt.engine, rt.settings, rt.redis, self.workers())
        yield from families(figures(report, watch(rt.engine, rt.settings, report)))

    def describe(self) -> list[Any]:
        return []  # gathered at scrape time: nothing to describe in advance


def registry(parts: SendingParts, workers: Callable[[], list[str] | None]) -> Any:
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatusCollector(parts, workers))
    return reg


def serve(
    parts: SendingParts, workers: Callable[[], list[str] | None], host: str, port: int
) -> None:
    from wsgiref.simple_server import make_server

    from prometheus_client import make_wsgi_app

    server = make_server(host, port, make_wsgi_app(registry(parts, workers)))
    server.serve_forever()
