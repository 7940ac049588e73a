"""One issue's page, ``/admin/issues/{id}`` (``Action.READ``): what it is, a test send
(``Action.TEST``), scheduling (``Action.SCHEDULE``), pausing, resuming, cancelling and
retrying the failed deliveries (``Action.STEER``), its progress while it sends and its
report afterwards.

Every change goes through a confirmation first: the form asks for a page that says
what will happen (to how many subscribers, when, in which time zone), and only its
Confirm button changes anything. A role that may not do something sees the control
disabled with the reason (``roles.why_not``); the server refuses it anyway (403, from
``require``) whatever the page showed. What is done is recorded in the audit log.

Batches of a resumed, retried or reconciled issue are handed on as the admin API hands
them (``pipeline.web.admin.queue``): to the workers with Redis, else sent in this
process after the answer. While an issue is scheduled or sending, its progress
(``/admin/issues/{id}/progress``) is a fragment that htmx asks for every 2 seconds;
without scripts the page has a Refresh link.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.audience import subscribers
from pipeline.errors import ConfigError, NotFound
from pipeline.ops.status import duration
from pipeline.people import audit
from pipeline.people.roles import Action, can, why_not
from pipeline.people.sessions import Session
from pipeline.sending import issues, outcome, reports, testsend
from pipeline.sending.issues import Issue, IssueStateError
from pipeline.sending.recover import reconcile
from pipeline.statuses import IssueStatus
from pipeline.web.admin import queue
from pipeline.web.console import views
from pipeline.web.console.auth import Refused, Svc, require
from pipeline.web.service import Service

router = APIRouter()
Reader = Annotated[Session, Depends(require(Action.READ))]
Tester = Annotated[Session, Depends(require(Action.TEST))]
Scheduler = Annotated[Session, Depends(require(Action.SCHEDULE))]
Steerer = Annotated[Session, Depends(require(Action.STEER))]
MAX_ID = 2**63 - 1
IssueId = Annotated[int, Path(ge=1, le=MAX_ID)]
FAILURES_PER_PAGE = 50
WATCHED = (IssueStatus.SCHEDULED, IssueStatus.SENDING)  # the progress polls itself
STARTED = (
    IssueStatus.SENDING,
    IssueStatus.PAUSED,
    IssueStatus.SENT,
    IssueStatus.FAILED,
    IssueStatus.CANCELLED,
)


@dataclass(frozen=True)
class Steer:
    """A change to a sending issue: its button, what it does in words, the states that
    allow it and the audit entry it leaves."""

    name: str
    button: str
    does: str
    states: tuple[str, ...]
    audited: str
    danger: bool = False


STEERS = {
    s.name: s
    for s in (
        Steer(
            "pause",
            "Pause",
            "No new batches start; those already with the provider finish. Nobody is"
            " sent anything until you resume it.",
            (IssueStatus.SCHEDULED, IssueStatus.SENDING),
            "paused",
        ),
        Steer(
            "resume",
            "Resume",
            "Sending goes on from where it stopped; if it never started, it starts now.",
            (IssueStatus.PAUSED,),
            "resumed",
        ),
        Steer(
            "cancel",
            "Cancel",
            "The batches not yet sent are dropped for good: the subscribers who have not"
            " had it yet never will. This cannot be undone.",
            (IssueStatus.DRAFT, IssueStatus.SCHEDULED, IssueStatus.SENDING, IssueStatus.PAUSED),
            "cancelled",
            danger=True,
        ),
        Steer(
            "retry-failed",
            "Retry failed",
            "The recipients whose delivery failed are sent it again, in new batches;"
            " a paused issue resumes too.",
            (IssueStatus.SENDING, IssueStatus.PAUSED, IssueStatus.SENT, IssueStatus.FAILED),
            "retried",
        ),
    )
}
ASSUME = {
    "sent": (
        "Count them as sent",
        "The recipients of these batches are marked sent and are not sent it again."
        " Some may never get it, but nobody gets it twice.",
    ),
    "unsent": (
        "Send them again",
        "These batches are sent again. Nobody misses it, but some may get it twice.",
    ),
}


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def zone_words(name: str) -> str:
    """``Europe/London`` → ``London time``; UTC stays UTC."""
    if name in ("UTC", "Etc/UTC", "GMT"):
        return "UTC"
    return f"{name.rsplit('/', 1)[-1].replace('_', ' ')} time"


def _day(moment: datetime, today: date) -> str:
    day = f"{moment:%A} {moment.day} {moment:%B}"
    return day if moment.year == today.year else f"{day} {moment.year}"


def when_sentence(moment: datetime, tz: str, verb: str = "Sends") -> str:
    """ "Sends Tuesday 24 December at 07:00 London time, 07:00 UTC"."""
    zone = issues.zone(tz)
    local, utc = moment.astimezone(zone), moment.astimezone(issues.zone("UTC"))
    today = datetime.now(zone).date()
    said = f"{verb} {_day(local, today)} at {local:%H:%M} {zone_words(tz)}"
    if zone_words(tz) == "UTC":
        return said
    other = f"{utc:%H:%M}" if utc.date() == local.date() else f"{_day(utc, today)} {utc:%H:%M}"
    return f"{said}, {other} UTC"


def audience_words(issue: Issue) -> str:
    if not issue.audience:
        return "everyone subscribed"
    names = ", ".join(issue.audience)
    return f"the list{'s' if len(issue.audience) > 1 else ''} {names}"


def _found(svc: Service, issue_id: int, session: Session) -> Issue:
    try:
        return issues.get(svc.engine, issue_id)
    except NotFound:
        raise Refused(404, "No such issue", f"There is no issue {issue_id}.", session) from None


def _controls(session: Session) -> dict[str, Any]:
    role = session.user.role
    return {
        "may": {
            a.value: can(role, a)
            for a in (Action.TEST, Action.SCHEDULE, Action.STEER, Action.WATCH)
        },
        "why": {a.value: why_not(role, a) for a in (Action.TEST, Action.SCHEDULE, Action.STEER)},
    }


def _progress(svc: Service, issue: Issue) -> dict[str, Any]:
    at = datetime.now(issues.zone("UTC"))
    reason = issue.status_reason
    if issue.status == IssueStatus.PAUSED and not reason:
        events = issues.events(svc.engine, issue.id, limit=1)
        reason = events[0]["message"] if events else ""
    p = issue.progress
    return {
        "issue": issue,
        "watched": issue.status in WATCHED,
        "rate": issue.rate(at),
        "time_left": duration(issue.seconds_left(at)),
        "share": (p.done / p.recipients) if p.recipients else 0.0,
        "reason": reason,
        "when": (
            when_sentence(issue.send_at, issue.time_zone)
            if issue.send_at is not None and issue.status == IssueStatus.SCHEDULED
            else ""
        ),
    }


def _report(svc: Service, issue: Issue, page: int) -> dict[str, Any]:
    if issue.status not in STARTED or issue.started_at is None:
        return {"report": False}
    total = outcome.failure_count(svc.engine, issue.id)
    pages = max(1, math.ceil(total / FAILURES_PER_PAGE))
    page = min(page, pages)
    return {
        "report": True,
        "feedback": outcome.feedback(svc.engine, issue.id),
        "clicks": reports.clicks(svc.engine, issue.id),
        "articles": outcome.article_clicks(svc.engine, issue.id),
        "failures": outcome.failures(
            svc.engine, issue.id, FAILURES_PER_PAGE, (page - 1) * FAILURES_PER_PAGE
        ),
        "failure_total": total,
        "failure_page": page,
        "failure_pages": pages,
        "ambiguous": outcome.ambiguous_batches(svc.engine, issue.id),
        "assume": ASSUME,
    }


def _page(
    svc: Service,
    request: Request,
    session: Session,
    issue: Issue,
    status: int = 200,
    *,
    page: int = 1,
    **extra: Any,
) -> HTMLResponse:
    context: dict[str, Any] = {
        **_controls(session),
        **_progress(svc, issue),
        **_report(svc, issue, page),
        "steers": [s for s in STEERS.values() if issue.status in s.states],
        "events": issues.events(svc.engine, issue.id, limit=10),
        "audience": audience_words(issue),
        "time_zone": issue.time_zone or "UTC",
        # Until the editor has typed one, console.js puts in the browser's own zone.
        "zone_from_browser": "time_zone" not in extra,
        "max_test": testsend.MAX_ADDRESSES,
        "message": "",
        "error": "",
        "test": None,
        "values": {"addresses": "", "date": "", "time": "", "when": "now"},
        **extra,
    }
    return views.page(svc, request, "issue.html", session, status, vary=True, **context)


TESTS_PER_HOUR = 20  # test sends (each up to 10 addresses) per user and hour


@router.get("/issues/{issue_id:int}", response_class=HTMLResponse)
def issue_page(
    svc: Svc,
    request: Request,
    session: Reader,
    issue_id: IssueId,
    failures: Annotated[int, Query(ge=1, le=10**9)] = 1,
    done: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    issue = _found(svc, issue_id, session)
    if views.is_htmx(request):
        return _fragment(svc, request, session, issue)
    said = {
        "scheduled": "Scheduled.",
        "paused": "Paused.",
        "resumed": "Resumed.",
        "cancelled": "Cancelled.",
        "retried": "The failed deliveries are being sent again.",
        "reconciled": "The ambiguous batches are settled.",
    }.get(done, "")
    return _page(svc, request, session, issue, page=failures, message=said)


def _fragment(svc: Service, request: Request, session: Session, issue: Issue) -> HTMLResponse:
    return views.fragment(
        svc, request, "issue.html", ["progress"], session, **_progress(svc, issue)
    )


@router.get("/issues/{issue_id:int}/progress", response_class=HTMLResponse)
def issue_progress(svc: Svc, request: Request, session: Reader, issue_id: IssueId) -> Response:
    return _fragment(svc, request, session, _found(svc, issue_id, session))


# -- test -----------------------------------------------------------------------------------


@router.post("/issues/{issue_id:int}/test", response_class=HTMLResponse)
def test_issue(
    svc: Svc,
    request: Request,
    session: Tester,
    issue_id: IssueId,
    addresses: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    issue = _found(svc, issue_id, session)
    given = addresses.replace(",", "\n").splitlines()
    values = {"addresses": addresses, "date": "", "time": "", "when": "now"}
    wait = svc.limits.hit("console-test", str(session.user.id), TESTS_PER_HOUR, 3600)
    if wait:  # a test goes to any address: no account mails the world through it
        minutes = wait // 60 + 1
        error = f"You have sent {TESTS_PER_HOUR} tests this hour: try again in {minutes} minutes."
        page = _page(svc, request, session, issue, 429, error=error, values=values)
        page.headers["retry-after"] = str(wait)
        return page
    try:
        done = testsend.send_test(svc.sending, issue_id, given)
    except ConfigError as exc:
        return _page(svc, request, session, issue, 400, error=_sentence(str(exc)), values=values)
    if done.sent:
        audit.record(
            svc.engine,
            session.user.id,
            "tested",
            f"issue {issue_id} to {', '.join(done.sent)}",
        )
    status = 200 if not done.refused else 502
    return _page(svc, request, session, issue, status, test=done, values=values)


# -- schedule -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    now: bool
    at: datetime | None
    time_zone: str
    sentence: str


def _plan(issue: Issue, when: str, day: str, hour: str, time_zone: str) -> Plan:
    """The schedule the form asks for; a ValueError says in words what is wrong."""
    try:
        tz = subscribers.check_time_zone(time_zone.strip() or "UTC")
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if when == "now":
        return Plan(True, None, tz, "Sends now, as soon as you confirm")
    if when != "later":
        raise ValueError("choose now, or a date and time")
    try:
        moment = datetime.combine(date.fromisoformat(day), time.fromisoformat(hour))
    except ValueError:
        raise ValueError("give a date (2026-12-24) and a time (07:00) to send it at") from None
    at = moment.replace(tzinfo=issues.zone(tz))
    if at <= datetime.now(issues.zone("UTC")):
        raise ValueError(
            f"{moment:%Y-%m-%d %H:%M} in {tz} has already passed: choose a later time, or now"
        )
    return Plan(False, at, tz, when_sentence(at, tz))


Field = Annotated[str, Form(max_length=100)]


@dataclass(frozen=True)
class Asked:
    """What the schedule form asks for: now, or a day and hour in a time zone."""

    when: str
    day: str
    hour: str
    time_zone: str
    seen: str = ""  # the issue's updated_at when the confirmation showed it

    def values(self) -> dict[str, str]:
        """The form's fields, to show it again as it was filled in."""
        return {"addresses": "", "when": self.when, "date": self.day, "time": self.hour,
                "time_zone": self.time_zone, "seen": self.seen}  # fmt: skip


