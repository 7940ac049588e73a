"""What subscribers and their mail clients reach: sign-up, confirmation, unsubscribe,
preferences, their data, click redirects and page views (the archive and the other
pages that act for nobody are in ``pages``).

Every link that acts for a subscriber carries a signed token (``pipeline.audience.tokens``); a
GET never changes anything (link scanners follow GETs), a POST does. No cookies: the
token is the only credential, and pages send no Referer that could leak it.
"""

from __future__ import annotations

import json
import logging
import time
import zoneinfo
from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from pipeline.audience import consent, directory, tracking
from pipeline.audience.subscribers import normalise_email
from pipeline.audience.tokens import Claim
from pipeline.errors import NotFound
from pipeline.sending.providers.base import ProviderError
from pipeline.web.limits import client_of
from pipeline.web.service import Service, page_headers, service
from pipeline.web.writer import Unsubscribe

log = logging.getLogger(__name__)
router = APIRouter()
# The two busiest routes, matched before all others (routing is a linear scan).
hot = APIRouter()
Svc = Annotated[Service, Depends(service)]

INVALID_LINK = "This link is not valid, or it has expired."
Token = Annotated[str, Path(max_length=80)]
Position = Annotated[int, Path(ge=0, le=9999)]


def claim_or_404(svc: Service, purpose: str, token: str, max_hours: float | None = None) -> Claim:
    """The claim of a signed link's token (dated when ``max_hours`` is given), or 404
    with the page every invalid link gets (also ``pipeline.web.replies``)."""
    if max_hours is None:
        claim = svc.signer.verify(purpose, token)
    else:
        claim = svc.signer.verify_dated(purpose, token, max_hours)
    if claim is None:
        raise HTTPException(404, INVALID_LINK)
    return claim


def _masked(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'•' * min(max(len(local) - 1, 1), 6)}@{domain}"


@cache
def _time_zones() -> list[str]:
    return sorted(z for z in zoneinfo.available_timezones() if "/" in z or z == "UTC")


# -- sign-up (double opt-in) ----------------------------------------------------------------


class SubscribeIn(BaseModel):
    email: str = Field(max_length=320, description="The address to subscribe.")
    name: str = Field(default="", max_length=200)
    lists: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=20)


class Accepted(BaseModel):
    status: str = "pending"
    message: str


ACCEPTED = (
    "If this address can receive our email, a message to confirm the subscription is on"
    " its way. The subscription starts when the link in it is followed."
)


def _signup(
    svc: Service, request: Request, tasks: BackgroundTasks, email: str, name: str, lists: list[str]
) -> int:
    """Rate limits, then the sign-up; 0, or the seconds to wait (429). Raises ValueError
    for bad input. The answer is the same for new, known and suppressed addresses."""
    s = svc.settings
    wait = svc.limits.hit("signup-ip", client_of(request), s.signup_per_ip_per_hour, 3600)
    if wait:
        return wait
    address = normalise_email(email)
    wait = svc.limits.hit("signup-address", address, s.signup_per_address_per_day, 86400)
    if wait:
        # Answer as if accepted: a limit per address must not tell anyone it is known.
        return 0
    signup = consent.signup(svc.engine, s, address, name, lists)
    if signup.mail is not None:
        tasks.add_task(_send_signup_mail, svc, signup, address, consent.check_name(name))
    return 0


def _send_signup_mail(svc: Service, signup: consent.Signup, email: str, name: str) -> None:
    message, recipient = consent.signup_message(svc.settings, svc.signer, signup, email, name)
    try:
        key = f"signup-{signup.subscriber_id}-{time.time_ns()}"
        result = svc.provider.send(message, [recipient], key)
    except ProviderError as exc:
        log.warning(
            "could not send the sign-up email to subscriber %s: %s", recipient.subscriber_id, exc
        )
        return
    except Exception:  # after the answer nothing else can report it: the log does
        log.exception("the sign-up email to subscriber %s failed", recipient.subscriber_id)
        return
    for reason in result.rejected.values():
        log.warning(
            "the sign-up email to subscriber %s was not sent: %s", signup.subscriber_id, reason
        )


