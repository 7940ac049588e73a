"""The mail providers' webhook requests, verified and read: what each reports after
accepting a message (delivered, bounced, complained, unsubscribed), as ``Event``s.
``pipeline.audience.feedback`` applies them.

Each provider proves a request is its own differently; a request that proves nothing
is refused (``WebhookRefused``) before its events are read:

    Mailgun   ``signature``: HMAC-SHA256 of timestamp + token under the webhook signing
              key (``MAILGUN_WEBHOOK_SIGNING_KEY``); each token is accepted once
              (``webhook_nonces``, when the events are applied), so a captured request
              cannot be replayed
    SendGrid  ``X-Twilio-Email-Event-Webhook-Signature``: ECDSA (P-256, SHA-256) of
              the timestamp header + the raw body, checked with the Event Webhook's
              verification key (``SENDGRID_WEBHOOK_PUBLIC_KEY``)
    Postmark  HTTP Basic credentials written into the webhook's URL
              (``POSTMARK_WEBHOOK_USER``, ``POSTMARK_WEBHOOK_PASSWORD``)

A signed timestamp further than ``webhook_max_age_seconds`` from now, either way, is
refused too. The parsers turn each provider's payload into ``Event``s; the kinds that
say nothing about the address (opens, clicks, deferrals) become events of no kind.

Nothing here logs an address or a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.errors import ConfigError, LetterpressError
from pipeline.settings import Settings
from pipeline.store import db

PROVIDERS = ("mailgun", "sendgrid", "postmark")
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
ISSUE_FIELD = "letterpress-issue"  # Mailgun's user variable and Postmark's metadata
SENDGRID_ISSUE = "letterpress_issue"  # SendGrid's custom argument
SENDGRID_SUBSCRIBER = "subscriber"
_ID_MAX = db.provider_events.c.event_id.type.length  # type: ignore[attr-defined]
_NONCE_MAX = db.webhook_nonces.c.nonce.type.length  # type: ignore[attr-defined]
_TIMESTAMP = re.compile(r"[0-9]{1,12}", re.ASCII)
_SETTINGS = {
    "mailgun": "MAILGUN_WEBHOOK_SIGNING_KEY (the HTTP webhook signing key in Mailgun's dashboard)",
    "sendgrid": (
        "SENDGRID_WEBHOOK_PUBLIC_KEY (the verification key of SendGrid's signed Event Webhook)"
    ),
    "postmark": (
        "POSTMARK_WEBHOOK_USER and POSTMARK_WEBHOOK_PASSWORD (the credentials in the webhook's URL)"
    ),
}


class WebhookRefused(LetterpressError):
    """A webhook request that is not taken: unsigned, forged, stale or replayed (401,
    403), or not what the provider sends (400). ``message`` names the problem and never
    repeats what the request held."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Event:
    """One provider event. ``kind`` is one of ``db.FEEDBACK``, or None for an event that
    changes nothing here. ``issue_id`` is None when the message named no issue (a
    sign-up email), 0 when it named something that is no issue of ours."""

    event_id: str
    kind: str | None
    email: str = ""
    subscriber_id: int | None = None
    issue_id: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Batch:
    """The events of one verified request; ``nonce`` is to be used only once."""

    provider: str
    events: tuple[Event, ...]
    nonce: str | None = None


def not_configured(settings: Settings, provider: str) -> str | None:
    """None when ``provider``'s webhook can be verified; else what to set."""
    match provider:
        case "mailgun":
            ready = bool(settings.mailgun_webhook_signing_key.get_secret_value())
        case "sendgrid":
            ready = bool(settings.sendgrid_webhook_public_key.strip())
        case "postmark":
            ready = bool(
                settings.postmark_webhook_user
                and settings.postmark_webhook_password.get_secret_value()
            )
        case _:
            raise ValueError(f"unknown provider {provider!r}")
    if ready:
        return None
    return f"{provider} webhooks are not configured: set {_SETTINGS[provider]}"


# -- shared checks ----------------------------------------------------------------------


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested absurdly deep
        raise WebhookRefused(400, "the body is not JSON") from None