def _asked(
    when: Field = "now",
    date_: Annotated[str, Form(alias="date", max_length=20)] = "",
    time_: Annotated[str, Form(alias="time", max_length=20)] = "",
    time_zone: Field = "UTC",
    seen: Annotated[str, Form(max_length=40)] = "",
) -> Asked:
    return Asked(when, date_, time_, time_zone, seen)


ScheduleForm = Annotated[Asked, Depends(_asked)]


@router.post("/issues/{issue_id:int}/schedule/review", response_class=HTMLResponse)
def review_schedule(
    svc: Svc,
    request: Request,
    session: Scheduler,
    issue_id: IssueId,
    asked: ScheduleForm,
) -> Response:
    """The confirmation: what will be sent to whom, and when. Nothing changes here."""
    issue = _found(svc, issue_id, session)
    values = asked.values()
    try:
        plan = _plan(issue, asked.when, asked.day, asked.hour, asked.time_zone)
    except (ValueError, ConfigError) as exc:
        return _page(
            svc,
            request,
            session,
            issue,
            400,
            error=_sentence(str(exc)),
            values=values,
            time_zone=asked.time_zone,
        )
    values["seen"] = issue.updated_at.isoformat()  # Confirm sends what was shown here
    return views.page(
        svc,
        request,
        "issue_confirm.html",
        session,
        issue=issue,
        kind="schedule",
        action=f"/admin/issues/{issue_id}/schedule",
        button="Confirm: schedule it",
        danger=False,
        recipients=outcome.recipients_now(svc.engine, issue_id),
        audience=audience_words(issue),
        sentence=plan.sentence,
        fields=values,
        does="",
    )


