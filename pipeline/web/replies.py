"""Readers' replies: the article page's form and script reach these.

- ``GET /api/replies/{slug}``: the approved replies (no addresses) and a fresh form
  token, for the page's script; ``POST`` there takes a reply as JSON.
- ``POST /replies/{slug}``: the page's form without JavaScript; the answer is a page.
  ``GET /replies/{slug}`` is the replies and the form as a page of the service, for a
  reader without JavaScript (and for answering a reply: ``?answers=<id>``).
- ``/replies/notify/{token}`` confirms notifications (double opt-in) and
  ``/replies/stop/{token}`` stops them (RFC 8058 one-click too); each GET only shows a
  button, the POST acts.

A post passes the guard (``pipeline.replies.guard``: origin, honeypot, form token,
time since the page's load), the limits per IP and per address, and the checks of its
fields, before it is handed to the group writer, which commits it before the answer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, BackgroundTasks, Depends, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from pipeline.render.policy import article_url
from pipeline.replies import guard, mail, moderation, threads
from pipeline.replies.text import ReplyProblem, check, paragraphs_html
from pipeline.replies.threads import Closed, NewReply, Posted, PublicReply
from pipeline.statuses import ReplyNotify, ReplyStatus
from pipeline.web.limits import client_of
from pipeline.web.public import claim_or_404
from pipeline.web.service import Published, Service, service

log = logging.getLogger(__name__)
router = APIRouter()
Svc = Annotated[Service, Depends(service)]
Slug = Annotated[str, Path(max_length=120, pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")]
Token = Annotated[str, Path(max_length=80)]
CACHE_SECONDS = 1.0  # an approval shows on the page within this (per server process)

NOT_FOUND = "There is no article here that takes replies."
WAITS = "Thank you: your reply awaits moderation, and will appear once it is approved."
SHOWN = "Thank you: your reply is published."
CONFIRM_SENT = (
    " To be told of answers, confirm with the link in the email we have sent to your address."
)


@dataclass
class Answer:
    """What became of a post: ``status`` is the HTTP status."""

    status: int
    message: str
    field: str = ""
    posted: Posted | None = None
    retry_after: int = 0


def _article(svc: Service, slug: str) -> str:
    """The title of article ``slug``, which takes replies; 404 otherwise."""
    return _title(svc.articles(), slug)


async def _article_soon(svc: Service, slug: str) -> str:
    """``_article`` for an async handler: the content store is read in a thread."""
    articles = svc.articles_if_fresh()
    if articles is None:
        articles = await run_in_threadpool(svc.articles)
    return _title(articles, slug)


def _title(articles: dict[str, Published], slug: str) -> str:
    found = articles.get(slug)
    if found is None or not found.replies:
        raise HTTPException(404, NOT_FOUND)
    return found.title


def _limits(svc: Service, client: str, email: str) -> int:
    s = svc.settings
    return svc.limits.hit_all(
        [
            ("reply-ip", client, s.reply_per_ip_per_hour, 3600),
            ("reply-address", email, s.reply_per_address_per_hour, 3600),
        ]
    )


async def _post(
    svc: Service, request: Request, tasks: BackgroundTasks, slug: str, data: dict[str, Any]
) -> Answer:
    await _article_soon(svc, slug)
    s = svc.settings
    try:
        guard.check_form(
            svc.signer,
            slug,
            str(data.get("token") or ""),
            str(data.get(guard.HONEYPOT) or ""),
            s.reply_min_seconds,
            request.headers.get("origin"),
            s.base_url,
        )
        fields = check(
            s,
            str(data.get("name") or ""),
            str(data.get("email") or ""),
            str(data.get("website") or ""),
            str(data.get("comment") or ""),
        )
    except guard.Refused as refused:
        log.info("a reply to %s was refused: %s", slug, refused.reason)
        return Answer(refused.status, refused.message, "token")
    except ReplyProblem as problem:
        return Answer(400, f"{problem.field.capitalize()}: {problem.message}.", problem.field)
    client = client_of(request)
    wait = await run_in_threadpool(_limits, svc, client, fields.email)
    if wait:
        minutes = wait // 60 + 1
        return Answer(429, f"Too many replies: try again in {minutes} minutes.", retry_after=wait)
    answers = data.get("answers")
    new = NewReply(
        slug=slug,
        fields=fields,
        answers_id=int(answers) if answers else None,
        notify=bool(data.get("notify")),
        range_hash=threads.range_hash(s.secret_key.get_secret_value(), client),
    )
    result = await svc.writer.submit(new)
    if isinstance(result, Closed):
        return Answer(result.status, result.why)
    assert isinstance(result, Posted)
    _after(svc, tasks, result)
    # Spam is answered as a held reply: its writer learns nothing.
    message = SHOWN if result.status is ReplyStatus.APPROVED else WAITS
    if result.notify is ReplyNotify.UNCONFIRMED:
        message += CONFIRM_SENT
    return Answer(201, message, posted=result)


def _after(svc: Service, tasks: BackgroundTasks, posted: Posted) -> None:
    """What follows a stored reply, after the answer: the confirmation of notifications,
    the notices of a reply published at once; the page's cache forgets the article."""
    svc.kept.pop(f"replies:{posted.slug}", None)
    if posted.notify is ReplyNotify.UNCONFIRMED:
        tasks.add_task(_send_confirm, svc, posted)
    if posted.status is ReplyStatus.APPROVED:
        tasks.add_task(send_notices, svc, [posted.id])


