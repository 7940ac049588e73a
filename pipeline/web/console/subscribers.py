"""Subscribers in the console, for operators and owners (``Action.SUBSCRIBERS``):

    /admin/subscribers             search by address (a prefix, or exact), status, list
                                   and signup date, 50 a page (keyset: ``after``)
    /admin/subscribers/{id}        one subscriber: status, lists, time zone, attributes
                                   and their whole history; change status and lists,
                                   download their data, erase them (confirmed first)
    /admin/suppressions            addresses that bounced or complained: reason, date

The search is a GET form that works without scripts; with htmx it answers the results
alone as one types (``Vary: HX-Request``). Every change is the domain function the
command line and the admin API use (``changes.update``, ``consent.export``,
``consent.erase``), so it leaves the same subscriber event, and each is in the audit
log, which names the subscriber by id only: an erased subscriber's address is nowhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.audience import changes, consent, directory
from pipeline.audience.directory import Search
from pipeline.errors import NotFound
from pipeline.people import audit
from pipeline.people.roles import Action
from pipeline.people.sessions import Session
from pipeline.statuses import SubscriberStatus
from pipeline.web.console import views
from pipeline.web.console.auth import Refused, Svc, require
from pipeline.web.service import Service

router = APIRouter()
Keeper = Annotated[Session, Depends(require(Action.SUBSCRIBERS))]
MAX_ID = 2**63 - 1
SubscriberId = Annotated[int, Path(ge=1, le=MAX_ID)]
Text = Annotated[str, Query(max_length=400)]
Many = Annotated[list[str], Form()]
PAGE = "/admin/subscribers"
DONE = {
    "changed": "Saved.",
    "unchanged": "Nothing was different, so nothing changed.",
    "erased": "The subscriber is erased: nothing that names them is left.",
}


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _day(value: str, field: str) -> date | None:
    if not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{field}: {value.strip()[:40]!r} is not a day: write it as 2026-12-24"
        ) from None


@dataclass(frozen=True)
class Asked:
    """The search form as it came, to show it again as it was filled in."""

    q: str = ""
    match: str = "prefix"
    status: str = ""
    list: str = ""
    joined_from: str = ""
    joined_to: str = ""

    def search(self) -> Search:
        """What to look for; a ValueError says which field is wrong and how."""
        if self.match not in ("prefix", "exact"):
            raise ValueError("choose whether the address starts with, or is, what you typed")
        if self.status and self.status not in list(SubscriberStatus):
            raise ValueError(f"status: choose one of {', '.join(SubscriberStatus)}")
        return Search(
            address=self.q,
            exact=self.match == "exact",
            status=self.status or None,
            list_name=self.list or None,
            joined_from=_day(self.joined_from, "Signed up from"),
            joined_to=_day(self.joined_to, "Signed up to"),
        )

    def query(self, after: str = "") -> str:
        """The search's own address, on the page after ``after``."""
        fields = {
            "q": self.q,
            "match": self.match if self.q else "",
            "status": self.status,
            "list": self.list,
            "from": self.joined_from,
            "to": self.joined_to,
            "after": after,
        }
        given = urlencode({k: v for k, v in fields.items() if v})
        return f"{PAGE}?{given}" if given else PAGE


def _asked(
    q: Text = "",
    match: Annotated[str, Query(max_length=10)] = "prefix",
    status: Annotated[str, Query(max_length=20)] = "",
    list_: Annotated[str, Query(alias="list", max_length=200)] = "",
    from_: Annotated[str, Query(alias="from", max_length=40)] = "",
    to: Annotated[str, Query(max_length=40)] = "",
) -> Asked:
    return Asked(q, match, status, list_, from_, to)


SearchForm = Annotated[Asked, Depends(_asked)]