@router.post("/issues/{issue_id:int}/schedule", response_class=HTMLResponse)
def schedule_issue(
    svc: Svc,
    request: Request,
    session: Scheduler,
    issue_id: IssueId,
    asked: ScheduleForm,
    later: BackgroundTasks,
) -> Response:
    issue = _found(svc, issue_id, session)
    values = asked.values()
    try:
        if asked.seen and asked.seen != issue.updated_at.isoformat():
            raise IssueStateError(
                f"issue {issue_id} changed after you reviewed it: review the schedule again"
            )
        plan = _plan(issue, asked.when, asked.day, asked.hour, asked.time_zone)
        svc.sending.schedule(issue_id, plan.at, plan.time_zone)  # preflight, then schedule
    except (ValueError, ConfigError, IssueStateError) as exc:
        status = 409 if isinstance(exc, IssueStateError) else 400
        return _page(
            svc,
            request,
            session,
            _found(svc, issue_id, session),
            status,
            error=_sentence(str(exc)),
            values=values,
            time_zone=asked.time_zone,
        )
    audit.record(svc.engine, session.user.id, "scheduled", f"issue {issue_id}: {plan.sentence}")
    if plan.now:
        queue.start_due_now(svc, later)
    return views.see_other(f"/admin/issues/{issue_id}?done=scheduled")


