"""The operators' dashboard (``/admin/operations``), for the roles that may watch the
sending machinery (``Action.WATCH``: owners and operators).

The page is whole at first; then htmx asks for its ``live`` block every five seconds
(the same address, with ``HX-Request``) and swaps it in. What is quick to read is read
on each request (``pipeline.ops.dashboard.gather``); the workers, the subscriber counts
and the chart come from ``Watch``, which asks for them in the background and shows the
last answer with its time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.broker import WorkerInfo
from pipeline.ops import dashboard
from pipeline.ops.dashboard import Day, Slow
from pipeline.ops.status import SEP, duration
from pipeline.people.roles import Action
from pipeline.people.sessions import Session
from pipeline.web.console import views
from pipeline.web.console.auth import Svc, require
from pipeline.web.service import Service

router = APIRouter()
Watcher = Annotated[Session, Depends(require(Action.WATCH))]

WORKERS_TTL = 5.0  # seconds: the workers change often, and a ping is cheap for them
COUNTS_TTL = 30.0  # a count over every subscriber: twice a minute at most
CHART_TTL = 300.0


class Watch:
    """The slow parts of the dashboard for one service process."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    @cached_property
    def workers(self) -> Slow[list[WorkerInfo] | None]:
        broker = self.svc.broker
        return Slow(lambda: None if broker is None else broker.workers(timeout=1.0), WORKERS_TTL)

    @cached_property
    def subscribers(self) -> Slow[dict[str, int]]:
        return Slow(lambda: dashboard.subscriber_counts(self.svc.engine), COUNTS_TTL)

    @cached_property
    def chart(self) -> Slow[list[Day]]:
        return Slow(lambda: dashboard.chart(self.svc.engine), CHART_TTL)


def watch_of(svc: Service) -> Watch:
    found = svc.kept.get("watch")
    if not isinstance(found, Watch):  # setdefault: two first requests share one
        found = svc.kept.setdefault("watch", Watch(svc))
    assert isinstance(found, Watch)
    return found


def _report(svc: Service, wait: float) -> dashboard.Dashboard:
    limiter = svc.sending.limiter
    report = dashboard.gather(svc.engine, svc.settings, svc.redis, limiter)
    w = watch_of(svc)
    if svc.broker is not None:
        report.workers = w.workers.get(wait)
        if w.workers.error:
            report.slow_errors["workers"] = w.workers.error
    report.subscribers = w.subscribers.get(wait)
    report.chart = w.chart.get(wait)
    for name, slow in (("subscribers", w.subscribers), ("chart", w.chart)):
        if slow.error:
            report.slow_errors[name] = slow.error
    return report


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    label: str


@dataclass(frozen=True)
class Chart:
    """Bars for an inline SVG: sent messages and clicks a day, on one scale each."""

    width: int
    height: int
    bar: float  # each bar's width
    sent: list[Bar]
    clicks: list[Bar]
    most_sent: int
    most_clicks: int
    days: list[Day]
    first: str
    last: str


CHART_WIDTH, CHART_HEIGHT, GAP = 600, 120, 2


def chart_of(days: list[Day]) -> Chart:
    most_sent = max((d.sent for d in days), default=0)
    most_clicks = max((d.clicks for d in days), default=0)
    step = CHART_WIDTH / max(len(days), 1)
    half = (step - GAP) / 2

    def bars(values: list[int], most: int, shift: float, what: str) -> list[Bar]:
        out = []
        for n, (day, value) in enumerate(zip(days, values, strict=True)):
            height = 0.0 if most == 0 else CHART_HEIGHT * value / most
            out.append(
                Bar(
                    round(n * step + shift, 2),
                    round(CHART_HEIGHT - height, 2),
                    round(height, 2),
                    f"{day.day:%d %b}: {value:,} {what}",
                )
            )
        return out

    return Chart(
        CHART_WIDTH,
        CHART_HEIGHT,
        round(max(half - 0.5, 0.5), 2),
        bars([d.sent for d in days], most_sent, 0.0, "sent"),
        bars([d.clicks for d in days], most_clicks, half, "clicks"),
        most_sent,
        most_clicks,
        days,
        f"{days[0].day:%d %b}" if days else "",
        f"{days[-1].day:%d %b}" if days else "",
    )


def _queue_rows(report: dashboard.Dashboard) -> list[dict[str, Any]]:
    if report.queues is None or not report.queues.reachable:
        return []
    rows = []
    for name, n in report.queues.queues.items():
        queue, _, priority = name.partition(SEP)
        if priority and not n:
            continue  # an empty priority step says nothing
        rows.append({"queue": queue, "priority": priority or "0", "messages": n})
    return rows


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return ""
    seconds = (now - at).total_seconds()
    return "just now" if seconds < 1 else duration(seconds) + " ago"


def _context(svc: Service, wait: float) -> dict[str, Any]:
    report = _report(svc, wait)
    return {
        "report": report,
        "queue_rows": _queue_rows(report),
        "chart": None if report.chart is None else chart_of(report.chart.value),
        "duration": duration,
        "ago": lambda at: _ago(at, report.at),
        "redis": svc.settings.redis_url is not None,
    }


@router.get("/operations", response_class=HTMLResponse)
def operations(svc: Svc, request: Request, session: Watcher) -> Response:
    if views.is_htmx(request):
        return views.fragment(
            svc, request, "operations.html", ["live"], session, **_context(svc, 0.0)
        )
    # The first view waits a moment for the slow answers; each refresh shows the last.
    return views.page(svc, request, "operations.html", session, vary=True, **_context(svc, 1.5))
