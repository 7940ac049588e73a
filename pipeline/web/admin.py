"""The admin API under ``/api/admin``: subscribers and issues, for the web console of
editors and operators.

Every request carries ``Authorization: Bearer <token>``, the token being the setting
``admin_token`` (``LETTERPRESS_ADMIN_TOKEN``); without that setting the whole API
answers 403. Errors are JSON ``{"detail": …}``: 400 for a value the domain refuses (an
address, a name, a list, a status, an article, a time), 404 for an unknown subscriber or
issue, 409 for an issue in a state that does not allow the action, and 422 (``detail``
lists ``where`` and ``problem``) for a request of the wrong shape. Every string and list
of a request is bounded, and the bounds are in ``/openapi.json``.

The handlers are synchronous (FastAPI runs them in its thread pool) and call the same
functions as the CLI: ``pipeline.audience.subscribers``, ``pipeline.audience.consent`` and
``pipeline.sending.issues``. Batches that a resumed or retried issue needs go to the Celery
queue when ``REDIS_URL`` is set; without it, the beat's sweep sends them.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TextIO, cast

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from pipeline.audience import consent, subscribers
from pipeline.content.store import Catalog, FileContentStore
from pipeline.errors import ConfigError, NotFound
from pipeline.sending import issues, preflight
from pipeline.sending.issues import IssueStateError
from pipeline.store import db
from pipeline.web.app import Service, service

log = logging.getLogger(__name__)

S = db.subscribers.c
M = db.memberships.c
L = db.lists.c

MAX_ID = 2**63 - 1  # the largest id either database stores
PAGE_MAX = 500
EVENTS_SHOWN = 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# -- errors and authentication ----------------------------------------------------------------


class Problem(BaseModel):
    detail: str = Field(description="What is wrong, and what to do about it.")


class InputProblem(BaseModel):
    where: str = Field(description="The part of the request, such as body.email.")
    problem: str


class InputProblems(BaseModel):
    detail: list[InputProblem]


def _answer(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


Responses = dict[int | str, dict[str, Any]]

COMMON: Responses = {
    401: {
        **_answer("No token, or not the admin token"),
        "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    },
    403: _answer("The admin API is off: LETTERPRESS_ADMIN_TOKEN is not set"),
    422: {"model": InputProblems, "description": "The request does not have the right shape"},
}
BAD: Responses = {400: _answer("A value the domain refuses (the detail says which and why)")}
BODY: Responses = {413: _answer("The request body is too large")}
NO_SUBSCRIBER: Responses = {404: _answer("No such subscriber")}
NO_ISSUE: Responses = {404: _answer("No such issue")}
WRONG_STATE: Responses = {409: _answer("The issue's state does not allow this")}

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The value of the setting admin_token (LETTERPRESS_ADMIN_TOKEN).",
)
Svc = Annotated[Service, Depends(service)]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def authorised(
    svc: Svc, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """The request carries the admin token (compared in constant time), or 401/403."""
    expected = svc.settings.admin_token.get_secret_value()
    if not expected:
        raise HTTPException(403, "the admin API is off: set LETTERPRESS_ADMIN_TOKEN to enable it")
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(_digest(given), _digest(expected)):
        raise HTTPException(
            401,
            "this needs the admin token: Authorization: Bearer <LETTERPRESS_ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )


router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    dependencies=[Depends(authorised)],
    responses=COMMON,
)


def _bad(exc: Exception) -> HTTPException:
    return HTTPException(400, str(exc))


def _line(value: str, what: str) -> str:
    """One line of text: no control characters (PostgreSQL cannot store a NUL at all)."""
    if _CONTROL.search(value):
        raise ValueError(f"{what} contains control characters")
    return value


def _text(value: str, what: str) -> str:
    """Text that may have several lines, and no other control characters."""
    if _CONTROL_BUT_LINES.search(value):
        raise ValueError(f"{what} contains control characters")
    return value


def _list_names(names: Sequence[str]) -> list[str]:
    """List names as stored, each once; a ValueError names the first bad one."""
    return list(dict.fromkeys(subscribers.check_list_name(_line(n, "a list name")) for n in names))


def _list_filter(name: str | None) -> str | None:
    return None if name is None else _list_names([name])[0]


def _check_status(status: str | None) -> str | None:
    return None if status is None else subscribers.check_status(status)


def _list_id(conn: sa.Connection, name: str) -> int:
    found = conn.scalar(sa.select(L.id).where(L.name == name))
    if found is None:
        raise ValueError(f"no list named {name!r}")
    return int(found)


# -- subscribers: models ------------------------------------------------------------------------

Email = Annotated[str, Field(max_length=320, examples=["ann@example.org"])]
Name = Annotated[str, Field(max_length=200, description="One line; spaces are collapsed.")]
ListName = Annotated[str, Field(max_length=100, description="A list name (no ';').")]
TimeZone = Annotated[str, Field(max_length=64, description="An IANA name, such as Europe/Paris.")]
Status = Annotated[
    str,
    Field(
        max_length=20,
        json_schema_extra={"enum": list(subscribers.STATUSES)},
        description="pending, active, unsubscribed, bounced or complained.",
    ),
]
AttributeName = Annotated[str, Field(max_length=100)]
AttributeValue = Annotated[str, Field(max_length=2000)]
SubscriberId = Annotated[int, Path(ge=1, le=MAX_ID, description="The subscriber's id.")]


class SubscriberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name = ""
    status: Status = Field(
        default="active",
        description="active by default: they consented elsewhere (no confirmation email is sent).",
    )
    time_zone: TimeZone = "UTC"
    lists: list[ListName] = Field(
        default_factory=list, max_length=20, description="Created when missing."
    )
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict, max_length=50, description="Text values; empty means absent."
    )


class SubscriberPatch(BaseModel):
    """Only what is given changes."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    status: Status | None = None
    paused: bool | None = Field(default=None, description="Receive nothing until resumed.")
    time_zone: TimeZone | None = None
    add_lists: list[ListName] = Field(
        default_factory=list, max_length=20, description="Lists to join (created when missing)."
    )
    remove_lists: list[ListName] = Field(
        default_factory=list, max_length=20, description="Lists to leave (they must exist)."
    )