def _send_confirm(svc: Service, posted: Posted) -> None:
    message, recipient = mail.confirm(
        svc.settings, svc.signer, posted.id, posted.email, posted.name, posted.slug
    )
    mail.deliver(
        svc.provider, message, recipient, f"notification confirmation of reply {posted.id}"
    )


def send_notices(svc: Service, approved: list[int]) -> None:
    """Tell the authors of the replies that ``approved`` answer (also after a
    moderator approves; ``pipeline.web.console.replies``)."""
    for notice in moderation.notices(svc.engine, approved):
        message, recipient = mail.notice(svc.settings, svc.signer, notice)
        mail.deliver(svc.provider, message, recipient, f"notice of reply {notice.reply_id}")


# -- the page's script ----------------------------------------------------------------------


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    token: str = Field(default="", max_length=80)
    answers: int | None = Field(default=None, ge=1, le=2**63 - 1)
    comment: str = Field(default="", max_length=50_000)
    name: str = Field(default="", max_length=500)
    email: str = Field(default="", max_length=320)
    website: str = Field(default="", max_length=1000)
    notify: bool = False
    url: str = Field(default="", max_length=1000)  # the honeypot (``guard.HONEYPOT``)


class ReplyOut(BaseModel):
    status: str
    message: str
    reply: dict[str, Any] | None = None


class RepliesOut(BaseModel):
    open: bool
    token: str
    replies: list[dict[str, Any]]


_READING: set[str] = set()  # the articles whose replies a request of this process reads now


def _public(svc: Service, slug: str) -> tuple[bool, bytes]:
    """Whether ``slug`` takes replies now, and its approved ones as JSON; read from the
    database once per ``CACHE_SECONDS`` in this process, by one request at a time (the
    others meanwhile answer with what was read last)."""
    closed = threads.closed(svc.engine, slug)
    data = orjson.dumps(threads.public_json(threads.load(svc.engine, slug)))
    svc.kept[f"replies:{slug}"] = (time.monotonic(), not closed, data)
    return not closed, data


