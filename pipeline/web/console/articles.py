"""The articles page (``Action.READ``): every article of the content store with its
status, category and dates, what ``letterpress check`` finds wrong in it
(``path:line: message``), a link to its web page, and its engagement as the hot block
ranks it (``pipeline.render.overview``), with its readers' replies (approved and
waiting) and whether it takes them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.errors import NotFound
from pipeline.people.roles import Action
from pipeline.people.sessions import Session
from pipeline.render.overview import overview
from pipeline.replies import moderation
from pipeline.web.console import views
from pipeline.web.console.auth import Refused, Svc, require

router = APIRouter()
Reader = Annotated[Session, Depends(require(Action.READ))]


@router.get("/articles", response_class=HTMLResponse)
def articles_page(svc: Svc, request: Request, session: Reader) -> Response:
    try:
        found = overview(svc.settings, svc.engagement)
    except NotFound as exc:  # the server's content folder is missing
        raise Refused(503, "The articles cannot be read", f"{exc}.", session) from None
    return views.page(
        svc,
        request,
        "articles.html",
        session,
        overview=found,
        replies=moderation.counts(svc.engine),
        closed=moderation.closed_slugs(svc.engine),
        takes_replies={slug for slug, a in svc.articles().items() if a.replies},
    )