class SubscriberOut(BaseModel):
    id: int
    email: str
    name: str
    status: str
    time_zone: str
    paused: bool
    lists: list[str]
    created_at: datetime
    confirmed_at: datetime | None
    updated_at: datetime


class SubscriberEvent(BaseModel):
    at: datetime
    kind: str
    detail: str


class SubscriberDetail(SubscriberOut):
    attributes: dict[str, str]
    soft_bounces: int = Field(description="Soft bounces since the last delivery.")
    status_changed_at: datetime | None
    events: list[SubscriberEvent] = Field(description=f"The last {EVENTS_SHOWN}, newest first.")


class SubscriberPage(BaseModel):
    items: list[SubscriberOut]
    next: int | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


# -- subscribers: handlers ----------------------------------------------------------------------


def _subscriber(svc: Service, subscriber_id: int) -> SubscriberDetail:
    found = subscribers.get(svc.engine, subscriber_id)
    if found is None:
        raise HTTPException(404, f"no subscriber with id {subscriber_id}")
    e = db.subscriber_events.c
    with svc.engine.connect() as conn:
        row = conn.execute(
            sa.select(S.paused, S.soft_bounces, S.status_changed_at).where(S.id == subscriber_id)
        ).first()
        events = conn.execute(
            sa.select(e.at, e.kind, e.detail)
            .where(e.subscriber_id == subscriber_id)
            .order_by(e.id.desc())
            .limit(EVENTS_SHOWN)
        ).all()
    if row is None:  # erased in between
        raise HTTPException(404, f"no subscriber with id {subscriber_id}")
    return SubscriberDetail(
        id=found.id,
        email=found.email,
        name=found.name,
        status=found.status,
        time_zone=found.time_zone,
        paused=bool(row.paused),
        lists=list(found.lists),
        created_at=found.created_at,
        confirmed_at=found.confirmed_at,
        updated_at=found.updated_at,
        attributes={str(k): str(v) for k, v in found.attributes.items()},
        soft_bounces=int(row.soft_bounces),
        status_changed_at=row.status_changed_at,
        events=[SubscriberEvent(at=r.at, kind=r.kind, detail=r.detail) for r in events],
    )


