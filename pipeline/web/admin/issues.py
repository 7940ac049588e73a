"""The admin API's issues: list, create, read, schedule, steer (pause, resume, cancel,
retry the failed deliveries) and the clicks on their links, through the functions the
command line uses (``pipeline.sending.issues``, ``preflight``)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query
from fastapi.responses import Response

from pipeline.audience import subscribers
from pipeline.audience.directory import EVENTS_SHOWN
from pipeline.content.store import Catalog, FileContentStore
from pipeline.errors import ConfigError, NotFound
from pipeline.sending import issues, preflight, reports
from pipeline.sending.issues import IssueStateError
from pipeline.web.admin import inputs, queue
from pipeline.web.admin.auth import Svc
from pipeline.web.admin.inputs import bad
from pipeline.web.admin.schemas import (
    BAD,
    BODY,
    ISSUE_STATUSES,
    NO_ISSUE,
    PREFIX,
    STEERING,
    WRONG_STATE,
    ArticleOut,
    ClickSummary,
    IssueDetail,
    IssueEvent,
    IssueId,
    IssueIn,
    IssueList,
    IssueOut,
    IssueState,
    LinkClicks,
    ProgressOut,
    ScheduleIn,
    answer,
)
from pipeline.web.service import Service

log = logging.getLogger(__name__)
router = APIRouter()


def _issue_fields(issue: issues.Issue) -> dict[str, Any]:
    p = issue.progress
    return {
        "id": issue.id,
        "subject": issue.subject,
        "status": issue.status,
        "status_reason": issue.status_reason,
        "audience": issue.audience,
        "send_at": issue.send_at,
        "time_zone": issue.time_zone,
        "created_at": issue.created_at,
        "started_at": issue.started_at,
        "finished_at": issue.finished_at,
        "progress": ProgressOut(
            recipients=p.recipients,
            queued=p.queued,
            sent=p.sent,
            failed=p.failed,
            skipped=p.skipped,
            batches=p.batches,
        ),
    }


def _issue(svc: Service, issue_id: int) -> IssueDetail:
    try:
        issue = issues.get(svc.engine, issue_id)
    except NotFound:
        raise HTTPException(404, f"no issue {issue_id}") from None
    events = issues.events(svc.engine, issue_id, limit=EVENTS_SHOWN)
    return IssueDetail(
        **_issue_fields(issue),
        preheader=issue.preheader,
        intro=issue.intro,
        articles=[ArticleOut(slug=a.slug, full=a.full) for a in issue.articles],
        updated_at=issue.updated_at,
        prepared_at=issue.prepared_at,
        events=[IssueEvent(at=e["at"], level=e["level"], message=e["message"]) for e in events],
    )


def _catalog(svc: Service) -> Catalog:
    try:
        return FileContentStore(svc.settings.content_dir, svc.settings).catalog()
    except NotFound as exc:  # the server's content folder, not the request
        log.error("the admin API cannot read the articles: %s", exc)
        raise HTTPException(503, "the articles cannot be read; see the service's log") from None


@router.get("/issues", response_model=IssueList, summary="Every issue, newest first", responses=BAD)
def list_all_issues(svc: Svc, status: Annotated[IssueState | None, Query()] = None) -> IssueList:
    if status is not None and status not in ISSUE_STATUSES:
        raise HTTPException(
            400, f"unknown issue status {status!r}: use one of {', '.join(ISSUE_STATUSES)}"
        )
    found = issues.list_issues(svc.engine, [status] if status else ())
    return IssueList(items=[IssueOut(**_issue_fields(i)) for i in found])


@router.post(
    "/issues",
    status_code=201,
    response_model=IssueDetail,
    summary="Create a draft issue",
    responses={**BAD, 503: answer("The service cannot read its articles"), **BODY},
)
def create_issue(svc: Svc, body: IssueIn, response: Response) -> IssueDetail:
    try:
        subject = inputs.line(body.subject, "the subject")
        preheader = inputs.line(body.preheader, "the preheader")
        intro = inputs.text(body.intro, "the intro")
        for item in body.articles:
            if "," in inputs.line(item, "an article"):
                raise ValueError(f"articles: {item!r}: give one article per item")
        refs = issues.parse_articles(",".join(body.articles))
        audience = inputs.list_names(body.audience)
    except (ValueError, ConfigError) as exc:
        raise bad(exc) from None
    catalog = _catalog(svc)
    try:
        issue_id = issues.create(
            svc.engine,
            subject=subject,
            articles=refs,
            audience=audience,
            preheader=preheader,
            intro=intro,
            catalog=catalog,
        )
    except (ConfigError, NotFound) as exc:
        raise bad(exc) from None
    response.headers["location"] = f"{PREFIX}/issues/{issue_id}"
    return _issue(svc, issue_id)


@router.get(
    "/issues/{issue_id}",
    response_model=IssueDetail,
    summary="One issue: status, progress, audience, articles, recent events",
    responses=NO_ISSUE,
)
def get_issue(svc: Svc, issue_id: IssueId) -> IssueDetail:
    return _issue(svc, issue_id)


@router.post(
    "/issues/{issue_id}/schedule",
    response_model=IssueDetail,
    summary="Schedule a draft",
    description="The beat starts the issue when its time comes (now: at once).",
    responses={**BAD, **NO_ISSUE, **WRONG_STATE, **BODY},
)
def schedule_issue(
    svc: Svc, issue_id: IssueId, body: ScheduleIn, later: BackgroundTasks
) -> IssueDetail:
    try:
        when = inputs.when(body.at)
        zone = subscribers.check_time_zone(inputs.line(body.time_zone, "the time zone"))
    except ValueError as exc:
        raise bad(exc) from None
    try:
        preflight.require(svc.settings, f"schedule issue {issue_id}")
        issues.schedule(svc.engine, issue_id, when, zone)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except IssueStateError as exc:
        raise HTTPException(409, str(exc)) from None
    except ConfigError as exc:
        raise bad(exc) from None
    if when is None:
        queue.start_due_now(svc, later)
    return _issue(svc, issue_id)


def _steer(svc: Service, issue_id: int, action: str, later: BackgroundTasks) -> IssueDetail:
    try:
        if action == "pause":
            issues.pause(svc.engine, issue_id)
        elif action == "resume":
            queue.enqueue(svc, issue_id, issues.resume(svc.engine, issue_id), later)
        elif action == "cancel":
            issues.cancel(svc.engine, issue_id)
        else:
            batches = issues.retry_failed(svc.engine, issue_id, svc.provider.max_batch)
            queue.enqueue(svc, issue_id, batches, later)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except IssueStateError as exc:
        raise HTTPException(409, str(exc)) from None
    return _issue(svc, issue_id)


@router.post(
    "/issues/{issue_id}/pause",
    response_model=IssueDetail,
    summary="Pause a scheduled or sending issue",
    description="Batches in flight finish; no new ones start.",
    responses=STEERING,
)
def pause_issue(svc: Svc, issue_id: IssueId, later: BackgroundTasks) -> IssueDetail:
    return _steer(svc, issue_id, "pause", later)


@router.post(
    "/issues/{issue_id}/resume",
    response_model=IssueDetail,
    summary="Resume a paused issue",
    description=(
        "It goes on from where it stopped; an issue that never started is scheduled for now."
    ),
    responses=STEERING,
)
def resume_issue(svc: Svc, issue_id: IssueId, later: BackgroundTasks) -> IssueDetail:
    return _steer(svc, issue_id, "resume", later)


@router.post(
    "/issues/{issue_id}/cancel",
    response_model=IssueDetail,
    summary="Cancel an issue that has not finished",
    description="Unsent batches are dropped.",
    responses=STEERING,
)
def cancel_issue(svc: Svc, issue_id: IssueId, later: BackgroundTasks) -> IssueDetail:
    return _steer(svc, issue_id, "cancel", later)


@router.post(
    "/issues/{issue_id}/retry-failed",
    response_model=IssueDetail,
    summary="Send again to the recipients whose delivery failed",
    description="A paused issue resumes too.",
    responses=STEERING,
)
def retry_failed_issue(svc: Svc, issue_id: IssueId, later: BackgroundTasks) -> IssueDetail:
    return _steer(svc, issue_id, "retry", later)


@router.get(
    "/issues/{issue_id}/clicks",
    response_model=ClickSummary,
    summary="Clicks on each link of an issue",
    responses=NO_ISSUE,
)
def issue_clicks(svc: Svc, issue_id: IssueId) -> ClickSummary:
    try:
        report = reports.clicks(svc.engine, issue_id)
    except NotFound:
        raise HTTPException(404, f"no issue {issue_id}") from None
    return ClickSummary(
        issue_id=report.issue_id,
        clicks=report.clicks,
        engaged=report.engaged,
        subscribers=report.subscribers,
        links=[
            LinkClicks(
                position=k.position,
                url=k.url,
                slug=k.slug,
                clicks=k.clicks,
                engaged=k.engaged,
                subscribers=k.subscribers,
            )
            for k in report.links
        ],
    )