def check_timestamp(text: str, max_age: int, now: float | None = None) -> None:
    """Refuse a signed Unix time that is not within ``max_age`` seconds of now."""
    if not _TIMESTAMP.fullmatch(text):
        raise WebhookRefused(403, "the signature's timestamp is not a Unix time")
    at = int(text)
    current = time.time() if now is None else now
    if not math.isfinite(current) or abs(current - at) > max_age:
        raise WebhookRefused(403, "the signature's timestamp is too old or in the future")


def _text(value: Any, what: str, limit: int = 320) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise WebhookRefused(400, f"{what} is missing or not a string")
    return value


def _optional_text(value: Any, limit: int = 320) -> str:
    return value if isinstance(value, str) and len(value) <= limit else ""


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookRefused(400, f"{what} is not a JSON object")
    return value


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def record_id(value: Any) -> int | None:
    """The id (of an issue, a subscriber) a message's variable holds: None when it holds
    none, 0 when the value is not an id (it names nothing of ours)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        number = int(value)
    else:
        return 0
    return number if 0 < number < 2**63 else 0


def _event_id(text: str) -> str:
    """Ids too long for the column are kept as their digest: still one row per id."""
    if len(text) <= _ID_MAX:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _status(value: Any) -> str:
    """A provider's status or code, for the record: short, one line, printable."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    return "".join(c for c in text[:40] if c.isprintable())


# -- Mailgun ------------------------------------------------------------------------------

# What a permanent failure means, by Mailgun's reason: the suppress-* reasons are
# Mailgun refusing an address on its own lists, for the cause they name; "old" is a
# message still undelivered when Mailgun stopped retrying (a soft bounce, as is one whose
# delivery-status says bounce-type soft); "webhook" is a failed webhook, not a message.
# Any other permanent failure is a hard bounce.
_MAILGUN_PERMANENT: dict[str, str | None] = {
    "suppress-complaint": "complained",
    "suppress-unsubscribe": "unsubscribed",
    "old": "soft_bounce",
    "webhook": None,
}
_MAILGUN_KINDS = {
    "delivered": "delivered",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
}


def verify_mailgun_signature(key: str, timestamp: str, token: str, signature: str) -> bool:
    """True when ``signature`` is the hex HMAC-SHA256 of timestamp + token under ``key``."""
    expected = hmac.new(
        key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), signature.lower().encode("utf-8"))


def mailgun(body: bytes, settings: Settings, now: float | None = None) -> Batch:
    """A Mailgun webhook request (``{"signature": {...}, "event-data": {...}}``),
    verified: its event, and its token, which ``apply`` accepts only once."""
    payload = _json(body)
    signed = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(signed, dict):
        raise WebhookRefused(401, "the request is not signed (no signature object)")
    parts = [signed.get(k) for k in ("timestamp", "token", "signature")]
    if isinstance(parts[0], int) and not isinstance(parts[0], bool):
        parts[0] = str(parts[0])  # Mailgun sends text; a number signs the same digits
    if not all(isinstance(p, str) and p for p in parts):
        raise WebhookRefused(401, "the signature needs a timestamp, a token and a signature")
    timestamp, token, signature = (str(p) for p in parts)
    key = settings.mailgun_webhook_signing_key.get_secret_value()
    if len(token) > _NONCE_MAX or not verify_mailgun_signature(key, timestamp, token, signature):
        raise WebhookRefused(403, "the signature does not match: check the webhook signing key")
    check_timestamp(timestamp, settings.webhook_max_age_seconds, now)
    data = _object(payload.get("event-data"), "event-data")
    return Batch("mailgun", (parse_mailgun(data),), nonce=token)


