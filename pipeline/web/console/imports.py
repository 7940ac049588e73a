"""Import and export, ``/admin/imports`` (``Action.SUBSCRIBERS``: owners and operators).

An uploaded CSV file is checked and kept by ``importjobs.receive`` (UTF-8, a header
with an email column, at most ``import_max_bytes``), then imported by a worker with
Redis (``Broker.import_now``, the job's id alone in the task) or, without it, by this
process after the answer. Either way the import is ``import_csv``, the function of
``letterpress subscribers import``, so a file imported twice changes nothing the
second time. The job's page polls its progress (``/admin/imports/{id}/progress``,
every second, with htmx; without scripts it has a Refresh link), then shows the
report: its bad rows with their lines, a page at a time, and the whole list as a CSV
file. A running import can be stopped (after the chunk it is writing); an ended,
stopped or interrupted one can be imported again.

The export is the admin API's (``pipeline.web.admin.export``): the CSV streamed, of
one list and one status or all. Every upload, stop, re-import and export is recorded
in the audit log, and so is how each import ended.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from pipeline.audience import directory, importjobs, lists
from pipeline.audience.importjobs import Job, JobStateError, UploadError
from pipeline.audience.subscribers import STATUSES
from pipeline.errors import NotFound
from pipeline.people import audit
from pipeline.people.roles import Action
from pipeline.people.sessions import Session
from pipeline.web.admin.export import csv_pieces
from pipeline.web.console import views
from pipeline.web.console.auth import Refused, Svc, require
from pipeline.web.service import Service

log = logging.getLogger(__name__)

router = APIRouter()
Operator = Annotated[Session, Depends(require(Action.SUBSCRIBERS))]
UPLOAD_PATH = "/admin/imports"  # the multipart form: BodyLimit and Utf8Forms know it
MAX_ID = 2**63 - 1
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
BAD_ROWS_PER_PAGE = 50
RECENT = 20


def _found(svc: Service, job_id: int, session: Session) -> Job:
    try:
        return importjobs.get(svc.engine, job_id)
    except NotFound:
        raise Refused(404, "No such import", f"There is no import {job_id}.", session) from None


def _start(svc: Service, job: Job, later: BackgroundTasks) -> None:
    """Hand the job on: to a worker with Redis, else to this process after the answer."""
    if svc.broker is None:
        later.add_task(importjobs.run, svc.settings, job.id)
        return
    try:
        svc.broker.import_now(job.id)
    except Exception as exc:  # the page says it waits; importing it again retries
        log.warning("import %s: could not reach the workers: %s", job.id, exc)


def _home(
    svc: Service, request: Request, session: Session, status: int = 200, **extra: Any
) -> HTMLResponse:
    context: dict[str, Any] = {
        "jobs": importjobs.recent(svc.engine, RECENT),
        "list_names": lists.names(svc.engine),
        "statuses": STATUSES,
        "max_mb": svc.settings.import_max_bytes / 1_000_000,
        "error": "",
        "export_error": "",
        "list_value": "",
        **extra,
    }
    return views.page(svc, request, "imports.html", session, status, **context)


@router.get("/imports", response_class=HTMLResponse)
def imports_page(svc: Svc, request: Request, session: Operator) -> Response:
    return _home(svc, request, session)


@router.post("/imports", response_class=HTMLResponse)
async def upload(svc: Svc, request: Request, session: Operator, later: BackgroundTasks) -> Response:
    form = await request.form()  # parsed once already, by the CSRF check
    given = form.get("file")
    raw_list = form.get("list")
    list_name = raw_list.strip() if isinstance(raw_list, str) and raw_list.strip() else None
    if not isinstance(given, UploadFile) or not given.filename:
        error = "Choose a CSV file to import: the form was sent without one."
        return await run_in_threadpool(
            _home, svc, request, session, 400, error=error, list_value=list_name or ""
        )
    try:
        job = await run_in_threadpool(
            importjobs.receive,
            svc.engine,
            svc.settings,
            session.user.id,
            given.filename,
            given.file,
            list_name,
        )
    except UploadError as exc:
        return await run_in_threadpool(
            _home, svc, request, session, exc.status, error=str(exc), list_value=list_name or ""
        )
    finally:
        await given.close()
    await run_in_threadpool(_start, svc, job, later)
    return views.see_other(f"/admin/imports/{job.id}")


# -- one import -----------------------------------------------------------------------------


def _job_context(svc: Service, job: Job, page: int = 1) -> dict[str, Any]:
    pages = max(1, math.ceil(job.problems / BAD_ROWS_PER_PAGE))
    page = min(page, pages)
    shown = (
        importjobs.bad_rows(svc.settings, job.id, BAD_ROWS_PER_PAGE, (page - 1) * BAD_ROWS_PER_PAGE)
        if job.status == "done"
        else []
    )
    return {
        "job": job,
        "state": "interrupted" if job.interrupted else str(job.status),
        "percent": math.floor(job.share * 100),
        "bad_rows": shown,
        "bad_page": page,
        "bad_pages": pages,
        "per_page": BAD_ROWS_PER_PAGE,
        "stale_minutes": importjobs.STALE_SECONDS // 60,
    }


@router.get("/imports/{job_id:int}", response_class=HTMLResponse)
def job_page(
    svc: Svc,
    request: Request,
    session: Operator,
    job_id: JobId,
    page: Annotated[int, Query(ge=1, le=10**9)] = 1,
    done: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    job = _found(svc, job_id, session)
    if views.is_htmx(request):
        return _fragment(svc, request, session, job)
    said = {"stop": "Asked to stop.", "again": "Importing it again."}.get(done, "")
    context = _job_context(svc, job, page)
    return views.page(
        svc, request, "import_job.html", session, vary=True, message=said, error="", **context
    )


def _fragment(svc: Service, request: Request, session: Session, job: Job) -> HTMLResponse:
    return views.fragment(
        svc, request, "import_job.html", ["job"], session, **_job_context(svc, job)
    )


@router.get("/imports/{job_id:int}/progress", response_class=HTMLResponse)
def job_progress(svc: Svc, request: Request, session: Operator, job_id: JobId) -> Response:
    return _fragment(svc, request, session, _found(svc, job_id, session))


@router.get("/imports/{job_id:int}/bad-rows.csv")
def bad_rows_file(svc: Svc, session: Operator, job_id: JobId) -> Response:
    job = _found(svc, job_id, session)
    return StreamingResponse(
        importjobs.report_lines(svc.settings, job.id),
        media_type="text/csv; charset=utf-8",
        headers={
            **views.console_headers(),
            "content-disposition": f'attachment; filename="import-{job.id}-bad-rows.csv"',
        },
    )


def _refused_state(
    svc: Service, request: Request, session: Session, job_id: int, exc: JobStateError
) -> HTMLResponse:
    job = _found(svc, job_id, session)
    context = _job_context(svc, job)
    text = str(exc)
    error = text[:1].upper() + text[1:] + "."
    return views.page(
        svc, request, "import_job.html", session, 409, message="", error=error, **context
    )


@router.post("/imports/{job_id:int}/stop", response_class=HTMLResponse)
def stop_job(svc: Svc, request: Request, session: Operator, job_id: JobId) -> Response:
    _found(svc, job_id, session)
    try:
        importjobs.stop(svc.engine, job_id, session.user.id)
    except JobStateError as exc:
        return _refused_state(svc, request, session, job_id, exc)
    return views.see_other(f"/admin/imports/{job_id}?done=stop")


@router.post("/imports/{job_id:int}/again", response_class=HTMLResponse)
def import_again(
    svc: Svc, request: Request, session: Operator, job_id: JobId, later: BackgroundTasks
) -> Response:
    _found(svc, job_id, session)
    try:
        job = importjobs.again(svc.engine, svc.settings, job_id, session.user.id)
    except JobStateError as exc:
        return _refused_state(svc, request, session, job_id, exc)
    _start(svc, job, later)
    return views.see_other(f"/admin/imports/{job_id}?done=again")


# -- export ---------------------------------------------------------------------------------


@router.post("/imports/export", response_model=None)
def export(
    svc: Svc,
    request: Request,
    session: Operator,
    list_name: Annotated[str, Form(alias="list", max_length=100)] = "",
    status: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    chosen_list = list_name.strip() or None
    chosen_status = status.strip() or None
    try:
        if chosen_status is not None and chosen_status not in STATUSES:
            raise ValueError(f"unknown status {chosen_status!r}: choose one of the list")
        if chosen_list is not None:
            directory.require_list(svc.engine, chosen_list)
    except ValueError as exc:
        error = f"Export: {exc}."
        return _home(svc, request, session, 400, export_error=error)
    which = f"list {chosen_list}" if chosen_list else "every list"
    audit.record(
        svc.engine,
        session.user.id,
        "exported",
        f"subscribers of {which}, {'status ' + chosen_status if chosen_status else 'any status'}",
    )
    suffix = f"-{re.sub(r'[^A-Za-z0-9_-]+', '_', chosen_list)}" if chosen_list else ""
    suffix += f"-{chosen_status}" if chosen_status else ""
    return StreamingResponse(
        csv_pieces(svc, chosen_list, chosen_status),
        media_type="text/csv; charset=utf-8",
        headers={
            **views.console_headers(),
            "content-disposition": f'attachment; filename="subscribers{suffix}.csv"',
        },
    )