@router.get(
    "/subscribers",
    response_model=SubscriberPage,
    summary="Subscribers, a page at a time",
    description=(
        "In id order, optionally one status, one list or one address. Keyset pagination:"
        " pass the answer's `next` as `after` until it is null."
    ),
    responses=BAD,
)
def list_subscribers(
    svc: Svc,
    status: Annotated[Status | None, Query()] = None,
    list_name: Annotated[ListName | None, Query(alias="list")] = None,
    email: Annotated[Email | None, Query()] = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="The last id already seen.")] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
) -> SubscriberPage:
    try:
        _check_status(status)
        address = None if email is None else subscribers.normalise_email(email)
        list_name = _list_filter(list_name)
    except ValueError as exc:
        raise _bad(exc) from None
    query = (
        sa.select(
            S.id,
            S.email,
            S.name,
            S.status,
            S.time_zone,
            S.paused,
            S.created_at,
            S.confirmed_at,
            S.updated_at,
        )
        .where(S.id > after)
        .order_by(S.id)
        .limit(limit + 1)
    )
    if status is not None:
        query = query.where(S.status == status)
    if address is not None:
        query = query.where(S.email == address)
    with svc.engine.connect() as conn:
        if list_name is not None:
            try:
                list_id = _list_id(conn, list_name)
            except ValueError as exc:
                raise _bad(exc) from None
            query = query.where(sa.exists().where(M.subscriber_id == S.id, M.list_id == list_id))
        rows = conn.execute(query).all()
        page = rows[:limit]
        names: dict[int, list[str]] = {}
        if page:
            for sid, name in conn.execute(
                sa.select(M.subscriber_id, L.name)
                .join(db.lists, L.id == M.list_id)
                .where(M.subscriber_id.in_([r.id for r in page]))
                .order_by(L.name)
            ):
                names.setdefault(int(sid), []).append(name)
    items = [
        SubscriberOut(
            id=r.id,
            email=r.email,
            name=r.name,
            status=r.status,
            time_zone=r.time_zone,
            paused=bool(r.paused),
            lists=names.get(r.id, []),
            created_at=r.created_at,
            confirmed_at=r.confirmed_at,
            updated_at=r.updated_at,
        )
        for r in page
    ]
    return SubscriberPage(items=items, next=page[-1].id if len(rows) > limit else None)


@router.post(
    "/subscribers",
    status_code=201,
    response_model=SubscriberDetail,
    summary="Add a subscriber",
    responses={
        **BAD,
        409: _answer("The address is already a subscriber (the detail gives the id)"),
        **BODY,
    },
)
def add_subscriber(svc: Svc, body: SubscriberIn, response: Response) -> SubscriberDetail:
    try:
        address = subscribers.normalise_email(body.email)
        name = consent.check_name(body.name)
        status = subscribers.check_status(body.status)
        zone = subscribers.check_time_zone(body.time_zone)
        names = _list_names(body.lists)
        attributes = {
            _line(k, "an attribute name"): _text(v, f"attribute {k!r}")
            for k, v in body.attributes.items()
        }
    except ValueError as exc:
        raise _bad(exc) from None
    existing = subscribers.get(svc.engine, address)
    if existing is not None:
        raise HTTPException(
            409,
            f"{address} is already subscriber {existing.id}: change it with"
            f" PATCH /api/admin/subscribers/{existing.id}",
        )
    try:
        subscriber_id = subscribers.add(
            svc.engine,
            address,
            name=name,
            lists=names,
            status=status,
            time_zone=zone,
            attributes=attributes,
        )
    except ValueError as exc:
        raise _bad(exc) from None
    with svc.engine.begin() as conn:
        on = f"; lists: {', '.join(names)}" if names else ""
        consent.event(conn, subscriber_id, "added", f"admin API, {status}{on}")
    response.headers["location"] = f"{router.prefix}/subscribers/{subscriber_id}"
    return _subscriber(svc, subscriber_id)