@router.get("/subscribe", response_class=HTMLResponse, tags=["subscribers"], summary="Sign-up form")
def subscribe_form(svc: Svc) -> HTMLResponse:
    values = {"email": "", "name": "", "lists": []}
    return svc.page("subscribe.html", lists=svc.settings.public_lists, error="", values=values)


@router.post(
    "/subscribe",
    response_class=HTMLResponse,
    tags=["subscribers"],
    summary="Sign up from the form",
    responses={400: {"description": "Bad input"}, 429: {"description": "Too many sign-ups"}},
)
def subscribe_post(
    svc: Svc,
    request: Request,
    tasks: BackgroundTasks,
    email: Annotated[str, Form(max_length=320)],
    name: Annotated[str, Form(max_length=200)] = "",
    lists: Annotated[list[str] | None, Form(max_length=20)] = None,
) -> HTMLResponse:
    chosen = lists or []
    try:
        wait = _signup(svc, request, tasks, email, name, chosen)
    except ValueError as exc:
        values = {"email": email, "name": name, "lists": chosen}
        return svc.page(
            "subscribe.html", 400, lists=svc.settings.public_lists, error=str(exc), values=values
        )
    if wait:
        page = svc.page(
            "message.html",
            429,
            title="Too many sign-ups",
            message=f"Too many sign-ups from your address. Try again in {wait // 60 + 1} minutes.",
        )
        page.headers["retry-after"] = str(wait)
        return page
    return svc.page("message.html", title="Check your inbox", message=ACCEPTED)


@router.post(
    "/api/subscribe",
    status_code=202,
    response_model=Accepted,
    tags=["subscribers"],
    summary="Sign up (JSON)",
    responses={400: {"description": "Bad input"}, 429: {"description": "Too many sign-ups"}},
)
def subscribe_api(svc: Svc, request: Request, tasks: BackgroundTasks, body: SubscribeIn) -> Any:
    try:
        wait = _signup(svc, request, tasks, body.email, body.name, body.lists)
    except ValueError as exc:
        return JSONResponse({"detail": str(exc)}, 400)
    if wait:
        return JSONResponse(
            {"detail": "too many sign-ups from this address; try again later"},
            429,
            headers={"retry-after": str(wait)},
        )
    return Accepted(message=ACCEPTED)


@router.get(
    "/confirm/{token}",
    response_class=HTMLResponse,
    tags=["subscribers"],
    summary="Confirmation page",
)
def confirm_page(svc: Svc, token: Token) -> HTMLResponse:
    claim_or_404(svc, "confirm", token, svc.settings.confirm_hours)
    return svc.page("confirm.html")


@router.post(
    "/confirm/{token}",
    response_class=HTMLResponse,
    tags=["subscribers"],
    summary="Confirm a subscription",
)
def confirm(svc: Svc, token: Token) -> HTMLResponse:
    claim = claim_or_404(svc, "confirm", token, svc.settings.confirm_hours)
    try:
        consent.confirm(svc.engine, claim.subscriber_id)
    except NotFound:
        raise HTTPException(404, INVALID_LINK) from None
    preferences = svc.signer.sign("preferences", claim.subscriber_id)
    return svc.page(
        "message.html",
        title="You are subscribed",
        message=f"Thank you: your subscription to {svc.settings.site_name} is confirmed.",
        link=f"/preferences/{preferences}",
        link_text="Choose what you receive",
    )


# -- unsubscribe (RFC 8058) -------------------------------------------------------------------


def _list_name(svc: Service, list_id: int) -> str:
    return directory.list_name(svc.engine, list_id)


@router.get(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    tags=["subscribers"],
    summary="Unsubscribe page (changes nothing)",
)
def unsubscribe_page(svc: Svc, token: Token) -> HTMLResponse:
    claim = claim_or_404(svc, "unsubscribe", token)
    email = directory.email_of(svc.engine, claim.subscriber_id)
    if email is None:
        return svc.page(
            "message.html",
            title="Not subscribed",
            message="This address is not on our lists any more.",
        )
    return svc.page(
        "unsubscribe.html",
        email=_masked(email),
        list_name=_list_name(svc, claim.ref),
        preferences=f"/preferences/{svc.signer.sign('preferences', claim.subscriber_id)}",
    )


