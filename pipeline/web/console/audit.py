"""The audit log (``pipeline.people.audit``): who did what, newest first, a page of
``PER_PAGE`` entries at a time. Every signed-in role may read it (``Action.READ``).

The pages are links (``?page=N``); with htmx, following one answers the log's section
alone (``Vary: HX-Request``).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.people import audit
from pipeline.people.roles import Action
from pipeline.people.sessions import Session
from pipeline.web.console import views
from pipeline.web.console.auth import Svc, require

router = APIRouter()
Reader = Annotated[Session, Depends(require(Action.READ))]
PER_PAGE = 50
MAX_PAGE = 10**9


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    svc: Svc,
    request: Request,
    session: Reader,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
) -> Response:
    total = audit.count(svc.engine)
    pages = max(1, math.ceil(total / PER_PAGE))
    page = min(page, pages)
    context: dict[str, Any] = {
        "entries": audit.recent(svc.engine, PER_PAGE, (page - 1) * PER_PAGE),
        "page": page,
        "pages": pages,
        "total": total,
        "per_page": PER_PAGE,
    }
    if views.is_htmx(request):
        return views.fragment(svc, request, "audit.html", ["log"], session, **context)
    return views.page(svc, request, "audit.html", session, vary=True, **context)
