"""The pages of the subscriber service that act for nobody: the health check, the
stylesheet, the issue archive with each sent issue's web version, and the page a
preview's personal links lead to, and the built site when this server serves it too
(``site_dir``). No token, nothing changes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from pipeline.ops import health
from pipeline.sending import archive as issue_archive
from pipeline.store.db import MAX_ID
from pipeline.web.service import Service, service

router = APIRouter()
Svc = Annotated[Service, Depends(service)]

ISSUE_PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:;"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


# -- health and style -----------------------------------------------------------------------


@router.get(
    "/healthz",
    tags=["operations"],
    summary="Liveness: the process answers",
    description="Checks nothing else, so that an outage of the database or Redis does not"
    " make an orchestrator restart every service at once: `/readyz` checks those.",
)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["operations"],
    summary="Readiness: the database, its migrations, Redis and the broker",
    description="200 when every check passes, 503 when one fails; the body names every"
    " check with what was found, in words. Redis and the broker are checked when"
    " REDIS_URL is set.",
    responses={503: {"description": "A check failed"}},
)
def readyz(svc: Svc) -> JSONResponse:
    checks = health.readiness(svc.settings, svc.engine, svc.redis, svc.broker)
    ready = health.ready(checks)
    body = {
        "status": "ready" if ready else "not ready",
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
    }
    status = 200 if ready else 503
    return JSONResponse(body, status_code=status, headers={"cache-control": "no-store"})


@router.get("/service.css", include_in_schema=False)
def stylesheet(svc: Svc) -> Response:
    css = (svc.settings.templates_dir / "service" / "service.css").read_text(encoding="utf-8")
    return Response(css, media_type="text/css", headers={"cache-control": "public, max-age=3600"})


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    # Browsers ask for it on every page; "no icon", rather than a 404 each time.
    return Response(status_code=204, headers={"cache-control": "public, max-age=86400"})


# -- the links of a preview ------------------------------------------------------------------

PREVIEW_LINKS = {
    "unsubscribe": "lets the reader leave the list in one click",
    "preferences": "opens the reader's own preferences page: lists, time zone, pause",
}


@router.get(
    "/preview/{link}",
    response_class=HTMLResponse,
    tags=["archive"],
    summary="Where a preview's personal links lead",
    description="An email preview has no recipient: its unsubscribe and preferences"
    " links lead here, to a page that says so. Nothing changes.",
)
def preview_link(svc: Svc, link: Annotated[str, Path(max_length=20)]) -> HTMLResponse:
    what = PREVIEW_LINKS.get(link)
    if what is None:
        raise HTTPException(404, "no such preview link")
    return svc.page(
        "message.html",
        title="This is a preview",
        message=f"You followed a link in a preview of an email. In the email a subscriber"
        f" receives, this link {what}. Nothing has changed.",
    )


@router.post(
    "/preview/unsubscribe",
    response_class=HTMLResponse,
    tags=["archive"],
    summary="One-click unsubscribe in a preview (changes nothing)",
    description="A mail client that offers one-click unsubscribe (RFC 8058) for an opened"
    " preview message.eml POSTs its List-Unsubscribe link here: the same page, nothing"
    " changes.",
)
def preview_one_click(svc: Svc) -> HTMLResponse:
    return preview_link(svc, "unsubscribe")


# -- the archive ------------------------------------------------------------------------------


@router.get("/issues/", response_class=HTMLResponse, tags=["archive"], summary="Every sent issue")
def archive(svc: Svc) -> HTMLResponse:
    page = svc.page("archive.html", issues=issue_archive.sent_issues(svc.engine))
    page.headers["cache-control"] = "public, max-age=300"
    return page


@router.get(
    "/issues/{issue_id}/",
    response_class=HTMLResponse,
    tags=["archive"],
    summary="An issue's web version",
)
def issue_page(svc: Svc, issue_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> HTMLResponse:
    html = issue_archive.web_version(svc.engine, issue_id)
    if html is None:
        raise HTTPException(404, "No such issue.")
    return HTMLResponse(
        html,
        headers={"content-security-policy": ISSUE_PAGE_CSP, "cache-control": "public, max-age=300"},
    )


# -- the built site (``site_dir``) ------------------------------------------------------------

# Scripts (the page-view beacon, the replies) and styles from this origin only; no
# inline script or style; the replies' requests go to this origin. Images and
# embedded frames of articles may come from elsewhere over https.
SITE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self' https: data:; frame-src https:; object-src 'none';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class SiteFiles(StaticFiles):
    """The built site, when ``letterpress serve`` serves it too (``site_dir``): one
    origin for the pages and the service their forms and scripts reach."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["content-security-policy"] = SITE_CSP
        # The Origin of a reply form's POST names the site (no-referrer would send "null").
        response.headers["referrer-policy"] = "strict-origin-when-cross-origin"
        return response
