"""The users page, for owners (``Action.MANAGE_USERS``): every user, a form to add one
(address, name, role, first password), and on each user their role and a button to
disable them. The changes are ``pipeline.people.users``'s, which record them in the
audit log.

Each form works without scripts (POST, then 303 back to the page, which says what
changed). With htmx, changing a role or disabling answers the user's card alone and the
sentence for the page's status line (out of band), so the page stays where it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.errors import NotFound
from pipeline.people import users
from pipeline.people.roles import Action
from pipeline.people.sessions import Session
from pipeline.people.users import User, UserError
from pipeline.statuses import Role
from pipeline.web.console import views
from pipeline.web.console.auth import Refused, Svc, require
from pipeline.web.service import Service

router = APIRouter()
Owner = Annotated[Session, Depends(require(Action.MANAGE_USERS))]
MAX_ID = 2**63 - 1  # the largest id the databases store
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]
Shown = Annotated[int, Query(ge=0, le=MAX_ID)]  # the user a message is about (0: none)

PAGE = "/admin/users"
ROLE_DOES = {
    Role.OWNER: "does everything, and manages users",
    Role.EDITOR: "composes, tests, schedules and steers issues",
    Role.AUTHOR: "composes and tests issues",
    Role.VIEWER: "reads issues, reports and the audit log",
    Role.OPERATOR: "watches and steers sends, reconciles batches, manages subscribers",
}


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _page(
    svc: Service,
    request: Request,
    session: Session,
    status: int = 200,
    message: str = "",
    error: str = "",
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    return views.page(
        svc,
        request,
        "users.html",
        session,
        status,
        vary=True,
        people=users.all_users(svc.engine),
        roles=list(Role),
        role_does=ROLE_DOES,
        min_password=users.MIN_PASSWORD,
        message=message,
        error=error,
        card_error="",
        oob=False,
        values=values or {"email": "", "name": "", "role": Role.AUTHOR.value},
    )


def _card(
    svc: Service,
    request: Request,
    session: Session,
    person: User,
    message: str = "",
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    """The card of one user and the page's status sentence, for htmx."""
    return views.fragment(
        svc,
        request,
        "users.html",
        ["person", "status"],
        session,
        status,
        person=person,
        roles=list(Role),
        message=message,
        card_error=error,
        oob=True,
    )


def _found(svc: Service, user_id: int, session: Session) -> User:
    try:
        return users.get(svc.engine, user_id)
    except NotFound:
        raise Refused(404, "No such user", f"There is no user {user_id}.", session) from None


@router.get("/users", response_class=HTMLResponse)
def users_page(
    svc: Svc, request: Request, session: Owner, added: Shown = 0, changed: Shown = 0
) -> Response:
    message = ""
    try:
        if added:
            person = users.get(svc.engine, added)
            message = f"Added {person.email} as {person.role}."
        elif changed:
            person = users.get(svc.engine, changed)
            state = "disabled" if person.disabled else person.role
            message = f"{person.email} is now {state}."
    except NotFound:
        pass
    return _page(svc, request, session, message=message)


@router.post("/users", response_class=HTMLResponse)
def add_user(
    svc: Svc,
    request: Request,
    session: Owner,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=users.MAX_PASSWORD)],
    role: Annotated[str, Form(max_length=20)],
    name: Annotated[str, Form(max_length=users.MAX_NAME)] = "",
) -> Response:
    try:
        person = users.add(svc.engine, email, role, password, name=name, by=session.user.id)
    except UserError as exc:
        values = {"email": email, "name": name, "role": role}
        return _page(svc, request, session, 400, error=_sentence(str(exc)), values=values)
    return views.see_other(f"{PAGE}?added={person.id}")


def _changed(
    svc: Service, request: Request, session: Session, user_id: int, change: Callable[[], object]
) -> Response:
    """Make ``change`` to the user; the answer for htmx or a plain form."""
    person = _found(svc, user_id, session)
    try:
        change()
    except UserError as exc:
        error = _sentence(str(exc))
        if views.is_htmx(request):
            # 200: htmx swaps a 2xx answer only, and this card says what went wrong.
            return _card(svc, request, session, person, error=error)
        return _page(svc, request, session, 400, error=error)
    if not views.is_htmx(request):
        return views.see_other(f"{PAGE}?changed={user_id}")
    person = users.get(svc.engine, user_id)
    state = "disabled" if person.disabled else person.role
    return _card(svc, request, session, person, message=f"{person.email} is now {state}.")


@router.post("/users/{user_id}/role", response_class=HTMLResponse)
def change_role(
    svc: Svc,
    request: Request,
    session: Owner,
    user_id: UserId,
    role: Annotated[str, Form(max_length=20)],
) -> Response:
    return _changed(
        svc,
        request,
        session,
        user_id,
        lambda: users.set_role(svc.engine, user_id, role, by=session.user.id),
    )


@router.post("/users/{user_id}/disable", response_class=HTMLResponse)
def disable_user(svc: Svc, request: Request, session: Owner, user_id: UserId) -> Response:
    return _changed(
        svc,
        request,
        session,
        user_id,
        lambda: users.disable(svc.engine, user_id, by=session.user.id),
    )