# -- steering -------------------------------------------------------------------------------


def _steer_of(name: str, session: Session) -> Steer:
    steer = STEERS.get(name)
    if steer is None:
        raise Refused(404, "No such action", f"Issues cannot be {name!r}.", session)
    return steer


@router.get("/issues/{issue_id:int}/steer/{name}", response_class=HTMLResponse)
def review_steer(
    svc: Svc, request: Request, session: Steerer, issue_id: IssueId, name: str
) -> Response:
    """The confirmation of pausing, resuming, cancelling or retrying: nothing changes."""
    steer = _steer_of(name, session)
    issue = _found(svc, issue_id, session)
    if issue.status not in steer.states:
        return _page(
            svc,
            request,
            session,
            issue,
            409,
            error=f"This issue is {issue.status}: it cannot be {steer.audited} now.",
        )
    failed = issue.progress.failed
    return views.page(
        svc,
        request,
        "issue_confirm.html",
        session,
        issue=issue,
        kind=steer.name,
        action=f"/admin/issues/{issue_id}/steer/{steer.name}",
        button=f"Confirm: {steer.button.lower()}",
        danger=steer.danger,
        recipients=failed if steer.name == "retry-failed" else issue.progress.queued,
        audience=audience_words(issue),
        sentence="",
        fields={},
        does=steer.does,
    )


