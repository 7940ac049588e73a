"""Setting up two-factor sign-in (TOTP, RFC 6238) for oneself.

Anyone signed in may turn it on; a role listed in ``console_totp_roles`` must, and is
sent here after signing in until they have (``auth.signed_in``). The page shows a new
secret as text and as an ``otpauth://`` URI for an authenticator app; the form sends
the secret back with a code from the app, and ``users.enable_totp`` turns it on only
when the code is right.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.people import sessions, users
from pipeline.people.sessions import Session
from pipeline.people.users import UserError
from pipeline.web.console import auth, views
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
) -> Response:
    if session.user.totp:
        return views.see_other(auth.TOTP_SET_UP)
    try:
        users.enable_totp(svc.engine, session.user.id, secret, code)
    except UserError as exc:
        error = str(exc)
        if not SECRET.fullmatch(secret):  # not one this page made: start again
            secret = users.new_totp_secret()
        return _page(svc, request, session, secret, 400, error=error[:1].upper() + error[1:] + ".")
    # Any other session (a stolen one, say) ends: from now on signing in needs the code.
    sessions.end_others(svc.engine, session.user.id, auth.token_of(request))
    return views.see_other(f"{auth.TOTP_SET_UP}?on=1")