@router.get(
    "/subscribers.csv",
    response_class=StreamingResponse,
    summary="Export subscribers as CSV",
    description=(
        "The format of `letterpress subscribers export` (it imports back), streamed:"
        " optionally one status or one list."
    ),
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"},
        **BAD,
    },
)
def export_subscribers(
    svc: Svc,
    status: Annotated[Status | None, Query()] = None,
    list_name: Annotated[ListName | None, Query(alias="list")] = None,
) -> StreamingResponse:
    try:
        _check_status(status)
        list_name = _list_filter(list_name)
        if list_name is not None:
            with svc.engine.connect() as conn:
                _list_id(conn, list_name)
    except ValueError as exc:
        raise _bad(exc) from None
    suffix = f"-{re.sub(r'[^A-Za-z0-9_-]+', '_', list_name)}" if list_name else ""
    return StreamingResponse(
        _export(svc, list_name, status),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="subscribers{suffix}.csv"',
            "cache-control": "no-store",
        },
    )


@router.get(
    "/subscribers/{subscriber_id}",
    response_model=SubscriberDetail,
    summary="One subscriber, with lists and recent events",
    responses=NO_SUBSCRIBER,
)
def get_subscriber(svc: Svc, subscriber_id: SubscriberId) -> SubscriberDetail:
    return _subscriber(svc, subscriber_id)


@router.patch(
    "/subscribers/{subscriber_id}",
    response_model=SubscriberDetail,
    summary="Change a subscriber's name, status, pause, time zone or lists",
    description=(
        "Only the fields given change; the change is one transaction and one event. A"
        " status set here is final: leaving lists does not unsubscribe."
    ),
    responses={**BAD, **NO_SUBSCRIBER, **BODY},
)
def update_subscriber(
    svc: Svc, subscriber_id: SubscriberId, body: SubscriberPatch
) -> SubscriberDetail:
    try:
        name = None if body.name is None else consent.check_name(body.name)
        status = _check_status(body.status)
        zone = None if body.time_zone is None else subscribers.check_time_zone(body.time_zone)
        joining = _list_names(body.add_lists)
        leaving = _list_names(body.remove_lists)
        both = sorted(set(joining) & set(leaving))
        if both:
            raise ValueError(f"list {both[0]!r} is both in add_lists and in remove_lists")
    except ValueError as exc:
        raise _bad(exc) from None
    at = db.now()
    try:
        with svc.engine.begin() as conn:
            row = conn.execute(
                sa.select(S.name, S.status, S.paused, S.time_zone).where(S.id == subscriber_id)
            ).first()
            if row is None:
                raise HTTPException(404, f"no subscriber with id {subscriber_id}")
            values: dict[str, Any] = {}
            changes: list[str] = []
            if name is not None and name != row.name:
                values["name"] = name
                changes.append("name changed")
            if status is not None and status != row.status:
                values.update(status=status, status_changed_at=at)
                if status == "active":
                    values["confirmed_at"] = sa.func.coalesce(S.confirmed_at, at)
                changes.append(f"status {row.status} -> {status}")
            if body.paused is not None and body.paused != bool(row.paused):
                values["paused"] = body.paused
                changes.append("paused" if body.paused else "resumed")
            if zone is not None and zone != row.time_zone:
                values["time_zone"] = zone
                changes.append(f"time zone {zone}")
            for list_name in joining:
                joined = conn.execute(
                    db.insert_ignore(conn, db.memberships).values(
                        list_id=subscribers.ensure_list(conn, list_name),
                        subscriber_id=subscriber_id,
                        created_at=at,
                    )
                ).rowcount
                if joined:
                    changes.append(f"joined {list_name}")
            for list_name in leaving:
                left = conn.execute(
                    sa.delete(db.memberships).where(
                        M.subscriber_id == subscriber_id, M.list_id == _list_id(conn, list_name)
                    )
                ).rowcount
                if left:
                    changes.append(f"left {list_name}")
            if changes:
                conn.execute(
                    sa.update(db.subscribers)
                    .where(S.id == subscriber_id)
                    .values(updated_at=at, **values)
                )
                consent.event(conn, subscriber_id, "admin", "; ".join(changes))
    except ValueError as exc:
        raise _bad(exc) from None
    return _subscriber(svc, subscriber_id)


