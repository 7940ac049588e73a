"""Who is signed in to the console: the session cookie and the dependencies that give a
handler the signed-in ``Session`` (``pipeline.people.sessions``).

The cookie ``lp_console`` holds the session's random token (the database keeps only its
hash): ``HttpOnly``, ``SameSite=Lax``, ``Path=/admin``, and when the base URL is https,
``Secure`` and named ``__Secure-lp_console`` (``cookie_name``: a browser takes a cookie
of that name only from an https page, so a plain-http answer cannot plant one).

A page asked for without a session is sent to ``/admin/sign-in?next=…`` (303); an htmx
request gets 401 with ``HX-Redirect`` there instead, since htmx would swap the sign-in
page into a fragment's place. ``require(action)`` refuses a role that
may not do it with a 403 page that says why (``roles.why_not``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import Response

from pipeline.people import sessions
from pipeline.people.roles import Action, can, why_not
from pipeline.people.sessions import Session
from pipeline.web.console.views import is_htmx, must_set_up_totp
from pipeline.web.service import Service, service

COOKIE = "lp_console"
PATH = "/admin"
HOME = "/admin/"
SIGN_IN = "/admin/sign-in"
TOTP_SET_UP = "/admin/totp"

Svc = Annotated[Service, Depends(service)]

# What a role that may not do an action is told it cannot do ("You cannot …").
DOING = {
    Action.READ: "read the console",
    Action.COMPOSE: "compose issues",
    Action.TEST: "send test emails",
    Action.SCHEDULE: "schedule issues",
    Action.STEER: "pause, resume, cancel or retry sending",
    Action.WATCH: "watch the sending machinery",
    Action.RECONCILE: "re-queue, reconcile or settle batches",
    Action.SUBSCRIBERS: "look after subscribers",
    Action.MODERATE: "moderate readers' replies",
    Action.MANAGE_USERS: "manage users",
}


class SignInFirst(Exception):
    """No session (or an ended one): to the sign-in page, then back to ``next``."""

    def __init__(self, next_url: str, htmx: bool) -> None:
        super().__init__(next_url)
        self.next_url = next_url
        self.htmx = htmx


class Refused(Exception):
    """A request the console will not carry out: a page with ``title`` and ``message``."""

    def __init__(
        self,
        status: int,
        title: str,
        message: str,
        session: Session | None = None,
        link: str = HOME,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.session = session
        self.link = link


class SetUpTotpFirst(Exception):
    """The role must sign in with a code and this user has not set one up yet."""

    def __init__(self, htmx: bool) -> None:
        super().__init__(TOTP_SET_UP)
        self.htmx = htmx


def secure(svc: Service) -> bool:
    return svc.settings.base_url.lower().startswith("https://")


def cookie_name(svc: Service, name: str) -> str:
    """``name``, with the ``__Secure-`` prefix when the console is served over https."""
    return f"__Secure-{name}" if secure(svc) else name


def idle(svc: Service) -> timedelta:
    return timedelta(minutes=svc.settings.console_idle_minutes)


def absolute(svc: Service) -> timedelta:
    return timedelta(days=svc.settings.console_session_days)


def set_cookie(response: Response, svc: Service, token: str) -> None:
    response.set_cookie(
        cookie_name(svc, COOKIE),
        token,
        max_age=int(absolute(svc).total_seconds()),
        path=PATH,
        secure=secure(svc),
        httponly=True,
        samesite="lax",
    )


def clear_cookie(response: Response, svc: Service) -> None:
    response.delete_cookie(
        cookie_name(svc, COOKIE), path=PATH, secure=secure(svc), httponly=True, samesite="lax"
    )


def safe_next(value: str | None) -> str:
    """``value`` when it is a path of the console on this site, else the home page: the
    sign-in page never sends anyone to another site (``//evil.example``, ``https://…``,
    ``/\\evil.example``)."""
    if not value or len(value) > 2000 or "\\" in value or value.startswith("//"):
        return HOME
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return HOME
    if parts.path != PATH and not parts.path.startswith(PATH + "/"):
        return HOME
    if parts.path.startswith(SIGN_IN) or parts.path == PATH:
        return HOME
    return value


def sign_in_url(next_url: str, ended: bool = False) -> str:
    """The sign-in page, to come back to ``next_url``; ``ended``: it says the session
    this browser had has ended (it sent a cookie that signs nobody in any more)."""
    target = safe_next(next_url)
    query = [] if target == HOME else [f"next={quote(target, safe='/')}"]
    if ended:
        query.append("out=ended")
    return SIGN_IN + ("?" + "&".join(query) if query else "")


def came_from(request: Request) -> str:
    """Where to come back to after signing in: this page, or for a form or an htmx
    request, the page it was sent from (``safe_next`` keeps only the console's own)."""
    if request.method == "GET" and not is_htmx(request):
        query = f"?{request.url.query}" if request.url.query else ""
        return request.url.path + query
    page = request.headers.get("hx-current-url") or request.headers.get("referer") or ""
    parts = urlsplit(page)
    return parts.path + (f"?{parts.query}" if parts.query else "") if parts.path else HOME


def token_of(request: Request, svc: Service) -> str:
    return request.cookies.get(cookie_name(svc, COOKIE), "")[:200]


def current_session(request: Request, svc: Svc) -> Session | None:
    """The session of this request's cookie, or None (no cookie, an unknown, ended or
    expired token, a disabled user). Sync: FastAPI runs it in its thread pool."""
    token = token_of(request, svc)
    if not token:
        return None
    found = sessions.lookup(svc.engine, token, idle(svc))
    if found is None or found.user.disabled:
        return None
    return found


Current = Annotated[Session | None, Depends(current_session)]


def signed_in_any(request: Request, found: Current) -> Session:
    """The signed-in session, TOTP set up or not (the set-up page and signing out)."""
    if found is None:
        raise SignInFirst(came_from(request), is_htmx(request))
    return found


AnySession = Annotated[Session, Depends(signed_in_any)]


def signed_in(request: Request, svc: Svc, session: AnySession) -> Session:
    """The signed-in session of a user who may use the console: one whose role must
    sign in with a code and has none set up is sent to set it up first."""
    if must_set_up_totp(svc, session):
        raise SetUpTotpFirst(is_htmx(request))
    return session


SignedIn = Annotated[Session, Depends(signed_in)]


def require(action: Action) -> Callable[[Session], Session]:
    """A dependency: the signed-in session, if its role may do ``action``; else 403."""

    def allowed(session: SignedIn) -> Session:
        if not can(session.user.role, action):
            raise Refused(
                403,
                f"You cannot {DOING[action]}",
                why_not(session.user.role, action),
                session,
            )
        return session

    return allowed