def parse_mailgun(data: Mapping[str, Any]) -> Event:
    """One Mailgun ``event-data`` object."""
    name = _text(data.get("event"), "event-data.event", 40)
    event_id = _event_id(_text(data.get("id"), "event-data.id", 1000))
    kind: str | None = _MAILGUN_KINDS.get(name)
    detail = f"mailgun: {name}"
    if name == "failed":
        severity = _optional_text(data.get("severity"), 40)
        reason = _status(data.get("reason"))
        status = _mapping(data.get("delivery-status"))
        code = _status(status.get("code"))
        why = ", ".join(filter(None, [reason, code])) or "no reason given"
        detail = f"mailgun: {severity or 'unknown'} failure ({why})"
        if severity == "permanent":
            soft = status.get("bounce-type") == "soft"
            kind = _MAILGUN_PERMANENT.get(reason, "soft_bounce" if soft else "bounced")
        elif severity == "temporary":
            kind = "soft_bounce"
    if kind is None:
        return Event(event_id, None)
    variables = _mapping(data.get("user-variables"))
    issue = variables.get(ISSUE_FIELD, variables.get("issue"))
    return Event(
        event_id,
        kind,
        email=_text(data.get("recipient"), "event-data.recipient"),
        issue_id=record_id(issue),
        detail=detail,
    )


# -- SendGrid -----------------------------------------------------------------------------

_SENDGRID_KINDS = {
    "delivered": "delivered",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}


@lru_cache(maxsize=4)
def sendgrid_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 of the DER public key); a PEM
    block is taken too. A ConfigError when it is not a P-256 public key."""
    problem = (
        "SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA P-256 public key: copy the"
        " verification key from SendGrid's Event Webhook settings"
    )
    stripped = text.strip()
    try:
        if stripped.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(stripped.encode("ascii"))
        else:
            key = serialization.load_der_public_key(
                base64.b64decode("".join(stripped.split()), validate=True)
            )
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        raise ConfigError(problem) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(problem)
    return key


def verify_sendgrid_signature(
    key: ec.EllipticCurvePublicKey, timestamp: str, body: bytes, signature: str
) -> bool:
    """True when ``signature`` (base64 DER) is the key's ECDSA signature, SHA-256, of
    the timestamp followed by the raw body."""
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
        key.verify(raw, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        return False
    return True


def sendgrid(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    settings: Settings,
    now: float | None = None,
) -> Batch:
    """A SendGrid signed Event Webhook request (a JSON array of events), verified."""
    if not signature or not timestamp:
        raise WebhookRefused(
            401, f"the request is not signed (no {SENDGRID_SIGNATURE} or {SENDGRID_TIMESTAMP})"
        )
    key = sendgrid_public_key(settings.sendgrid_webhook_public_key)
    if not verify_sendgrid_signature(key, timestamp, body, signature):
        raise WebhookRefused(403, "the signature does not match: check the verification key")
    check_timestamp(timestamp, settings.webhook_max_age_seconds, now)
    items = _json(body)
    if not isinstance(items, list):
        raise WebhookRefused(400, "the body is not a JSON array of events")
    return Batch("sendgrid", tuple(parse_sendgrid(items)))


def parse_sendgrid(items: Sequence[Any]) -> list[Event]:
    """SendGrid's events; one that is not an object with an ``event`` fails them all."""
    events = []
    for n, raw in enumerate(items):
        item = _object(raw, f"event {n}")
        name = _text(item.get("event"), f"event {n}: event", 40)
        kind: str | None = _SENDGRID_KINDS.get(name)
        detail = f"sendgrid: {name}"
        if name == "bounce":
            bounce = _optional_text(item.get("type"), 40) or "bounce"
            kind = "soft_bounce" if bounce == "blocked" else "bounced"
            detail = f"sendgrid: {bounce}" + (
                f" ({_status(item['status'])})" if item.get("status") else ""
            )
        elif name == "dropped":
            reason = _optional_text(item.get("reason"), 2000)
            kind = "bounced" if "bounced address" in reason.lower() else None
            detail = "sendgrid: dropped (bounced address)"
        if kind is None:
            events.append(Event(f"ignored-{n}", None))
            continue
        subscriber = record_id(item.get(SENDGRID_SUBSCRIBER))
        events.append(
            Event(
                _event_id(_text(item.get("sg_event_id"), f"event {n}: sg_event_id", 1000)),
                kind,
                email=_text(item.get("email"), f"event {n}: email"),
                subscriber_id=subscriber or None,
                issue_id=record_id(item.get(SENDGRID_ISSUE)),
                detail=detail,
            )
        )
    return events


