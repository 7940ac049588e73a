"""The editors' console under ``/admin/``: server-rendered pages for people who sign in
(``pipeline.people``), beside the admin API, which keeps its bearer token for machines.

    auth.py     the session cookie, ``signed_in`` and ``require(action)``
    csrf.py     the Origin and token checks of every state-changing request
    signin.py   signing in (password, then a code with two-factor sign-in) and out
    totp.py     setting up two-factor sign-in
    home.py     the home page: the sections the user's role may open
    users.py    users, for owners
    audit.py    the audit log
    articles.py the articles, their problems and engagement
    compose.py  the issues, and composing a draft with its preview
    issue.py    one issue: test, schedule, steer, watch it go, its report
    batches.py  a send's batches, and re-queueing, reconciling, settling one
    operations.py  the operators' dashboard: queues, workers, sends, errors
    subscribers.py  search subscribers, one's history, edit, export, erase; suppressions
    imports.py  import a CSV file (progress, stop, the bad rows) and export subscribers
    replies.py  moderate readers' replies: the queue, bans, closing an article's replies
    views.py    templates (``templates/console/``), headers, the sections

Every page is escaped Jinja2 with a strict Content-Security-Policy (scripts from this
origin only: htmx, vendored in ``static/``), ``Cache-Control: no-store``, and none of
it is in ``/openapi.json``. Handlers call the people domain; none writes SQL.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from pipeline.web.console import (
    articles,
    audit,
    auth,
    batches,
    compose,
    csrf,
    home,
    imports,
    issue,
    operations,
    replies,
    signin,
    subscribers,
    totp,
    users,
    views,
)
from pipeline.web.console.auth import Refused, SetUpTotpFirst, SignInFirst, Svc
from pipeline.web.service import current

STATIC = Path(__file__).resolve().parent / "static"

files = APIRouter()


SCRIPTS = ("htmx.min.js", "console.js")  # every file served from static/


@functools.cache
def _script(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@files.get("/console.css")
def stylesheet(svc: Svc) -> Response:
    css = (svc.settings.templates_dir / "console" / "console.css").read_text(encoding="utf-8")
    return Response(css, media_type="text/css", headers={"cache-control": "public, max-age=3600"})


@files.get("/static/{name}")
def script(name: str) -> Response:
    if name not in SCRIPTS:
        return Response(status_code=404)
    return Response(
        _script(name),
        media_type="text/javascript",
        headers={"cache-control": "public, max-age=86400"},
    )


def _drop_stale(request: Request, response: Response) -> None:
    if auth.token_of(request, current(request)):
        auth.clear_cookie(response, current(request))


async def _sign_in_first(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInFirst)
    target = auth.sign_in_url(exc.next_url, ended=bool(auth.token_of(request, current(request))))
    response: Response
    if exc.htmx:  # htmx would swap the sign-in page in: it goes there instead
        response = Response(
            status_code=401, headers={**views.console_headers(), "hx-redirect": target}
        )
    else:
        response = views.see_other(target)
    _drop_stale(request, response)
    return response


async def _set_up_totp_first(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SetUpTotpFirst)
    if exc.htmx:
        headers = {**views.console_headers(), "hx-redirect": auth.TOTP_SET_UP}
        return Response(status_code=403, headers=headers)
    return views.see_other(auth.TOTP_SET_UP)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return views.page(
        current(request),
        request,
        "forbidden.html",
        exc.session,
        exc.status,
        title=exc.title,
        message=exc.message,
        link=exc.link,
    )


# Routers copy the routes they include: this comes after every route above.
before = APIRouter(dependencies=[Depends(csrf.protect_sign_in)])
before.include_router(signin.before)
signed = APIRouter(dependencies=[Depends(csrf.protect)])
for part in (
    home.router,
    signin.router,
    totp.router,
    users.router,
    audit.router,
    issue.router,
    batches.router,
    articles.router,
    compose.router,
    operations.router,
    subscribers.router,
    imports.router,
    replies.router,
):
    signed.include_router(part)

router = APIRouter(prefix=auth.PATH)
for part in (files, before, signed):
    router.include_router(part, include_in_schema=False)


def handle_errors(app: FastAPI) -> None:
    """The console's answers to its own refusals (``auth``, ``csrf``)."""
    app.add_exception_handler(SignInFirst, _sign_in_first)
    app.add_exception_handler(SetUpTotpFirst, _set_up_totp_first)
    app.add_exception_handler(Refused, _refused)