@hot.post(
    "/unsubscribe/{token}",
    tags=["subscribers"],
    summary="One-click unsubscribe (RFC 8058) and the page's button",
    description=(
        "The mailbox provider POSTs `List-Unsubscribe=One-Click` here; the page's button"
        " does too. Idempotent: 200 every time for a valid token."
    ),
    response_class=HTMLResponse,
)
async def unsubscribe(svc: Svc, token: Token) -> HTMLResponse:
    return await one_click(svc, claim_or_404(svc, "unsubscribe", token))


async def one_click(svc: Service, claim: Claim) -> HTMLResponse:
    """Unsubscribe, committed before the answer (also reached through ``FastPaths``)."""
    await svc.writer.submit(Unsubscribe(claim.subscriber_id, claim.ref, "one-click"))
    list_name = svc.list_names.get(claim.ref)
    if list_name is None:
        list_name = svc.list_names[claim.ref] = await run_in_threadpool(_list_name, svc, claim.ref)
    what = f"the {list_name} list" if list_name else f"all email from {svc.settings.site_name}"
    return svc.page(
        "message.html",
        title="You are unsubscribed",
        message=f"You will receive no more of {what}.",
        link=f"/preferences/{svc.signer.sign('preferences', claim.subscriber_id)}",
        link_text="Changed your mind? Your preferences",
    )


# -- preferences and data -------------------------------------------------------------------


def _preferences_page(
    svc: Service, sid: int, saved: bool = False, error: str = "", status: int = 200
) -> HTMLResponse:
    try:
        prefs = consent.preferences(svc.engine, svc.settings, sid)
    except NotFound:
        raise HTTPException(404, INVALID_LINK) from None
    signer = svc.signer
    return svc.page(
        "preferences.html",
        status,
        prefs=prefs,
        email=prefs.email,
        zones=_time_zones(),
        saved=saved,
        error=error,
        export=f"/export/{signer.sign_dated('export', sid)}",
        delete=f"/delete/{signer.sign_dated('delete', sid)}",
        unsubscribe=f"/unsubscribe/{signer.sign('unsubscribe', sid, 0)}",
    )


@router.get(
    "/preferences/{token}",
    response_class=HTMLResponse,
    tags=["subscribers"],
    summary="Preferences page",
)
def preferences_page(svc: Svc, token: Token) -> HTMLResponse:
    return _preferences_page(svc, claim_or_404(svc, "preferences", token).subscriber_id)


@router.post(
    "/preferences/{token}",
    response_class=HTMLResponse,
    tags=["subscribers"],
    summary="Save preferences",
)
def preferences_save(
    svc: Svc,
    token: Token,
    time_zone: Annotated[str, Form(max_length=64)] = "UTC",
    name: Annotated[str, Form(max_length=200)] = "",
    lists: Annotated[list[str] | None, Form(max_length=20)] = None,
    paused: Annotated[str, Form(max_length=10)] = "",
) -> HTMLResponse:
    sid = claim_or_404(svc, "preferences", token).subscriber_id
    try:
        consent.update_preferences(
            svc.engine,
            svc.settings,
            sid,
            lists=lists or [],
            time_zone=time_zone,
            paused=bool(paused),
            name=name,
        )
    except ValueError as exc:
        return _preferences_page(svc, sid, error=str(exc), status=400)
    except NotFound:
        raise HTTPException(404, INVALID_LINK) from None
    return _preferences_page(svc, sid, saved=True)


@router.get(
    "/export/{token}", tags=["subscribers"], summary="Everything held about the subscriber (JSON)"
)
def export(svc: Svc, token: Token) -> Response:
    claim = claim_or_404(svc, "export", token, svc.settings.signed_link_hours)
    try:
        data = consent.export(svc.engine, claim.subscriber_id, via="their own link")
    except NotFound:
        raise HTTPException(404, INVALID_LINK) from None
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={
            "content-disposition": 'attachment; filename="my-data.json"',
            "cache-control": "no-store",
        },
    )