@router.post("/issues/{issue_id:int}/reconcile", response_class=HTMLResponse)
def reconcile_issue(
    svc: Svc,
    request: Request,
    session: Steerer,
    issue_id: IssueId,
    later: BackgroundTasks,
    assume: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    issue = _found(svc, issue_id, session)
    if assume not in ASSUME:
        return _page(svc, request, session, issue, 400, error="Choose sent or unsent.")
    result = reconcile(svc.engine, issue_id, svc.provider, assume)
    queue.enqueue(svc, issue_id, result.requeued, later)
    audit.record(
        svc.engine,
        session.user.id,
        "reconciled",
        f"issue {issue_id}: {result.batches} ambiguous batch(es) as {assume}; {result.sent}"
        f" confirmed sent, {len(result.requeued)} batch(es) sent again",
    )
    return views.see_other(f"/admin/issues/{issue_id}?done=reconciled")


@router.post("/issues/{issue_id:int}/steer/{name}", response_class=HTMLResponse)
def steer_issue(
    svc: Svc,
    request: Request,
    session: Steerer,
    issue_id: IssueId,
    name: str,
    later: BackgroundTasks,
) -> Response:
    steer = _steer_of(name, session)
    _found(svc, issue_id, session)
    try:
        if steer.name == "pause":
            issues.pause(svc.engine, issue_id)
        elif steer.name == "resume":
            queue.enqueue(svc, issue_id, issues.resume(svc.engine, issue_id), later)
        elif steer.name == "cancel":
            issues.cancel(svc.engine, issue_id)
        else:
            batches = issues.retry_failed(svc.engine, issue_id, svc.provider.max_batch)
            queue.enqueue(svc, issue_id, batches, later)
    except IssueStateError as exc:
        issue = _found(svc, issue_id, session)
        return _page(svc, request, session, issue, 409, error=_sentence(str(exc)))
    audit.record(svc.engine, session.user.id, steer.audited, f"issue {issue_id}")
    return views.see_other(f"/admin/issues/{issue_id}?done={steer.audited}")
