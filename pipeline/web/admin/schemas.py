"""The admin API's request and response models, the bounds of every input (they are
in ``/openapi.json``), and the error answers each route can give."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from pipeline.audience.directory import EVENTS_SHOWN
from pipeline.statuses import IssueStatus, SubscriberStatus
from pipeline.store.db import MAX_ID

PREFIX = "/api/admin"
PAGE_MAX = 500  # subscribers a page at most


# -- errors -------------------------------------------------------------------------------------


class Problem(BaseModel):
    detail: str = Field(description="What is wrong, and what to do about it.")


class InputProblem(BaseModel):
    where: str = Field(description="The part of the request, such as body.email.")
    problem: str


class InputProblems(BaseModel):
    detail: list[InputProblem]


def answer(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


Responses = dict[int | str, dict[str, Any]]

COMMON: Responses = {
    401: {
        **answer("No token, or not the admin token"),
        "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    },
    403: answer("The admin API is off: LETTERPRESS_ADMIN_TOKEN is not set"),
    422: {"model": InputProblems, "description": "The request does not have the right shape"},
}
BAD: Responses = {400: answer("A value the domain refuses (the detail says which and why)")}
BODY: Responses = {413: answer("The request body is too large")}
NO_SUBSCRIBER: Responses = {404: answer("No such subscriber")}
NO_ISSUE: Responses = {404: answer("No such issue")}
WRONG_STATE: Responses = {409: answer("The issue's state does not allow this")}
STEERING: Responses = {**NO_ISSUE, **WRONG_STATE}


# -- subscribers --------------------------------------------------------------------------------

Email = Annotated[str, Field(max_length=320, examples=["ann@example.org"])]
Name = Annotated[str, Field(max_length=200, description="One line; spaces are collapsed.")]
ListName = Annotated[str, Field(max_length=100, description="A list name (no ';').")]
TimeZone = Annotated[str, Field(max_length=64, description="An IANA name, such as Europe/Paris.")]
SUBSCRIBER_STATUSES = [s.value for s in SubscriberStatus]
# Text, not the enum: a status the domain does not know is a 400 that names the states.
Status = Annotated[
    str,
    Field(
        max_length=20,
        json_schema_extra={"enum": SUBSCRIBER_STATUSES},
        description=f"{', '.join(SUBSCRIBER_STATUSES[:-1])} or {SUBSCRIBER_STATUSES[-1]}.",
    ),
]
AttributeName = Annotated[str, Field(max_length=100)]
AttributeValue = Annotated[str, Field(max_length=2000)]
SubscriberId = Annotated[int, Path(ge=1, le=MAX_ID, description="The subscriber's id.")]


class SubscriberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name = ""
    status: Status = Field(
        default=SubscriberStatus.ACTIVE.value,
        description="active by default: they consented elsewhere (no confirmation email is sent).",
    )
    time_zone: TimeZone = "UTC"
    lists: list[ListName] = Field(
        default_factory=list, max_length=20, description="Created when missing."
    )
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict, max_length=50, description="Text values; empty means absent."
    )


class SubscriberPatch(BaseModel):
    """Only what is given changes."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    status: Status | None = None
    paused: bool | None = Field(default=None, description="Receive nothing until resumed.")
    time_zone: TimeZone | None = None
    add_lists: list[ListName] = Field(
        default_factory=list, max_length=20, description="Lists to join (created when missing)."
    )
    remove_lists: list[ListName] = Field(
        default_factory=list, max_length=20, description="Lists to leave (they must exist)."
    )


class SubscriberOut(BaseModel):
    id: int
    email: str
    name: str
    status: str
    time_zone: str
    paused: bool
    lists: list[str]
    created_at: datetime
    confirmed_at: datetime | None
    updated_at: datetime


class SubscriberEvent(BaseModel):
    at: datetime
    kind: str
    detail: str


class SubscriberDetail(SubscriberOut):
    attributes: dict[str, str]
    soft_bounces: int = Field(description="Soft bounces since the last delivery.")
    status_changed_at: datetime | None
    events: list[SubscriberEvent] = Field(description=f"The last {EVENTS_SHOWN}, newest first.")


class SubscriberPage(BaseModel):
    items: list[SubscriberOut]
    next: int | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


# -- issues -------------------------------------------------------------------------------------

IssueId = Annotated[int, Path(ge=1, le=MAX_ID, description="The issue's id.")]
ISSUE_STATUSES = [s.value for s in IssueStatus]
IssueState = Annotated[
    str,
    Field(
        max_length=20,
        json_schema_extra={"enum": ISSUE_STATUSES},
        description=", ".join(ISSUE_STATUSES),
    ),
]


class IssueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=300)
    preheader: str = Field(default="", max_length=300, description="The preview text.")
    intro: str = Field(
        default="", max_length=20_000, description="Above the articles (HTML allowed)."
    )
    articles: list[Annotated[str, Field(max_length=210)]] = Field(
        min_length=1,
        max_length=50,
        description=(
            "Slugs in order, each `slug`, `slug:full` or `slug:teaser`; the first is full"
            " unless told otherwise. Each must be a published article."
        ),
        examples=[["vitamin-k2-for-directing-calcium-to-bones", "another-article:teaser"]],
    )
    audience: list[ListName] = Field(
        default_factory=list,
        max_length=20,
        description="Subscriber lists (they must exist); none means every active subscriber.",
    )


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: str = Field(
        max_length=64,
        description="now, or an ISO 8601 time with its offset.",
        examples=["now", "2026-12-01T08:00:00+01:00"],
    )
    time_zone: TimeZone = Field(
        default="UTC", description="The zone the send time is shown in (an IANA name)."
    )


class ArticleOut(BaseModel):
    slug: str
    full: bool


class ProgressOut(BaseModel):
    recipients: int
    queued: int
    sent: int
    failed: int
    skipped: int
    batches: dict[str, int] = Field(description="Batches by state.")


class IssueOut(BaseModel):
    id: int
    subject: str
    status: str
    status_reason: str
    audience: list[str] = Field(description="Lists; empty means every active subscriber.")
    send_at: datetime | None
    time_zone: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: ProgressOut


class IssueEvent(BaseModel):
    at: datetime
    level: str
    message: str


class IssueDetail(IssueOut):
    preheader: str
    intro: str
    articles: list[ArticleOut]
    updated_at: datetime
    prepared_at: datetime | None
    events: list[IssueEvent] = Field(description=f"The last {EVENTS_SHOWN}, newest first.")


class IssueList(BaseModel):
    items: list[IssueOut] = Field(description="Newest first.")


class LinkClicks(BaseModel):
    position: int
    url: str
    slug: str | None = Field(description="The article the link leads to, if any.")
    clicks: int
    engaged: int = Field(description="Clicks by people (not link scanners, not instant).")
    subscribers: int = Field(description="Distinct subscribers who clicked.")


class ClickSummary(BaseModel):
    issue_id: int
    clicks: int
    engaged: int
    subscribers: int = Field(description="Distinct subscribers who clicked any link.")
    links: list[LinkClicks] = Field(description="Every link of the issue's email, in order.")
