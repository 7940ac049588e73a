"""Signing in and out of the console.

``/admin/sign-in`` asks for the address and password (``users.authenticate``); a user
with two-factor sign-in is then asked for the code of their app on
``/admin/sign-in/code``. Between the two steps only the account's id, its address and
where to go next wait in the cookie ``lp_console_code`` (never the password), encrypted
and authenticated with a key made from ``secret_key`` (Fernet) and good for five minutes,
so any server process can take the second step; the code is checked against the account
as it is then (``users.second_factor``), and the cookie is removed once the step is done.

Both steps are rate limited (``pipeline.web.limits``): ``console_signin_per_ip_per_hour``
attempts from one network address, ``console_signin_per_account_per_15min`` for one
account; an attempt that signs in is not counted. Over a limit, the page says how long
to wait, with 429. Every sign-in, refusal (its reason, never the password) and sign-out
is in the audit log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Annotated, Any

from cryptography.fernet import Fernet, InvalidToken
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.audience.subscribers import normalise_email
from pipeline.people import audit, sessions, users
from pipeline.people.users import SignInRefused, TotpNeeded, User
from pipeline.web.console import auth, csrf, views
from pipeline.web.console.auth import Current, Svc
from pipeline.web.limits import client_of
from pipeline.web.service import Service

# Before a session (the sign-in steps; csrf.protect_sign_in), and signed in (sign-out).
before = APIRouter()
router = APIRouter()

CODE_COOKIE = "lp_console_code"
CODE_PATH = "/admin/sign-in/code"
CODE_SECONDS = 300
HOUR, QUARTER = 3600, 900

Email = Annotated[str, Form(max_length=320)]
Password = Annotated[str, Form(max_length=users.MAX_PASSWORD)]
Next = Annotated[str, Form(max_length=2000)]
Code = Annotated[str, Form(max_length=20)]

SIGNED_OUT = {
    "1": "You are signed out.",
    "all": "You are signed out everywhere.",
    "ended": "Your session has ended: sign in again to go on.",
}


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def _form(
    svc: Service,
    request: Request,
    step: str,
    status: int = 200,
    **context: str,
) -> HTMLResponse:
    token, cookie = csrf.sign_in_token(svc, request)
    values: dict[str, Any] = {"email": "", "next": "", "error": "", "notice": "", **context}
    page = views.page(svc, request, "sign_in.html", None, status, step=step, form=token, **values)
    csrf.set_sign_in_cookie(page, svc, cookie)
    return page


# -- the limits --------------------------------------------------------------------------------


def _account(email: str) -> str:
    """The account an address names, as the sign-in finds it: every spelling of one
    address (case, full-width letters, an xn-- domain) shares one limit."""
    try:
        return normalise_email(email)
    except ValueError:
        return " ".join(email.split()).lower()


def over_limit(svc: Service, request: Request, email: str) -> tuple[str, int] | None:
    """Count this attempt; over a limit, the sentence to show and the seconds to wait."""
    s = svc.settings
    wait = svc.limits.hit("console-ip", client_of(request), s.console_signin_per_ip_per_hour, HOUR)
    if wait:
        return f"from your network address: try again in {_minutes(wait)}.", wait
    wait = svc.limits.hit(
        "console-account", _account(email), s.console_signin_per_account_per_15min, QUARTER
    )
    if wait:
        svc.limits.forgive("console-ip", client_of(request))  # the account's limit refused it
        return f"for this account: try again in {_minutes(wait)}.", wait
    return None


def _minutes(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def forgive(svc: Service, request: Request, email: str) -> None:
    svc.limits.forgive("console-ip", client_of(request))
    svc.limits.forgive("console-account", _account(email))


def _locked_out(
    svc: Service, request: Request, step: str, over: tuple[str, int], email: str, nxt: str
) -> HTMLResponse:
    error = f"Too many sign-in attempts {over[0]}"
    _refused(svc, email, "locked out: " + error[:1].lower() + error[1:].split(":")[0])
    page = _form(svc, request, step, 429, error=error, email=email, next=nxt)
    page.headers["retry-after"] = str(over[1])
    return page


def _refused(svc: Service, email: str, reason: str) -> None:
    """The audit entry of a refused attempt: the account's, when the address is one."""
    known = users.by_email(svc.engine, email)
    if known is not None:
        audit.record(svc.engine, known.id, "sign-in refused", reason)
    else:
        try:  # what was typed only when it is an address (never, say, a password)
            typed = normalise_email(email)
        except ValueError:
            typed = "not an address"
        audit.record(svc.engine, None, "sign-in refused", f"{reason}: {typed}")


# -- the step between password and code ----------------------------------------------------------


def _fernet(svc: Service) -> Fernet:
    secret = svc.settings.secret_key.get_secret_value().encode()
    key = hashlib.sha256(b"letterpress console sign-in code step|" + secret).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def _pending(svc: Service, request: Request) -> tuple[int, str, str] | None:
    raw = request.cookies.get(auth.cookie_name(svc, CODE_COOKIE), "")
    if not raw or len(raw) > 4000:
        return None
    try:
        data = json.loads(_fernet(svc).decrypt(raw.encode(), ttl=CODE_SECONDS))
        return int(data["user"]), str(data["email"]), str(data["next"])
    except (InvalidToken, ValueError, KeyError, TypeError):
        return None