@router.delete(
    "/subscribers/{subscriber_id}",
    status_code=204,
    response_class=Response,
    summary="Erase a subscriber",
    description=(
        "The right to erasure: the subscriber and everything that names them are deleted"
        " (issue totals keep their counts)."
    ),
    responses={204: {"description": "Erased"}, **NO_SUBSCRIBER},
)
def erase_subscriber(svc: Svc, subscriber_id: SubscriberId) -> Response:
    if not consent.erase(svc.engine, subscriber_id):
        raise HTTPException(404, f"no subscriber with id {subscriber_id}")
    return Response(status_code=204)


# -- the CSV export, streamed -------------------------------------------------------------------

EXPORT_CHUNK = 64 * 1024  # bytes per piece of the answer
EXPORT_AHEAD = 8  # pieces written ahead of the client at most
EXPORT_STALL_SECONDS = 300.0  # a client that reads nothing this long is given up


class _Stopped(Exception):
    """The client went away (or stalled): the export stops writing."""


class _Pipe(io.TextIOBase):
    """The text stream ``export_csv`` writes in one thread, read as byte pieces in another."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(EXPORT_AHEAD)
        self.stopped = threading.Event()
        self._parts: list[str] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str, /) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= EXPORT_CHUNK:
            self.send()
        return len(text)

    def send(self) -> None:
        if self._parts:
            piece = "".join(self._parts).encode("utf-8")
            self._parts, self._size = [], 0
            self.put(piece)

    def put(self, item: bytes | BaseException | None) -> None:
        deadline = time.monotonic() + EXPORT_STALL_SECONDS
        while not self.stopped.is_set() and time.monotonic() < deadline:
            try:
                self.pieces.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Stopped


def _export(svc: Service, list_name: str | None, status: str | None) -> Iterator[bytes]:
    """The CSV in pieces, as ``export_csv`` writes it in a thread of its own. An export
    that fails midway ends the answer without its last chunk, so no client takes a
    truncated file for a whole one."""
    pipe = _Pipe()

    def produce() -> None:
        try:
            subscribers.export_csv(
                svc.engine, cast(TextIO, pipe), list_name=list_name, status=status
            )
            pipe.send()
            pipe.put(None)
        except _Stopped:
            pass
        except Exception as exc:
            log.exception("the subscriber export failed")
            with suppress(_Stopped):
                pipe.put(exc)

    writer = threading.Thread(target=produce, name="subscriber-export", daemon=True)
    writer.start()
    try:
        while True:
            try:
                item = pipe.pieces.get(timeout=1.0)
            except queue.Empty:
                if writer.is_alive() or not pipe.pieces.empty():
                    continue
                raise RuntimeError("the subscriber export stopped") from None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise RuntimeError("the subscriber export failed; see the log") from item
            yield item
    finally:
        pipe.stopped.set()


# -- issues: models -----------------------------------------------------------------------------

IssueId = Annotated[int, Path(ge=1, le=MAX_ID, description="The issue's id.")]
IssueStatus = Annotated[
    str,
    Field(
        max_length=20,
        json_schema_extra={"enum": list(db.ISSUE_STATUSES)},
        description=", ".join(db.ISSUE_STATUSES),
    ),
]


class IssueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=300)
    preheader: str = Field(default="", max_length=300, description="The preview text.")
    intro: str = Field(
        default="", max_length=20_000, description="Above the articles (HTML allowed)."
    )
    articles: list[Annotated[str, Field(max_length=210)]] = Field(
        min_length=1,
        max_length=50,
        description=(
            "Slugs in order, each `slug`, `slug:full` or `slug:teaser`; the first is full"
            " unless told otherwise. Each must be a published article."
        ),
        examples=[["vitamin-k2-for-directing-calcium-to-bones", "another-article:teaser"]],
    )
    audience: list[ListName] = Field(
        default_factory=list,
        max_length=20,
        description="Subscriber lists (they must exist); none means every active subscriber.",
    )


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: str = Field(
        max_length=64,
        description="now, or an ISO 8601 time with its offset.",
        examples=["now", "2026-12-01T08:00:00+01:00"],
    )
    time_zone: TimeZone = Field(
        default="UTC", description="The zone the send time is shown in (an IANA name)."
    )


class ArticleOut(BaseModel):
    slug: str
    full: bool


class ProgressOut(BaseModel):
    recipients: int
    queued: int
    sent: int
    failed: int
    skipped: int
    batches: dict[str, int] = Field(description="Batches by state.")


class IssueOut(BaseModel):
    id: int
    subject: str
    status: str
    status_reason: str
    audience: list[str] = Field(description="Lists; empty means every active subscriber.")
    send_at: datetime | None
    time_zone: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: ProgressOut


class IssueEvent(BaseModel):
    at: datetime
    level: str
    message: str


class IssueDetail(IssueOut):
    preheader: str
    intro: str
    articles: list[ArticleOut]
    updated_at: datetime
    prepared_at: datetime | None
    events: list[IssueEvent] = Field(description=f"The last {EVENTS_SHOWN}, newest first.")


class IssueList(BaseModel):
    items: list[IssueOut] = Field(description="Newest first.")


class LinkClicks(BaseModel):
    position: int
    url: str
    slug: str | None = Field(description="The article the link leads to, if any.")
    clicks: int
    engaged: int = Field(description="Clicks by people (not link scanners, not instant).")
    subscribers: int = Field(description="Distinct subscribers who clicked.")


class ClickSummary(BaseModel):
    issue_id: int
    clicks: int
    engaged: int
    subscribers: int = Field(description="Distinct subscribers who clicked any link.")
    links: list[LinkClicks] = Field(description="Every link of the issue's email, in order.")


# -- issues: handlers ---------------------------------------------------------------------------


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


_brokers: dict[tuple[str, str], Any] = {}
_brokers_lock = threading.Lock()


def _broker(svc: Service) -> Any | None:
    """The Celery app that takes the batches of resumed and retried issues, made once
    per process; None without ``REDIS_URL``."""
    url = svc.settings.redis_url
    if not url:
        return None
    key = (url, svc.settings.redis_prefix)
    with _brokers_lock:
        if key not in _brokers:
            from workers.app import create_app

            _brokers[key] = create_app(svc.settings)
        return _brokers[key]


def _enqueue(svc: Service, issue_id: int, batches: list[int]) -> None:
    """Hand the batches to the workers now; if that fails (or there is no broker), the
    sweep finds them still pending and sends them."""
    if not batches:
        return
    try:
        app = _broker(svc)
        if app is None:
            return
        from pipeline.sending.parts import enqueue
        from workers.dispatch import CeleryDispatcher

        enqueue(svc.engine, CeleryDispatcher(app), batches)
    except Exception as exc:
        log.warning("issue %s: could not queue %d batch(es) now: %s", issue_id, len(batches), exc)


def _tick(svc: Service) -> None:
    """Ask the workers to start due issues now rather than at the next beat."""
    try:
        app = _broker(svc)
        if app is not None:
            app.send_task("letterpress.issues.due")
    except Exception as exc:
        log.warning("could not ask the workers to start due issues: %s", exc)


@router.get("/issues", response_model=IssueList, summary="Every issue, newest first", responses=BAD)
def list_all_issues(svc: Svc, status: Annotated[IssueStatus | None, Query()] = None) -> IssueList:
    if status is not None and status not in db.ISSUE_STATUSES:
        raise HTTPException(
            400, f"unknown issue status {status!r}: use one of {', '.join(db.ISSUE_STATUSES)}"
        )
    found = issues.list_issues(svc.engine, [status] if status else ())
    return IssueList(items=[IssueOut(**_issue_fields(i)) for i in found])


@router.post(
    "/issues",
    status_code=201,
    response_model=IssueDetail,
    summary="Create a draft issue",
    responses={**BAD, 503: _answer("The service cannot read its articles"), **BODY},
)
def create_issue(svc: Svc, body: IssueIn, response: Response) -> IssueDetail:
    try:
        subject = _line(body.subject, "the subject")
        preheader = _line(body.preheader, "the preheader")
        intro = _text(body.intro, "the intro")
        for item in body.articles:
            if "," in _line(item, "an article"):
                raise ValueError(f"articles: {item!r}: give one article per item")
        refs = issues.parse_articles(",".join(body.articles))
        audience = _list_names(body.audience)
    except (ValueError, ConfigError) as exc:
        raise _bad(exc) from None
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
        raise _bad(exc) from None
    response.headers["location"] = f"{router.prefix}/issues/{issue_id}"
    return _issue(svc, issue_id)


@router.get(
    "/issues/{issue_id}",
    response_model=IssueDetail,
    summary="One issue: status, progress, audience, articles, recent events",
    responses=NO_ISSUE,
)
def get_issue(svc: Svc, issue_id: IssueId) -> IssueDetail:
    return _issue(svc, issue_id)


def _when(text: str) -> datetime | None:
    """None for now, else the time in UTC; a ValueError says what is wrong."""
    text = text.strip()
    if text.lower() == "now":
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"at: {text!r} is not a time: write now, or ISO 8601 with an offset such as"
            " 2026-12-01T08:00:00+01:00"
        ) from None
    if when.utcoffset() is None:
        raise ValueError(
            f"at: {text!r} has no offset: add one, such as +01:00 or Z, so the time is not"
            " ambiguous"
        )
    try:
        utc = when.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"at: {text!r} is out of range") from None
    if utc < db.now() - timedelta(minutes=5):
        raise ValueError(f"at: {text!r} is in the past: write now to send at once")
    return utc


@router.post(
    "/issues/{issue_id}/schedule",
    response_model=IssueDetail,
    summary="Schedule a draft",
    description="The beat starts the issue when its time comes (now: at once).",
    responses={**BAD, **NO_ISSUE, **WRONG_STATE, **BODY},
)
def schedule_issue(svc: Svc, issue_id: IssueId, body: ScheduleIn) -> IssueDetail:
    try:
        when = _when(body.at)
        zone = subscribers.check_time_zone(_line(body.time_zone, "the time zone"))
    except ValueError as exc:
        raise _bad(exc) from None
    try:
        preflight.require(svc.settings, f"schedule issue {issue_id}")
        issues.schedule(svc.engine, issue_id, when, zone)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except IssueStateError as exc:
        raise HTTPException(409, str(exc)) from None
    except ConfigError as exc:
        raise _bad(exc) from None
    if when is None:
        _tick(svc)
    return _issue(svc, issue_id)


def _steer(svc: Service, issue_id: int, action: str) -> IssueDetail:
    try:
        if action == "pause":
            issues.pause(svc.engine, issue_id)
        elif action == "resume":
            _enqueue(svc, issue_id, issues.resume(svc.engine, issue_id))
        elif action == "cancel":
            issues.cancel(svc.engine, issue_id)
        else:
            batches = issues.retry_failed(svc.engine, issue_id, svc.provider.max_batch)
            _enqueue(svc, issue_id, batches)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except IssueStateError as exc:
        raise HTTPException(409, str(exc)) from None
    return _issue(svc, issue_id)


STEERING: Responses = {**NO_ISSUE, **WRONG_STATE}


@router.post(
    "/issues/{issue_id}/pause",
    response_model=IssueDetail,
    summary="Pause a scheduled or sending issue",
    description="Batches in flight finish; no new ones start.",
    responses=STEERING,
)
def pause_issue(svc: Svc, issue_id: IssueId) -> IssueDetail:
    return _steer(svc, issue_id, "pause")


@router.post(
    "/issues/{issue_id}/resume",
    response_model=IssueDetail,
    summary="Resume a paused issue",
    description=(
        "It goes on from where it stopped; an issue that never started is scheduled for now."
    ),
    responses=STEERING,
)
def resume_issue(svc: Svc, issue_id: IssueId) -> IssueDetail:
    return _steer(svc, issue_id, "resume")


@router.post(
    "/issues/{issue_id}/cancel",
    response_model=IssueDetail,
    summary="Cancel an issue that has not finished",
    description="Unsent batches are dropped.",
    responses=STEERING,
)
def cancel_issue(svc: Svc, issue_id: IssueId) -> IssueDetail:
    return _steer(svc, issue_id, "cancel")


@router.post(
    "/issues/{issue_id}/retry-failed",
    response_model=IssueDetail,
    summary="Send again to the recipients whose delivery failed",
    description="A paused issue resumes too.",
    responses=STEERING,
)
def retry_failed_issue(svc: Svc, issue_id: IssueId) -> IssueDetail:
    return _steer(svc, issue_id, "retry")


@router.get(
    "/issues/{issue_id}/clicks",
    response_model=ClickSummary,
    summary="Clicks on each link of an issue",
    responses=NO_ISSUE,
)
def issue_clicks(svc: Svc, issue_id: IssueId) -> ClickSummary:
    c, k = db.clicks.c, db.issue_links.c
    engaged = sa.func.coalesce(sa.func.sum(sa.case((c.engaged, 1), else_=0)), 0)
    with svc.engine.connect() as conn:
        if conn.scalar(sa.select(db.issues.c.id).where(db.issues.c.id == issue_id)) is None:
            raise HTTPException(404, f"no issue {issue_id}")
        links = conn.execute(
            sa.select(
                k.position,
                k.url,
                k.slug,
                sa.func.count(c.id).label("clicks"),
                engaged.label("engaged"),
                sa.func.count(sa.distinct(c.subscriber_id)).label("subscribers"),
            )
            .select_from(
                db.issue_links.outerjoin(
                    db.clicks, sa.and_(c.issue_id == k.issue_id, c.position == k.position)
                )
            )
            .where(k.issue_id == issue_id)
            .group_by(k.position, k.url, k.slug)
            .order_by(k.position)
        ).all()
        total = conn.execute(
            sa.select(
                sa.func.count(c.id),
                engaged,
                sa.func.count(sa.distinct(c.subscriber_id)),
            ).where(c.issue_id == issue_id)
        ).one()
    return ClickSummary(
        issue_id=issue_id,
        clicks=int(total[0]),
        engaged=int(total[1]),
        subscribers=int(total[2]),
        links=[
            LinkClicks(
                position=r.position,
                url=r.url,
                slug=r.slug,
                clicks=int(r.clicks),
                engaged=int(r.engaged),
                subscribers=int(r.subscribers),
            )
            for r in links
        ],
    )