# -- Postmark -----------------------------------------------------------------------------

_POSTMARK_HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
_POSTMARK_SOFT = frozenset({"SoftBounce", "Transient", "DnsError", "Blocked"})
_POSTMARK_TYPES = {"SpamComplaint": "complained", "Unsubscribe": "unsubscribed"}
_POSTMARK_SUPPRESSION = {"HardBounce": "bounced", "SpamComplaint": "complained"}
_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="webhooks", charset="UTF-8"'}


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """The user and password of an ``Authorization: Basic`` header; None without one."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def check_postmark_credentials(settings: Settings, authorization: str | None) -> None:
    """Refuse (401, with a Basic challenge) a request without the configured user and
    password; both are compared in constant time."""
    given = basic_credentials(authorization)
    if given is None:
        raise WebhookRefused(401, "credentials are required (HTTP Basic)", _BASIC_CHALLENGE)
    user_ok = hmac.compare_digest(
        given[0].encode("utf-8"), settings.postmark_webhook_user.encode("utf-8")
    )
    password = settings.postmark_webhook_password.get_secret_value()
    password_ok = hmac.compare_digest(given[1].encode("utf-8"), password.encode("utf-8"))
    if not (user_ok and password_ok):
        raise WebhookRefused(401, "wrong credentials", _BASIC_CHALLENGE)


def postmark(body: bytes, authorization: str | None, settings: Settings) -> Batch:
    """A Postmark webhook request (one JSON object), its credentials checked."""
    check_postmark_credentials(settings, authorization)
    record = _object(_json(body), "the body")
    return Batch("postmark", (parse_postmark(record),))


def parse_postmark(record: Mapping[str, Any]) -> Event:
    """One Postmark webhook record: Delivery, Bounce, SpamComplaint, SubscriptionChange
    (others, such as Open and Click, change nothing)."""
    kind_name = _text(record.get("RecordType"), "RecordType", 40)
    message_id = _optional_text(record.get("MessageID"), 200)
    number = record.get("ID")
    if isinstance(number, (int, str)) and not isinstance(number, bool) and str(number):
        event_id = f"{kind_name}:{number}"
    else:
        if not message_id:
            raise WebhookRefused(400, "the record has neither an ID nor a MessageID")
        moment = next(
            (
                _optional_text(record.get(k), 60)
                for k in ("DeliveredAt", "ChangedAt", "BouncedAt", "ReceivedAt")
                if record.get(k)
            ),
            "",
        )
        event_id = ":".join(filter(None, [kind_name, message_id, moment]))
    event_id = _event_id(event_id)
    kind: str | None = None
    address = "Recipient"
    detail = f"postmark: {kind_name}"
    match kind_name:
        case "Delivery":
            kind = "delivered"
        case "Bounce" | "SpamComplaint":
            address = "Email"
            bounce = _optional_text(record.get("Type"), 60)
            if kind_name == "SpamComplaint":
                kind = "complained"
            elif bounce in _POSTMARK_HARD:
                kind = "bounced"
            elif bounce in _POSTMARK_SOFT:
                kind = "soft_bounce"
            else:
                kind = _POSTMARK_TYPES.get(bounce)
            detail = f"postmark: {bounce or kind_name}"
        case "SubscriptionChange":
            if record.get("SuppressSending") is True:
                reason = _optional_text(record.get("SuppressionReason"), 60)
                kind = _POSTMARK_SUPPRESSION.get(reason, "unsubscribed")
                detail = f"postmark: suppressed ({reason or 'no reason given'})"
    if kind is None:
        return Event(event_id, None)
    metadata = _mapping(record.get("Metadata"))
    return Event(
        event_id,
        kind,
        email=_text(record.get(address), address),
        issue_id=record_id(metadata.get(ISSUE_FIELD)),
        detail=detail,
    )