@router.get("/subscribers", response_class=HTMLResponse)
def subscribers_page(
    svc: Svc,
    request: Request,
    session: Keeper,
    asked: SearchForm,
    after: Text = "",
    done: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    context: dict[str, Any] = {
        "asked": asked,
        "found": None,
        "next_url": "",
        "error": "",
        "after": after,
        "message": DONE.get(done, ""),
        "statuses": list(SubscriberStatus),
        "lists": directory.all_lists(svc.engine),
    }
    status = 200
    try:
        found = directory.search(svc.engine, asked.search(), after)
    except ValueError as exc:
        context["error"] = _sentence(str(exc))
        status = 400
    else:
        context["found"] = found
        context["next_url"] = asked.query(found.next) if found.next else ""
        context["first_url"] = asked.query()
    if views.is_htmx(request):
        # 200 even for a refused search: htmx swaps a 2xx answer only, and it says why.
        return views.fragment(svc, request, "subscribers.html", ["results"], session, **context)
    return views.page(svc, request, "subscribers.html", session, status, vary=True, **context)


# -- one subscriber ----------------------------------------------------------------------------


def _profile(svc: Service, subscriber_id: int, session: Session) -> directory.Profile:
    found = directory.profile(svc.engine, subscriber_id)
    if found is None:
        raise Refused(
            404,
            "No such subscriber",
            f"There is no subscriber {subscriber_id}: nobody has that id, or they were"
            " erased (erasure leaves nothing that names them).",
            session,
            link=PAGE,
        )
    return found


def _subscriber_page(
    svc: Service,
    request: Request,
    session: Session,
    subscriber_id: int,
    status: int = 200,
    message: str = "",
    error: str = "",
) -> HTMLResponse:
    found = _profile(svc, subscriber_id, session)
    return views.page(
        svc,
        request,
        "subscriber.html",
        session,
        status,
        profile=found,
        s=found.subscriber,
        statuses=list(SubscriberStatus),
        history_max=directory.HISTORY_MAX,
        message=message,
        error=error,
    )


@router.get("/subscribers/{subscriber_id:int}", response_class=HTMLResponse)
def subscriber_page(
    svc: Svc,
    request: Request,
    session: Keeper,
    subscriber_id: SubscriberId,
    done: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    return _subscriber_page(svc, request, session, subscriber_id, message=DONE.get(done, ""))


@router.post("/subscribers/{subscriber_id:int}", response_class=HTMLResponse)
def change_subscriber(
    svc: Svc,
    request: Request,
    session: Keeper,
    subscriber_id: SubscriberId,
    status: Annotated[str, Form(max_length=20)] = "",
    lists: Many = [],  # noqa: B006 (FastAPI copies the default)
    shown: Many = [],  # noqa: B006 (the lists the form offered)
) -> Response:
    """Status and lists, as the form has them: the lists offered and not ticked are
    left, the ticked ones joined; one change, one event, as PATCH on the admin API."""
    try:
        change = changes.Change(
            status=status or None,
            join=lists,
            leave=[n for n in shown if n not in lists],
        )
        said = changes.update(svc.engine, subscriber_id, change, via=changes.CONSOLE)
    except NotFound:
        _profile(svc, subscriber_id, session)  # answers the 404 page
        raise
    except ValueError as exc:
        return _subscriber_page(
            svc, request, session, subscriber_id, 400, error=_sentence(str(exc))
        )
    if not said:
        return views.see_other(f"{PAGE}/{subscriber_id}?done=unchanged")
    audit.record(
        svc.engine,
        session.user.id,
        "subscriber changed",
        f"subscriber {subscriber_id}: {'; '.join(said)}",
    )
    return views.see_other(f"{PAGE}/{subscriber_id}?done=changed")


@router.post("/subscribers/{subscriber_id:int}/export")
def export_subscriber(svc: Svc, session: Keeper, subscriber_id: SubscriberId) -> Response:
    """Everything held about them (the right of access), as their own link gives it,
    for an operator answering a request; recorded in their history and the audit log."""
    try:
        data = consent.export(svc.engine, subscriber_id, via=changes.CONSOLE)
    except NotFound:
        _profile(svc, subscriber_id, session)
        raise
    audit.record(svc.engine, session.user.id, "subscriber exported", f"subscriber {subscriber_id}")
    return Response(
        json.dumps(data, indent=2, ensure_ascii=False),
        media_type="application/json",
        headers={
            **views.console_headers(),
            "content-disposition": f'attachment; filename="subscriber-{subscriber_id}.json"',
        },
    )


@router.get("/subscribers/{subscriber_id:int}/erase", response_class=HTMLResponse)
def review_erase(
    svc: Svc, request: Request, session: Keeper, subscriber_id: SubscriberId
) -> Response:
    """The confirmation: what goes and what stays. Nothing changes here."""
    found = _profile(svc, subscriber_id, session)
    return views.page(
        svc,
        request,
        "subscriber_erase.html",
        session,
        s=found.subscriber,
        profile=found,
        reply_erasure=svc.settings.reply_erasure,
    )


@router.post("/subscribers/{subscriber_id:int}/erase", response_class=HTMLResponse)
def erase_subscriber(
    svc: Svc, request: Request, session: Keeper, subscriber_id: SubscriberId
) -> Response:
    if not consent.erase(svc.engine, subscriber_id, svc.settings):
        _profile(svc, subscriber_id, session)  # the 404 page: nobody to erase
    audit.record(svc.engine, session.user.id, "subscriber erased", f"subscriber {subscriber_id}")
    return views.see_other(f"{PAGE}?done=erased")


# -- the suppression list ------------------------------------------------------------------------


@router.get("/suppressions", response_class=HTMLResponse)
def suppressions_page(
    svc: Svc,
    request: Request,
    session: Keeper,
    status: Annotated[str, Query(max_length=20)] = "",
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Response:
    context: dict[str, Any] = {"found": None, "kind": status, "after": after, "error": ""}
    code = 200
    try:
        context["found"] = directory.suppressed(svc.engine, status or None, after)
    except ValueError as exc:
        context["error"] = _sentence(str(exc))
        code = 400
    return views.page(svc, request, "suppressions.html", session, code, **context)
