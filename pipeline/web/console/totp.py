"""Setting up two-factor sign-in (TOTP, RFC 6238) for oneself.

Anyone signed in may turn it on; a role listed in ``console_totp_roles`` must, and is
sent here after signing in until they have (``auth.signed_in``). The page shows a new
secret as text and as an ``otpauth://`` URI for an authenticator app; the form sends
the secret back with a code from the app and the user's password, and
``users.enable_totp`` turns it on only when both are right. The password, so that a
session alone (a stolen one) cannot tie the account to someone else's app; its guesses
count against the account's sign-in limit.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.people import audit, sessions, users
from pipeline.people.sessions import Session
from pipeline.people.users import UserError
from pipeline.web.console import auth, signin, views
from pipeline.web.console.auth import Svc
from pipeline.web.service import Service

router = APIRouter()
SECRET = re.compile(r"[A-Z2-7]{16,64}")


def _page(
    svc: Service,
    request: Request,
    session: Session,
    secret: str,
    status: int = 200,
    error: str = "",
    done: bool = False,
) -> HTMLResponse:
    user = session.user
    return views.page(
        svc,
        request,
        "totp.html",
        session,
        status,
        secret=secret,
        uri=users.totp_uri(secret, user.email, svc.settings.site_name) if secret else "",
        required=views.must_set_up_totp(svc, session),
        error=error,
        done=done,
    )


def _refused(
    svc: Service, request: Request, session: Session, secret: str, exc: UserError
) -> HTMLResponse:
    error = str(exc)
    return _page(svc, request, session, secret, 400, error=error[:1].upper() + error[1:] + ".")


@router.get("/totp", response_class=HTMLResponse)
def totp_page(svc: Svc, request: Request, session: auth.AnySession, on: str = "") -> Response:
    if session.user.totp:
        return _page(svc, request, session, "", done=on == "1")
    return _page(svc, request, session, users.new_totp_secret())


@router.post("/totp", response_class=HTMLResponse)
def totp_enable(
    svc: Svc,
    request: Request,
    session: auth.AnySession,
    secret: Annotated[str, Form(max_length=64)],
    code: Annotated[str, Form(max_length=20)],
    password: Annotated[str, Form(max_length=users.MAX_PASSWORD)] = "",
) -> Response:
    if session.user.totp:
        return views.see_other(auth.TOTP_SET_UP)
    if not SECRET.fullmatch(secret):  # not one this page made: start again
        secret = users.new_totp_secret()
    over = signin.over_limit(svc, request, session.user.email)
    if over:
        page = _page(svc, request, session, secret, 429, error=f"Too many attempts {over[0]}")
        page.headers["retry-after"] = str(over[1])
        return page
    try:
        users.confirm_password(svc.engine, session.user.id, password)
    except UserError as exc:
        audit.record(svc.engine, session.user.id, "two-factor set-up refused", str(exc))
        return _refused(svc, request, session, secret, exc)
    signin.forgive(svc, request, session.user.email)
    try:
        users.enable_totp(svc.engine, session.user.id, secret, code)
    except UserError as exc:
        return _refused(svc, request, session, secret, exc)
    # Any other session (a stolen one, say) ends: from now on signing in needs the code.
    sessions.end_others(svc.engine, session.user.id, auth.token_of(request, svc))
    return views.see_other(f"{auth.TOTP_SET_UP}?on=1")