@router.get(
    "/api/replies/{slug}",
    response_model=RepliesOut,
    tags=["replies"],
    summary="An article's approved replies, and a fresh form token",
    responses={404: {"description": "No article that takes replies"}},
)
async def replies_api(svc: Svc, slug: Slug) -> Response:
    await _article_soon(svc, slug)
    key = f"replies:{slug}"
    kept = svc.kept.get(key)
    if kept is not None and (time.monotonic() - kept[0] < CACHE_SECONDS or key in _READING):
        is_open, data = kept[1], kept[2]  # fresh, or being read again by another request
    else:
        _READING.add(key)
        try:
            is_open, data = await run_in_threadpool(_public, svc, slug)
        finally:
            _READING.discard(key)
    token = guard.form_token(svc.signer, slug)  # letters, digits, "." "-" "_": no escaping
    body = b'{"open":%s,"token":"%s","replies":%s}' % (
        b"true" if is_open else b"false", token.encode("ascii"), data,
    )  # fmt: skip
    return Response(body, media_type="application/json", headers={"cache-control": "no-store"})


@router.post(
    "/api/replies/{slug}",
    status_code=201,
    response_model=ReplyOut,
    tags=["replies"],
    summary="Post a reply (JSON)",
    responses={
        400: {"description": "Bad input, or refused as a bot's"},
        403: {"description": "Closed, banned, or from another site"},
        404: {"description": "No article that takes replies"},
        429: {"description": "Too many replies"},
    },
)
async def reply_api(svc: Svc, request: Request, slug: Slug, body: ReplyIn) -> Response:
    return await answer_post(svc, request, slug, body)


async def answer_post(svc: Service, request: Request, slug: str, body: ReplyIn) -> Response:
    """The answer to ``POST /api/replies/{slug}`` (also reached through
    ``app.FastPaths``, which gives it a body already validated as ``ReplyIn``); what
    follows the reply runs after the answer (``Response.background``)."""
    tasks = BackgroundTasks()
    answer = await _post(svc, request, tasks, slug, body.model_dump())
    headers = {"cache-control": "no-store"}
    if answer.retry_after:
        headers["retry-after"] = str(answer.retry_after)
    if answer.posted is None:
        return JSONResponse(
            {"detail": answer.message, "field": answer.field}, answer.status, headers=headers
        )
    approved = answer.posted.status is ReplyStatus.APPROVED
    out = {
        "status": "approved" if approved else "pending",
        "message": answer.message,
        "reply": answer.posted.public().to_json() if approved else None,
    }
    return JSONResponse(out, 201, headers=headers, background=tasks)


# -- without JavaScript ---------------------------------------------------------------------


def _page(
    svc: Service,
    slug: str,
    status: int = 200,
    error: str = "",
    values: dict[str, Any] | None = None,
    answers: int | None = None,
) -> HTMLResponse:
    title = _article(svc, slug)
    is_open = not threads.closed(svc.engine, slug)
    found = threads.load(svc.engine, slug)
    answering = ""
    if answers is not None:
        for thread in found:
            for reply in [thread.reply, *thread.answers]:
                if reply.id == answers:
                    answering = reply.name
    values = dict(values or {})
    if answers is not None and answering:
        values["answers"] = answers

    def html(reply: PublicReply) -> Any:
        return paragraphs_html(reply.paragraphs)

    return svc.page(
        "replies.html",
        status,
        title=title,
        article_url=article_url(svc.settings, slug),
        threads=found,
        open=is_open,
        action=f"/replies/{slug}",
        token=guard.form_token(svc.signer, slug),
        honeypot=guard.HONEYPOT,
        max_chars=svc.settings.reply_max_chars,
        error=error,
        values=values,
        answering=answering,
        html=html,
    )


@router.get(
    "/replies/{slug}",
    response_class=HTMLResponse,
    tags=["replies"],
    summary="An article's replies and the reply form, as a page",
)
def replies_page(
    svc: Svc, slug: Slug, answers: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
) -> HTMLResponse:
    return _page(svc, slug, answers=answers)


