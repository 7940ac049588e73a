"""The console's home page: the sections the signed-in user's role may open
(``views.SECTIONS``, which the issues and articles pages join as they come), and the
user's own account (two-factor sign-in, signing out everywhere)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.web.console import views
from pipeline.web.console.auth import SignedIn, Svc

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def home(svc: Svc, request: Request, session: SignedIn) -> Response:
    return views.page(svc, request, "home.html", session, sections=views.sections_for(session))
