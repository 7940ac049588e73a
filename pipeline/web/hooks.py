"""The providers' webhooks: what happened to a message after the provider took it.

    POST /webhooks/mailgun    Mailgun's JSON webhooks, signed with the signing key
    POST /webhooks/sendgrid   SendGrid's signed Event Webhook (a batch of events)
    POST /webhooks/postmark   Postmark's webhooks, with HTTP Basic credentials

The raw body is verified before anything is read from it (``pipeline.audience.webhooks``), and
a request's events are applied in one transaction: a retried request changes nothing,
and a refused one changes nothing at all, but for a refused signature or credentials
being counted per provider, for ``letterpress metrics`` (``audience.webhook_failures``).
A provider whose secret is not configured answers 404 and says which setting to set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Security
from fastapi.security import HTTPBasic
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from pipeline.audience import feedback, webhook_failures, webhooks
from pipeline.errors import ConfigError
from pipeline.web.service import Service, service

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])
Svc = Annotated[Service, Depends(service)]


class Applied(BaseModel):
    applied: int = Field(description="Events applied now.")
    duplicates: int = Field(description="Events applied by an earlier request (retries).")
    ignored: int = Field(
        description=(
            "Events that change nothing here: opens, clicks, deferrals, and addresses or"
            " issues that are not ours."
        )
    )


class Refusal(BaseModel):
    detail: str


REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"model": Refusal, "description": "Not JSON, or not what the provider sends"},
    401: {"model": Refusal, "description": "Not signed, or no (or wrong) credentials"},
    403: {"model": Refusal, "description": "Forged, stale or replayed signature"},
    404: {"model": Refusal, "description": "This provider's webhook is not configured"},
    413: {"model": Refusal, "description": "The body is larger than max_body_bytes"},
}

MAILGUN_BODY = {
    "type": "object",
    "required": ["signature", "event-data"],
    "properties": {
        "signature": {
            "type": "object",
            "required": ["timestamp", "token", "signature"],
            "properties": {
                "timestamp": {"type": "string", "description": "Unix time"},
                "token": {"type": "string", "description": "Random, used once"},
                "signature": {
                    "type": "string",
                    "description": "Hex HMAC-SHA256 of timestamp + token",
                },
            },
        },
        "event-data": {
            "type": "object",
            "description": "The event: event, id, recipient, severity, user-variables, ...",
        },
    },
}
SENDGRID_BODY = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["event"],
        "description": "An event: event, email, sg_event_id, type, reason, custom args ...",
    },
}
POSTMARK_BODY = {
    "type": "object",
    "required": ["RecordType"],
    "description": "One record: RecordType, ID, MessageID, Recipient or Email, Metadata, ...",
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _configured(svc: Service, provider: str) -> None:
    missing = webhooks.not_configured(svc.settings, provider)
    if missing:
        raise HTTPException(404, missing)


class RawBasic(HTTPBasic):
    """HTTP Basic in the OpenAPI document; the header itself goes to
    ``webhooks.check_postmark_credentials``, which parses and checks it."""

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        return request.headers.get("authorization")


PostmarkAuth = Annotated[
    str | None,
    Security(
        RawBasic(
            scheme_name="PostmarkWebhook",
            realm="webhooks",
            auto_error=False,
            description="POSTMARK_WEBHOOK_USER and POSTMARK_WEBHOOK_PASSWORD",
        )
    ),
]


def _run(svc: Service, provider: str, verify: Callable[..., webhooks.Batch], *args: Any) -> Applied:
    """Verify and apply, in a worker thread (both touch the database or burn CPU)."""
    try:
        batch = verify(*args)
        done = feedback.apply(svc.engine, svc.settings, provider, batch.events, nonce=batch.nonce)
    except webhooks.WebhookRefused as exc:
        log.warning("%s webhook refused (%d): %s", provider, exc.status, exc.message)
        webhook_failures.record(svc.engine, provider, exc)
        raise HTTPException(exc.status, exc.message, headers=exc.headers or None) from None
    except ConfigError as exc:
        log.error("%s webhook: %s", provider, exc)
        raise HTTPException(503, str(exc)) from None
    return Applied(applied=done.applied, duplicates=done.duplicates, ignored=done.ignored)


@router.post(
    "/mailgun",
    response_model=Applied,
    summary="Mailgun events: delivered, failed, complained, unsubscribed",
    description=(
        "Mailgun's JSON webhooks. The `signature` object must be the HMAC-SHA256 of"
        " `timestamp` + `token` under MAILGUN_WEBHOOK_SIGNING_KEY, the timestamp within"
        " `webhook_max_age_seconds` of now, and the token new: a token is accepted once."
    ),
    responses=REFUSALS,
    openapi_extra=_body(MAILGUN_BODY),
)
async def mailgun(svc: Svc, request: Request) -> Applied:
    _configured(svc, "mailgun")
    body = await request.body()
    return await run_in_threadpool(_run, svc, "mailgun", webhooks.mailgun, body, svc.settings)


@router.post(
    "/sendgrid",
    response_model=Applied,
    summary="SendGrid Event Webhook (signed): delivered, bounce, dropped, spamreport, unsubscribe",
    description=(
        "SendGrid's signed Event Webhook: a JSON array of events. The signature header is"
        " the ECDSA (P-256, SHA-256) signature of the timestamp header followed by the raw"
        " body, checked with SENDGRID_WEBHOOK_PUBLIC_KEY; the timestamp must be within"
        " `webhook_max_age_seconds` of now. Events are applied once each (`sg_event_id`)."
    ),
    responses={
        **REFUSALS,
        503: {"model": Refusal, "description": "SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid key"},
    },
    openapi_extra=_body(SENDGRID_BODY),
)
async def sendgrid(
    svc: Svc,
    request: Request,
    signature: Annotated[
        str | None,
        Header(alias=webhooks.SENDGRID_SIGNATURE, description="Base64 DER ECDSA signature"),
    ] = None,
    timestamp: Annotated[
        str | None,
        Header(alias=webhooks.SENDGRID_TIMESTAMP, description="Unix time"),
    ] = None,
) -> Applied:
    _configured(svc, "sendgrid")
    body = await request.body()
    return await run_in_threadpool(
        _run, svc, "sendgrid", webhooks.sendgrid, body, signature, timestamp, svc.settings
    )


@router.post(
    "/postmark",
    response_model=Applied,
    summary="Postmark webhooks: Delivery, Bounce, SpamComplaint, SubscriptionChange",
    description=(
        "Postmark's webhooks, one record per request, with the HTTP Basic credentials"
        " POSTMARK_WEBHOOK_USER and POSTMARK_WEBHOOK_PASSWORD (put them in the webhook's"
        " URL: `https://user:password@host/webhooks/postmark`). Each record is applied"
        " once (its ID, or its type, message and time)."
    ),
    responses=REFUSALS,
    openapi_extra=_body(POSTMARK_BODY),
)
async def postmark(svc: Svc, request: Request, authorization: PostmarkAuth = None) -> Applied:
    _configured(svc, "postmark")
    body = await request.body()
    return await run_in_threadpool(
        _run, svc, "postmark", webhooks.postmark, body, authorization, svc.settings
    )