@router.get(
    "/delete/{token}",
    response_class=HTMLResponse,
    tags=["subscribers"],
    summary="Deletion page (changes nothing)",
)
def delete_page(svc: Svc, token: Token) -> HTMLResponse:
    claim_or_404(svc, "delete", token, svc.settings.signed_link_hours)
    return svc.page("delete.html")


@router.post(
    "/delete/{token}",
    response_class=HTMLResponse,
    tags=["subscribers"],
    summary="Delete the subscriber's data",
)
def delete(svc: Svc, token: Token) -> HTMLResponse:
    claim = claim_or_404(svc, "delete", token, svc.settings.signed_link_hours)
    consent.erase(svc.engine, claim.subscriber_id, svc.settings)
    return svc.page(
        "message.html",
        title="Your data is deleted",
        message="We hold nothing about you any more, and will send you nothing.",
    )


# -- engagement ---------------------------------------------------------------------------------


async def _link(svc: Service, token: str, position: int) -> tuple[Claim, tracking.Link] | None:
    claim = svc.signer.verify("click", token)
    if claim is None:
        return None
    if svc.links.known(claim.ref):
        link = svc.links.get(claim.ref, position)
    else:  # the first click on an issue in this process reads its links
        link = await run_in_threadpool(svc.links.get, claim.ref, position)
    return None if link is None else (claim, link)


async def follow(svc: Service, token: str, position: int, agent: str) -> str | None:
    """Record a click (committed before the answer); the URL to redirect to, or None
    when the token or position is not one of ours. Also reached through ``FastPaths``."""
    found = await _link(svc, token, position)
    if found is None:
        return None
    claim, link = found
    person = not tracking.is_scanner(agent, svc.settings)
    await svc.writer.submit(
        tracking.Click(claim.ref, claim.subscriber_id, position, person, link.slug)
    )
    return link.url


NOT_OURS = "This link is not one of ours."
REDIRECT_HEADERS = {"cache-control": "no-store", "referrer-policy": "no-referrer-when-downgrade"}


@hot.get(
    "/r/{token}/{position}",
    status_code=302,
    tags=["tracking"],
    summary="Click redirect",
    description="Records the click and redirects to the issue's link, and only there.",
    responses={302: {"description": "To the link"}, 404: {"description": "Not a link of ours"}},
    response_class=RedirectResponse,
)
async def click(svc: Svc, request: Request, token: Token, position: Position) -> RedirectResponse:
    url = await follow(svc, token, position, request.headers.get("user-agent", ""))
    if url is None:
        raise HTTPException(404, NOT_OURS)
    return RedirectResponse(url, 302, headers=REDIRECT_HEADERS)


@hot.head(
    "/r/{token}/{position}",
    status_code=302,
    tags=["tracking"],
    summary="Click redirect, checked (records nothing)",
    responses={302: {"description": "To the link"}, 404: {"description": "Not a link of ours"}},
    response_class=RedirectResponse,
)
async def click_head(svc: Svc, token: Token, position: Position) -> RedirectResponse:
    found = await _link(svc, token, position)
    if found is None:
        raise HTTPException(404, NOT_OURS)
    return RedirectResponse(found[1].url, 302, headers=REDIRECT_HEADERS)


@router.post(
    "/v/{slug}",
    status_code=204,
    tags=["tracking"],
    summary="Page-view beacon of an article page",
    response_class=Response,
)
def view(svc: Svc, request: Request, slug: Annotated[str, Path(max_length=200)]) -> Response:
    agent = request.headers.get("user-agent", "")
    if (
        svc.engagement is not None
        and not tracking.is_scanner(agent, svc.settings)
        and slug in svc.article_slugs()
        and svc.limits.first("view", f"{client_of(request)}|{slug}", 1800)
    ):
        svc.engagement.record_view(slug)
    return Response(status_code=204, headers=page_headers())