def _remember(svc: Service, response: Response, user_id: int, email: str, nxt: str) -> None:
    data = json.dumps({"user": user_id, "email": email, "next": nxt}).encode()
    response.set_cookie(
        auth.cookie_name(svc, CODE_COOKIE),
        _fernet(svc).encrypt(data).decode(),
        max_age=CODE_SECONDS,
        path=CODE_PATH,
        secure=auth.secure(svc),
        httponly=True,
        samesite="lax",
    )


def _forget(svc: Service, response: Response) -> None:
    response.delete_cookie(
        auth.cookie_name(svc, CODE_COOKIE),
        path=CODE_PATH,
        secure=auth.secure(svc),
        httponly=True,
        samesite="lax",
    )


# -- signing in ----------------------------------------------------------------------------------


def _signed_in(svc: Service, request: Request, user: User, next_url: str, code: bool) -> Response:
    """Start the session, set its cookie, and go on."""
    old = auth.token_of(request, svc)
    if old:
        sessions.end(svc.engine, old)
    token, session = sessions.start(svc.engine, user.id, auth.idle(svc), auth.absolute(svc))
    audit.record(svc.engine, user.id, "signed in", "with a code" if code else "")
    target = auth.TOTP_SET_UP if views.must_set_up_totp(svc, session) else auth.safe_next(next_url)
    response = views.see_other(target)
    auth.set_cookie(response, svc, token)
    if request.cookies.get(auth.cookie_name(svc, CODE_COOKIE)):
        _forget(svc, response)
    return response


@before.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(
    svc: Svc, request: Request, found: Current, next: str = "", out: str = ""
) -> Response:
    if found is not None:
        return views.see_other(auth.safe_next(next))
    notice = SIGNED_OUT.get(out, "")
    return _form(svc, request, "password", next=auth.safe_next(next), notice=notice)


@before.post("/sign-in", response_class=HTMLResponse)
def sign_in(
    svc: Svc, request: Request, email: Email, password: Password, next: Next = ""
) -> Response:
    over = over_limit(svc, request, email)
    if over:
        return _locked_out(svc, request, "password", over, email, next)
    try:
        user = users.authenticate(svc.engine, email, password)
    except TotpNeeded as exc:
        forgive(svc, request, email)  # the password was right: the code step counts
        response = views.see_other(CODE_PATH)
        _remember(svc, response, exc.user_id, email, next)
        return response
    except SignInRefused as exc:
        _refused(svc, email, str(exc))
        return _form(
            svc, request, "password", 400, error=_sentence(str(exc)), email=email, next=next
        )
    forgive(svc, request, email)
    return _signed_in(svc, request, user, next, code=False)


@before.get("/sign-in/code", response_class=HTMLResponse)
def code_page(svc: Svc, request: Request) -> Response:
    pending = _pending(svc, request)
    if pending is None:
        return views.see_other(auth.SIGN_IN)
    return _form(svc, request, "code", email=pending[1])


@before.post("/sign-in/code", response_class=HTMLResponse)
def code_step(svc: Svc, request: Request, code: Code = "") -> Response:
    pending = _pending(svc, request)
    if pending is None:
        page = _form(svc, request, "password", 400, error="The sign-in took too long: start again.")
        _forget(svc, page)
        return page
    user_id, email, next_url = pending
    over = over_limit(svc, request, email)
    if over:
        return _locked_out(svc, request, "code", over, email, next_url)
    try:
        user = users.second_factor(svc.engine, user_id, code)
    except TotpNeeded as exc:
        forgive(svc, request, email)  # no code typed: not a guess
        return _form(svc, request, "code", 400, error=_sentence(str(exc)), email=email)
    except SignInRefused as exc:
        _refused(svc, email, str(exc))
        return _form(svc, request, "code", 400, error=_sentence(str(exc)), email=email)
    forgive(svc, request, email)
    return _signed_in(svc, request, user, next_url, code=True)


# -- signing out (signed in: csrf.protect) --------------------------------------------------------


def _out(svc: Service, target: str) -> Response:
    response = views.see_other(target)
    auth.clear_cookie(response, svc)
    return response


@router.post("/sign-out", response_class=HTMLResponse)
def sign_out(svc: Svc, request: Request, session: auth.AnySession) -> Response:
    sessions.end(svc.engine, auth.token_of(request, svc))
    audit.record(svc.engine, session.user.id, "signed out", "")
    return _out(svc, f"{auth.SIGN_IN}?out=1")


@router.post("/sign-out-everywhere", response_class=HTMLResponse)
def sign_out_everywhere(svc: Svc, session: auth.AnySession) -> Response:
    # sessions.end_all records the entry, with how many sessions it ended.
    sessions.end_all(svc.engine, session.user.id, by=session.user.id)
    return _out(svc, f"{auth.SIGN_IN}?out=all")
