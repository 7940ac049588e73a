"""How console pages are answered: the templates in ``templates/console/``, escaped
Jinja2 like every page of the service, with the console's headers, and the sections a
role may open (the nav and the home page are built from ``SECTIONS``).

A page answered to htmx (the ``HX-Request`` header) is one block of its template
(jinja2-fragments), and such a page says ``Vary: HX-Request``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2_fragments import render_blocks

from pipeline.people.roles import Action, can
from pipeline.people.sessions import Session
from pipeline.render.templating import site_context
from pipeline.web.service import Service

# Scripts from this origin only (htmx), none inline; htmx's requests go to this origin.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def console_headers() -> dict[str, str]:
    # same-origin, not the service's no-referrer: under no-referrer a browser sends
    # "Origin: null" with a form's POST, and the CSRF check needs the real origin.
    return {
        "content-security-policy": CONSOLE_CSP,
        "cache-control": "no-store",
        "referrer-policy": "same-origin",
    }


@dataclass(frozen=True)
class Section:
    """A page of the console, offered to the roles that may do ``action``."""

    href: str
    title: str
    action: Action
    about: str


# The issues and articles pages that come next add their sections here (an issues
# list with Action.READ, composing with Action.COMPOSE, ...).
SECTIONS: tuple[Section, ...] = (
    Section("/admin/issues", "Issues", Action.READ, "Every issue; compose and edit drafts."),
    Section("/admin/articles", "Articles", Action.READ, "Articles, their problems, engagement."),
    Section("/admin/replies", "Replies", Action.MODERATE, "Readers' replies: approve, ban, close."),
    Section("/admin/operations", "Operations", Action.WATCH, "Queues, workers, sends and errors."),
    Section(
        "/admin/subscribers",
        "Subscribers",
        Action.SUBSCRIBERS,
        "Find subscribers; their history; change, export or erase them.",
    ),
    Section(
        "/admin/suppressions",
        "Suppressions",
        Action.SUBSCRIBERS,
        "Addresses that bounced or complained, with the reason.",
    ),
    Section("/admin/users", "Users", Action.MANAGE_USERS, "Add people, change roles, disable."),
    Section(
        "/admin/imports", "Import and export", Action.SUBSCRIBERS, "Subscribers from and to CSV."
    ),
    Section("/admin/audit", "Audit log", Action.READ, "Who did what, newest first."),
    Section("/admin/totp", "Two-factor", Action.READ, "Sign in with a code from an app too."),
)


def sections_for(session: Session | None) -> list[Section]:
    if session is None:
        return []
    return [s for s in SECTIONS if can(session.user.role, s.action)]


def must_set_up_totp(svc: Service, session: Session | None) -> bool:
    """The user's role signs in with a code (``console_totp_roles``) and they have
    none yet: until they set it up, the console is the set-up page and signing out."""
    return (
        session is not None
        and session.user.role in svc.settings.console_totp_roles
        and not session.user.totp
    )


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _context(
    svc: Service, request: Request, session: Session | None, context: dict[str, Any]
) -> dict[str, Any]:
    locked = must_set_up_totp(svc, session)
    return {
        **site_context(svc.settings),
        "me": session.user if session is not None else None,
        "csrf": session.csrf if session is not None else "",
        "locked": locked,
        "nav": [] if locked else sections_for(session),
        "here": request.url.path,
        **context,
    }


def page(
    svc: Service,
    request: Request,
    name: str,
    session: Session | None,
    status: int = 200,
    *,
    vary: bool = False,
    **context: Any,
) -> HTMLResponse:
    """A whole page; ``vary`` when the same address answers htmx with a fragment."""
    html = svc.templates.get_template(f"console/{name}").render(
        **_context(svc, request, session, context)
    )
    headers = console_headers()
    if vary:
        headers["vary"] = "HX-Request"
    return HTMLResponse(html, status_code=status, headers=headers)


def fragment(
    svc: Service,
    request: Request,
    name: str,
    blocks: Sequence[str],
    session: Session | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Blocks of a template, for htmx to swap in (the first in the place of the element
    that asked, the others out of band)."""
    html = render_blocks(
        svc.templates, f"console/{name}", blocks, **_context(svc, request, session, context)
    )
    headers = {**console_headers(), "vary": "HX-Request"}
    return HTMLResponse(html, status_code=status, headers=headers)


def see_other(url: str) -> RedirectResponse:
    """The answer to a form that worked (POST, redirect, GET)."""
    return RedirectResponse(url, 303, headers=console_headers())
