"""The admin API's subscribers: list, add, export, read, change and erase. Each change
is the domain function the command line uses too (``pipeline.audience.changes``,
``consent.erase``), so it leaves the same event."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response, StreamingResponse

from pipeline.audience import changes, consent, directory, subscribers
from pipeline.audience.directory import EVENTS_SHOWN
from pipeline.errors import NotFound
from pipeline.store.db import MAX_ID
from pipeline.web.admin import inputs
from pipeline.web.admin.auth import Svc
from pipeline.web.admin.export import csv_pieces
from pipeline.web.admin.inputs import bad
from pipeline.web.admin.schemas import (
    BAD,
    BODY,
    NO_SUBSCRIBER,
    PAGE_MAX,
    PREFIX,
    Email,
    ListName,
    Status,
    SubscriberDetail,
    SubscriberEvent,
    SubscriberId,
    SubscriberIn,
    SubscriberOut,
    SubscriberPage,
    SubscriberPatch,
    answer,
)
from pipeline.web.service import Service

router = APIRouter()


def _out(found: directory.Summary) -> SubscriberOut:
    return SubscriberOut(
        id=found.id,
        email=found.email,
        name=found.name,
        status=found.status,
        time_zone=found.time_zone,
        paused=found.paused,
        lists=list(found.lists),
        created_at=found.created_at,
        confirmed_at=found.confirmed_at,
        updated_at=found.updated_at,
    )


def _subscriber(svc: Service, subscriber_id: int) -> SubscriberDetail:
    found = directory.detail(svc.engine, subscriber_id, events=EVENTS_SHOWN)
    if found is None:
        raise HTTPException(404, f"no subscriber with id {subscriber_id}")
    return SubscriberDetail(
        **_out(found).model_dump(),
        attributes=found.attributes,
        soft_bounces=found.soft_bounces,
        status_changed_at=found.status_changed_at,
        events=[SubscriberEvent(at=e.at, kind=e.kind, detail=e.detail) for e in found.events],
    )


@router.get(
    "/subscribers",
    response_model=SubscriberPage,
    summary="Subscribers, a page at a time",
    description=(
        "In id order, optionally one status, one list or one address. Keyset pagination:"
        " pass the answer's `next` as `after` until it is null."
    ),
    responses=BAD,
)
def list_subscribers(
    svc: Svc,
    status: Annotated[Status | None, Query()] = None,
    list_name: Annotated[ListName | None, Query(alias="list")] = None,
    email: Annotated[Email | None, Query()] = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="The last id already seen.")] = 0,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
) -> SubscriberPage:
    try:
        found = directory.page(
            svc.engine,
            status=status,
            list_name=inputs.list_filter(list_name),
            email=email,
            after=after,
            limit=limit,
        )
    except ValueError as exc:
        raise bad(exc) from None
    return SubscriberPage(items=[_out(s) for s in found.items], next=found.next)


@router.post(
    "/subscribers",
    status_code=201,
    response_model=SubscriberDetail,
    summary="Add a subscriber",
    responses={
        **BAD,
        409: answer("The address is already a subscriber (the detail gives the id)"),
        **BODY,
    },
)
def add_subscriber(svc: Svc, body: SubscriberIn, response: Response) -> SubscriberDetail:
    try:
        added = changes.add(
            svc.engine,
            body.email,
            via=changes.ADMIN_API,
            name=body.name,
            lists=inputs.list_names(body.lists),
            status=body.status,
            time_zone=body.time_zone,
            attributes={
                inputs.line(k, "an attribute name"): inputs.text(v, f"attribute {k!r}")
                for k, v in body.attributes.items()
            },
            only_new=True,
        )
    except changes.Exists as exc:
        raise HTTPException(
            409,
            f"{exc}: change it with PATCH {PREFIX}/subscribers/{exc.subscriber_id}",
        ) from None
    except ValueError as exc:
        raise bad(exc) from None
    response.headers["location"] = f"{PREFIX}/subscribers/{added.subscriber_id}"
    return _subscriber(svc, added.subscriber_id)


@router.get(
    "/subscribers.csv",
    response_class=StreamingResponse,
    summary="Export subscribers as CSV",
    description=(
        "The format of `letterpress subscribers export` (it imports back), streamed:"
        " optionally one status or one list."
    ),
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"},
        **BAD,
    },
)
def export_subscribers(
    svc: Svc,
    status: Annotated[Status | None, Query()] = None,
    list_name: Annotated[ListName | None, Query(alias="list")] = None,
) -> StreamingResponse:
    try:
        if status is not None:
            subscribers.check_status(status)
        list_name = inputs.list_filter(list_name)
        if list_name is not None:
            directory.require_list(svc.engine, list_name)
    except ValueError as exc:
        raise bad(exc) from None
    suffix = f"-{re.sub(r'[^A-Za-z0-9_-]+', '_', list_name)}" if list_name else ""
    return StreamingResponse(
        csv_pieces(svc, list_name, status),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="subscribers{suffix}.csv"',
            "cache-control": "no-store",
        },
    )


@router.get(
    "/subscribers/{subscriber_id}",
    response_model=SubscriberDetail,
    summary="One subscriber, with lists and recent events",
    responses=NO_SUBSCRIBER,
)
def get_subscriber(svc: Svc, subscriber_id: SubscriberId) -> SubscriberDetail:
    return _subscriber(svc, subscriber_id)


@router.patch(
    "/subscribers/{subscriber_id}",
    response_model=SubscriberDetail,
    summary="Change a subscriber's name, status, pause, time zone or lists",
    description=(
        "Only the fields given change; the change is one transaction and one event. A"
        " status set here is final: leaving lists does not unsubscribe."
    ),
    responses={**BAD, **NO_SUBSCRIBER, **BODY},
)
def update_subscriber(
    svc: Svc, subscriber_id: SubscriberId, body: SubscriberPatch
) -> SubscriberDetail:
    try:
        change = changes.Change(
            name=body.name,
            status=body.status,
            paused=body.paused,
            time_zone=body.time_zone,
            join=inputs.list_names(body.add_lists),
            leave=inputs.list_names(body.remove_lists),
        )
        changes.update(svc.engine, subscriber_id, change, via=changes.ADMIN_API)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except ValueError as exc:
        raise bad(exc) from None
    return _subscriber(svc, subscriber_id)


@router.delete(
    "/subscribers/{subscriber_id}",
    status_code=204,
    response_class=Response,
    summary="Erase a subscriber",
    description=(
        "The right to erasure: the subscriber and everything that names them are deleted"
        " (issue totals keep their counts)."
    ),
    responses={204: {"description": "Erased"}, **NO_SUBSCRIBER},
)
def erase_subscriber(svc: Svc, subscriber_id: SubscriberId) -> Response:
    if not consent.erase(svc.engine, subscriber_id, svc.settings):
        raise HTTPException(404, f"no subscriber with id {subscriber_id}")
    return Response(status_code=204)