@router.post(
    "/replies/{slug}",
    response_class=HTMLResponse,
    tags=["replies"],
    summary="Post a reply from the form",
    responses={
        400: {"description": "Bad input, or refused as a bot's"},
        403: {"description": "Closed, banned, or from another site"},
        429: {"description": "Too many replies"},
    },
)
async def reply_form(
    svc: Svc,
    request: Request,
    tasks: BackgroundTasks,
    slug: Slug,
    comment: Annotated[str, Form(max_length=50_000)] = "",
    name: Annotated[str, Form(max_length=500)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    website: Annotated[str, Form(max_length=1000)] = "",
    token: Annotated[str, Form(max_length=80)] = "",
    answers: Annotated[str, Form(max_length=18, pattern=r"^[0-9]*$")] = "",
    notify: Annotated[str, Form(max_length=10)] = "",
    url: Annotated[str, Form(max_length=1000)] = "",
) -> HTMLResponse:
    values = {
        "comment": comment, "name": name, "email": email, "website": website,
        "answers": answers, "notify": bool(notify), "token": token, "url": url,
    }  # fmt: skip
    answer = await _post(svc, request, tasks, slug, values)
    if answer.posted is None:
        values.pop("token")
        page = await run_in_threadpool(
            _page, svc, slug, answer.status, answer.message, values,
            int(answers) if answers else None,
        )  # fmt: skip
        if answer.retry_after:
            page.headers["retry-after"] = str(answer.retry_after)
        return page
    return svc.page(
        "message.html",
        title="Thank you",
        message=answer.message,
        link=f"{article_url(svc.settings, slug)}#replies",
        link_text="Back to the article",
    )


# -- notifications ------------------------------------------------------------------------------


def _notify_claim(svc: Service, token: str) -> int:
    return claim_or_404(svc, "reply-notify", token, svc.settings.confirm_hours).subscriber_id


@router.get(
    "/replies/notify/{token}",
    response_class=HTMLResponse,
    tags=["replies"],
    summary="Confirm reply notifications (changes nothing)",
)
def notify_page(svc: Svc, token: Token) -> HTMLResponse:
    _notify_claim(svc, token)
    return svc.page(
        "reply_action.html",
        title="Be told of answers",
        message="Confirm that you want an email when somebody answers your replies.",
        button="Yes, tell me of answers",
    )


@router.post(
    "/replies/notify/{token}",
    response_class=HTMLResponse,
    tags=["replies"],
    summary="Confirm reply notifications",
)
def notify_confirm(svc: Svc, token: Token) -> HTMLResponse:
    reply_id = _notify_claim(svc, token)
    moderation.confirm_notify(svc.engine, reply_id)
    stop = f"/replies/stop/{svc.signer.sign('reply-stop', reply_id)}"
    return svc.page(
        "message.html",
        title="Confirmed",
        message="We will email you when somebody answers your replies.",
        link=stop,
        link_text="Changed your mind? Stop these emails",
    )


def _stop_claim(svc: Service, token: str) -> int:
    return claim_or_404(svc, "reply-stop", token).subscriber_id


@router.get(
    "/replies/stop/{token}",
    response_class=HTMLResponse,
    tags=["replies"],
    summary="Stop reply notifications (changes nothing)",
)
def stop_page(svc: Svc, token: Token) -> HTMLResponse:
    _stop_claim(svc, token)
    return svc.page(
        "reply_action.html",
        title="Stop these emails",
        message="You get an email when somebody answers your replies. Stop them?",
        button="Stop these emails",
    )


@router.post(
    "/replies/stop/{token}",
    response_class=HTMLResponse,
    tags=["replies"],
    summary="Stop reply notifications (and RFC 8058 one-click)",
)
def stop(svc: Svc, token: Token) -> HTMLResponse:
    moderation.stop_notify(svc.engine, _stop_claim(svc, token))
    return svc.page(
        "message.html",
        title="Stopped",
        message="You will get no more emails about answers to your replies.",
    )
