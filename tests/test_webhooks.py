"""The providers' webhooks, end to end: ``letterpress serve`` in its own process on
SQLite and PostgreSQL, requests signed the way Mailgun (HMAC), SendGrid (ECDSA, with a
key pair made here) and Postmark (HTTP Basic) sign them, and the database checked.

One service and one sent issue per database serve the whole module; every test uses
addresses of its own, so the tests do not depend on each other's order."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.audience import subscribers, webhooks
from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef
from pipeline.sending.parts import SendingParts
from pipeline.sending.prepare import prepare
from pipeline.store import db
from tests.conftest import CONTENT, SEEDS, postgres_database
from tests.service import (
    MAILGUN_SIGNING_KEY,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    RunningService,
    running_service,
)

PROVIDERS = ("mailgun", "sendgrid", "postmark")
KINDS = ("delivered", "bounced", "soft_bounce", "complained", "unsubscribed")
ARTICLES = [ArticleRef(SEEDS[0], True), ArticleRef(SEEDS[1], False)]
S = db.subscribers.c
D = db.deliveries.c
E = db.subscriber_events.c

# Everyone the tests write about, by name; each is sent the module's issue.
ROSTER = [
    *(f"{p}-{case}" for p in PROVIDERS for case in (*KINDS, "soft", "reset", "late", "twice")),
    "mg-ignored",
    "mg-suppressed",
    "mg-given-up",
    "mg-replay",
    "mg-forged",
    "sg-batch-delivered",
    "sg-batch-blocked",
    "sg-batch-dropped",
    "sg-batch-dropped-other",
    "sg-batch-group",
    "sg-by-id",
    "sg-forged",
    "pm-change",
    "pm-change-bounce",
    "pm-transient",
    "pm-bad-address",
    "pm-no-id",
    "pm-forged",
    "log-check",
    "skip-first",
    "skip-bounced",
]
LATER = ("skip-first", "skip-bounced")  # also on the list of a second issue


def address(name: str) -> str:
    return f"{name}@example.com"


# -- the service, per database ----------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database of this module's own: a SQLite file, or a PostgreSQL database made
    for it, migrated by the service."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('webhooks-db') / 'letterpress.db'}"
        return
    with postgres_database("webhooks") as url:
        yield url


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_key_text(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


@pytest.fixture(scope="module")
def svc(
    database: str,
    redis_url: str,
    sendgrid_key: ec.EllipticCurvePrivateKey,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningService]:
    tmp = tmp_path_factory.mktemp("webhooks")
    settings = {
        "sendgrid_webhook_public_key": public_key_text(sendgrid_key),
        "soft_bounce_limit": 3,
    }
    with running_service(tmp, database, redis_url, settings=settings) as running:
        yield running


@dataclass
class Sent:
    """An issue sent (through the outbox) to everyone in ``ROSTER``."""

    issue: int
    ids: dict[str, int]
    runtime: SendingParts

    def sid(self, name: str) -> int:
        return self.ids[name]


@pytest.fixture(scope="module")
def sent(svc: RunningService) -> Iterator[Sent]:
    rt = SendingParts(svc.settings.model_copy(update={"content_dir": CONTENT, "batch_size": 100}))
    ids = {}
    for name in ROSTER:
        lists = ["readers", "later"] if name in LATER else ["readers"]
        ids[name] = subscribers.add(rt.engine, address(name), lists=lists, status="active")
    issue = issues.create(rt.engine, subject="Webhooks", audience=("readers",), articles=ARTICLES)
    issues.schedule(rt.engine, issue, None)
    assert issues.claim_due(rt.engine, timedelta(hours=6)) == [issue]
    batches = prepare(rt.engine, rt.settings, rt.catalog(), issue, rt.batch_size)
    assert {rt.sender.send_batch(b).status for b in batches} == {"sent"}
    try:
        yield Sent(issue, ids, rt)
    finally:
        rt.close()


# -- signing requests as the providers do ----------------------------------------------------


@dataclass
class Hooks:
    svc: RunningService
    sendgrid_key: ec.EllipticCurvePrivateKey
    tokens: list[str] = field(default_factory=list)

    def mailgun(
        self,
        event_data: Any,
        *,
        key: str = MAILGUN_SIGNING_KEY,
        timestamp: int | None = None,
        token: str | None = None,
    ) -> requests.Response:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        token = token or secrets.token_hex(25)
        signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
        body = {
            "signature": {"timestamp": stamp, "token": token, "signature": signature},
            "event-data": event_data,
        }
        return self.raw("mailgun", json.dumps(body).encode())

    def sendgrid(
        self,
        events: Any,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        timestamp: int | None = None,
        body: bytes | None = None,
    ) -> requests.Response:
        raw = json.dumps(events).encode() if body is None else body
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = (key or self.sendgrid_key).sign(stamp.encode() + raw, ec.ECDSA(hashes.SHA256()))
        headers = {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }
        return self.raw("sendgrid", raw, headers)

    def postmark(
        self, record: Any, *, auth: tuple[str, str] = (POSTMARK_USER, POSTMARK_PASSWORD)
    ) -> requests.Response:
        return requests.post(
            f"{self.svc.url}/webhooks/postmark", data=json.dumps(record), auth=auth, timeout=10
        )

    def raw(
        self, provider: str, body: bytes, headers: dict[str, str] | None = None
    ) -> requests.Response:
        return requests.post(
            f"{self.svc.url}/webhooks/{provider}",
            data=body,
            headers={"content-type": "application/json", **(headers or {})},
            timeout=10,
        )

    def event(
        self,
        provider: str,
        kind: str,
        name: str,
        issue: int | None = None,
        event_id: str | None = None,
    ) -> requests.Response:
        """Post one event of ``kind`` (a ``db.FEEDBACK`` kind) about ``name``."""
        event_id = event_id or uuid.uuid4().hex
        if provider == "mailgun":
            return self.mailgun(mailgun_event(kind, address(name), issue, event_id))
        if provider == "sendgrid":
            return self.sendgrid([sendgrid_event(kind, address(name), issue, event_id)])
        return self.postmark(postmark_record(kind, address(name), issue, event_id))


def mailgun_event(kind: str, email: str, issue: int | None, event_id: str) -> dict[str, Any]:
    name, extra = {
        "delivered": ("delivered", {}),
        "bounced": ("failed", {"severity": "permanent", "reason": "bounce"}),
        "soft_bounce": ("failed", {"severity": "temporary", "reason": "generic"}),
        "complained": ("complained", {}),
        "unsubscribed": ("unsubscribed", {}),
    }[kind]
    variables = {"letterpress-batch": "lp-1-1-abc"}
    if issue is not None:
        variables["letterpress-issue"] = str(issue)
    return {
        "event": name,
        "id": event_id,
        "timestamp": time.time(),
        "recipient": email,
        "user-variables": variables,
        "delivery-status": {"code": 550 if kind == "bounced" else 421, "message": "no"},
        **extra,
    }


def sendgrid_event(
    kind: str, email: str, issue: int | None, event_id: str, **extra: Any
) -> dict[str, Any]:
    name, fields = {
        "delivered": ("delivered", {"response": "250 OK"}),
        "bounced": ("bounce", {"type": "bounce", "status": "5.1.1", "reason": "no such user"}),
        "soft_bounce": ("bounce", {"type": "blocked", "status": "4.7.1", "reason": "blocked"}),
        "complained": ("spamreport", {}),
        "unsubscribed": ("unsubscribe", {}),
    }.get(kind, (kind, {}))
    event = {
        "email": email,
        "timestamp": int(time.time()),
        "event": name,
        "sg_event_id": event_id,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "letterpress_batch": "lp-1-1-abc",
        **fields,
        **extra,
    }
    if issue is not None:
        event["letterpress_issue"] = str(issue)
    return event


def postmark_record(kind: str, email: str, issue: int | None, event_id: str) -> dict[str, Any]:
    metadata = {"letterpress-batch": "lp-1-1-abc"}
    if issue is not None:
        metadata["letterpress-issue"] = str(issue)
    common: dict[str, Any] = {
        "MessageID": str(uuid.uuid4()),
        "ServerID": 23,
        "MessageStream": "broadcast",
        "Tag": "issue",
        "Metadata": metadata,
    }
    if kind == "delivered":
        return {
            "RecordType": "Delivery",
            "Recipient": email,
            "DeliveredAt": "2026-01-02T10:00:00.1234567Z",
            "Details": "smtp;250 2.0.0 OK",
            **common,
        }
    if kind == "unsubscribed":
        return {
            "RecordType": "SubscriptionChange",
            "Recipient": email,
            "ChangedAt": f"2026-01-02T10:00:00.{event_id[:6]}Z",
            "Origin": "Recipient",
            "SuppressSending": True,
            "SuppressionReason": "ManualSuppression",
            **common,
        }
    bounce = {"bounced": "HardBounce", "soft_bounce": "SoftBounce", "complained": "SpamComplaint"}
    return {
        "RecordType": "SpamComplaint" if kind == "complained" else "Bounce",
        "ID": int(event_id[:12], 16),
        "Type": bounce[kind],
        "TypeCode": 1,
        "Email": email,
        "From": "newsletter@example.org",
        "BouncedAt": "2026-01-02T10:00:00Z",
        "Description": "The server was unable to deliver your message.",
        "Inactive": True,
        **common,
    }


@pytest.fixture
def hooks(svc: RunningService, sendgrid_key: ec.EllipticCurvePrivateKey) -> Hooks:
    return Hooks(svc, sendgrid_key)


# -- reading the database ---------------------------------------------------------------------


def subscriber(svc: RunningService, sid: int) -> Any:
    with svc.engine.connect() as conn:
        return conn.execute(sa.select(S.status, S.soft_bounces).where(S.id == sid)).one()


def delivery_feedback(svc: RunningService, issue: int, sid: int) -> str | None:
    with svc.engine.connect() as conn:
        return conn.scalar(sa.select(D.feedback).where(D.issue_id == issue, D.subscriber_id == sid))


def events(svc: RunningService, sid: int) -> list[tuple[str, str]]:
    with svc.engine.connect() as conn:
        return [
            (r.kind, r.detail)
            for r in conn.execute(
                sa.select(E.kind, E.detail).where(E.subscriber_id == sid).order_by(E.id)
            )
        ]


def kinds(svc: RunningService, sid: int) -> list[str]:
    return [kind for kind, _ in events(svc, sid) if kind not in ("signup", "confirmed")]


def state(svc: RunningService) -> dict[str, Any]:
    """Everything a webhook can change."""
    with svc.engine.connect() as conn:
        return {
            "subscribers": conn.execute(
                sa.select(S.id, S.status, S.soft_bounces, S.updated_at).order_by(S.id)
            ).all(),
            "deliveries": conn.execute(
                sa.select(D.issue_id, D.subscriber_id, D.feedback, D.feedback_at).order_by(
                    D.issue_id, D.subscriber_id
                )
            ).all(),
            "memberships": conn.scalar(sa.select(sa.func.count()).select_from(db.memberships)),
            "events": conn.scalar(sa.select(sa.func.count()).select_from(db.subscriber_events)),
            "provider_events": conn.scalar(
                sa.select(sa.func.count()).select_from(db.provider_events)
            ),
            "nonces": conn.scalar(sa.select(sa.func.count()).select_from(db.webhook_nonces)),
        }


def counts(response: requests.Response) -> tuple[int, int, int]:
    assert response.status_code == 200, response.text
    body = response.json()
    return body["applied"], body["duplicates"], body["ignored"]


APPLIED = (1, 0, 0)
DUPLICATE = (0, 1, 0)
IGNORED = (0, 0, 1)


# -- what each kind of event does ------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_kind_of_event_changes_the_subscriber_and_the_delivery(
    provider: str, hooks: Hooks, sent: Sent, svc: RunningService
) -> None:
    expected_status = {
        "delivered": "active",
        "bounced": "bounced",
        "soft_bounce": "active",
        "complained": "complained",
        "unsubscribed": "unsubscribed",
    }
    for kind in KINDS:
        assert counts(hooks.event(provider, kind, f"{provider}-{kind}", sent.issue)) == APPLIED
    for kind in KINDS:
        sid = sent.sid(f"{provider}-{kind}")
        assert subscriber(svc, sid).status == expected_status[kind], kind
        assert delivery_feedback(svc, sent.issue, sid) == kind
    bounced = events(svc, sent.sid(f"{provider}-bounced"))[-1]
    assert bounced[0] == "bounced" and bounced[1].startswith(f"{provider}: ")
    assert f"(issue {sent.issue})" in bounced[1]
    assert kinds(svc, sent.sid(f"{provider}-complained")) == ["complained"]
    assert events(svc, sent.sid(f"{provider}-unsubscribed"))[-1] == ("unsubscribed", provider)
    assert kinds(svc, sent.sid(f"{provider}-soft_bounce")) == ["soft-bounce"]
    assert subscriber(svc, sent.sid(f"{provider}-soft_bounce")).soft_bounces == 1
    assert kinds(svc, sent.sid(f"{provider}-delivered")) == []  # delivery is no event


@pytest.mark.parametrize("provider", PROVIDERS)
def test_soft_bounces_count_once_per_message_and_bounce_at_the_limit(
    provider: str, hooks: Hooks, sent: Sent, svc: RunningService
) -> None:
    name = f"{provider}-soft"
    sid = sent.sid(name)
    assert counts(hooks.event(provider, "soft_bounce", name, sent.issue)) == APPLIED
    # The provider's next attempt at the same message bounces too: still one.
    assert counts(hooks.event(provider, "soft_bounce", name, sent.issue)) == APPLIED
    assert subscriber(svc, sid) == ("active", 1)
    assert delivery_feedback(svc, sent.issue, sid) == "soft_bounce"
    # Two more messages (sign-up mail: no issue) bounce softly: three in a row.
    assert counts(hooks.event(provider, "soft_bounce", name)) == APPLIED
    assert subscriber(svc, sid) == ("active", 2)
    assert counts(hooks.event(provider, "soft_bounce", name)) == APPLIED
    assert subscriber(svc, sid) == ("bounced", 3)
    assert kinds(svc, sid) == ["soft-bounce", "soft-bounce", "soft-bounce", "bounced"]
    assert events(svc, sid)[-1][1] == f"{provider}: 3 soft bounces in a row"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_delivery_ends_a_run_of_soft_bounces(
    provider: str, hooks: Hooks, sent: Sent, svc: RunningService
) -> None:
    name = f"{provider}-reset"
    sid = sent.sid(name)
    for _ in range(2):
        assert counts(hooks.event(provider, "soft_bounce", name)) == APPLIED
    assert subscriber(svc, sid) == ("active", 2)
    assert counts(hooks.event(provider, "delivered", name, sent.issue)) == APPLIED
    assert subscriber(svc, sid) == ("active", 0)
    assert delivery_feedback(svc, sent.issue, sid) == "delivered"
    assert counts(hooks.event(provider, "soft_bounce", name)) == APPLIED
    assert subscriber(svc, sid) == ("active", 1)  # the count started again


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_late_weaker_report_never_hides_a_stronger_one(
    provider: str, hooks: Hooks, sent: Sent, svc: RunningService
) -> None:
    name = f"{provider}-late"
    sid = sent.sid(name)
    assert counts(hooks.event(provider, "complained", name, sent.issue)) == APPLIED
    assert counts(hooks.event(provider, "delivered", name, sent.issue)) == APPLIED
    assert counts(hooks.event(provider, "bounced", name, sent.issue)) == APPLIED
    assert delivery_feedback(svc, sent.issue, sid) == "complained"
    assert subscriber(svc, sid).status == "complained"  # a bounce does not soften it


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_same_event_delivered_twice_applies_once(
    provider: str, hooks: Hooks, sent: Sent, svc: RunningService
) -> None:
    name = f"{provider}-twice"
    sid = sent.sid(name)
    event_id = uuid.uuid4().hex
    assert counts(hooks.event(provider, "soft_bounce", name, event_id=event_id)) == APPLIED
    before = state(svc)
    # A retry: the same event (for Mailgun in a newly signed request).
    assert counts(hooks.event(provider, "soft_bounce", name, event_id=event_id)) == DUPLICATE
    after = state(svc)
    assert subscriber(svc, sid) == ("active", 1)
    assert kinds(svc, sid) == ["soft-bounce"]
    assert after["provider_events"] == before["provider_events"]
    assert after["subscribers"] == before["subscribers"]


# -- what each provider says in its own words ----------------------------------------------


def test_sendgrid_batches_map_each_event(hooks: Hooks, sent: Sent, svc: RunningService) -> None:
    def ev(kind: str, name: str, **extra: Any) -> dict[str, Any]:
        return sendgrid_event(kind, address(name), sent.issue, uuid.uuid4().hex, **extra)

    repeated = ev("delivered", "sg-batch-delivered")
    batch = [
        repeated,
        repeated,  # the same event twice in one batch
        ev("processed", "sg-batch-delivered"),
        ev("deferred", "sg-batch-delivered", response="450 try later", attempt="1"),
        ev("open", "sg-batch-delivered"),
        ev("click", "sg-batch-delivered", url="https://example.org/"),
        ev("soft_bounce", "sg-batch-blocked"),
        ev("dropped", "sg-batch-dropped", reason="Bounced Address"),
        ev("dropped", "sg-batch-dropped-other", reason="Unsubscribed Address"),
        ev("group_unsubscribe", "sg-batch-group", asm_group_id=12),
        ev("delivered", "nobody-we-know"),
    ]
    assert counts(hooks.sendgrid(batch)) == (4, 1, 6)
    ids = {name: sent.sid(name) for name in ROSTER if name.startswith("sg-batch-")}
    assert delivery_feedback(svc, sent.issue, ids["sg-batch-delivered"]) == "delivered"
    assert subscriber(svc, ids["sg-batch-blocked"]) == ("active", 1)
    assert delivery_feedback(svc, sent.issue, ids["sg-batch-blocked"]) == "soft_bounce"
    assert subscriber(svc, ids["sg-batch-dropped"]).status == "bounced"
    assert subscriber(svc, ids["sg-batch-dropped-other"]).status == "active"
    assert delivery_feedback(svc, sent.issue, ids["sg-batch-dropped-other"]) is None
    assert subscriber(svc, ids["sg-batch-group"]).status == "unsubscribed"


def test_sendgrid_finds_the_subscriber_by_id_when_the_address_agrees(
    hooks: Hooks, sent: Sent, svc: RunningService
) -> None:
    sid = sent.sid("sg-by-id")
    other = sent.sid("sg-forged")
    spelled = address("sg-by-id").upper()
    event = sendgrid_event("complained", spelled, sent.issue, uuid.uuid4().hex, subscriber=str(sid))
    assert counts(hooks.sendgrid([event])) == APPLIED
    assert subscriber(svc, sid).status == "complained"
    # An id that names someone else (an erased subscriber's id, reused) loses to the address.
    event = sendgrid_event(
        "delivered", address("sg-by-id"), sent.issue, uuid.uuid4().hex, subscriber=str(other)
    )
    assert counts(hooks.sendgrid([event])) == APPLIED
    assert delivery_feedback(svc, sent.issue, other) is None
    assert delivery_feedback(svc, sent.issue, sid) == "complained"


def test_postmark_records_map_each_type(hooks: Hooks, sent: Sent, svc: RunningService) -> None:
    change = postmark_record("unsubscribed", address("pm-change"), sent.issue, "a1b2c3")
    assert counts(hooks.postmark(change)) == APPLIED
    assert subscriber(svc, sent.sid("pm-change")).status == "unsubscribed"
    reactivated = {**change, "SuppressSending": False, "ChangedAt": "2026-01-03T00:00:00Z"}
    assert counts(hooks.postmark(reactivated)) == IGNORED
    assert subscriber(svc, sent.sid("pm-change")).status == "unsubscribed"

    change_bounce = postmark_record("unsubscribed", address("pm-change-bounce"), None, "d4e5f6")
    change_bounce["SuppressionReason"] = "HardBounce"
    assert counts(hooks.postmark(change_bounce)) == APPLIED
    assert subscriber(svc, sent.sid("pm-change-bounce")).status == "bounced"

    transient = postmark_record("soft_bounce", address("pm-transient"), sent.issue, "0a0b0c0d0e0f")
    transient["Type"] = "Transient"
    assert counts(hooks.postmark(transient)) == APPLIED
    assert subscriber(svc, sent.sid("pm-transient")) == ("active", 1)

    bad = postmark_record("bounced", address("pm-bad-address"), sent.issue, "0f0e0d0c0b0a")
    bad["Type"] = "BadEmailAddress"
    assert counts(hooks.postmark(bad)) == APPLIED
    assert subscriber(svc, sent.sid("pm-bad-address")).status == "bounced"

    auto = postmark_record("bounced", address("pm-transient"), sent.issue, "aaaaaaaaaaaa")
    auto["Type"] = "AutoResponder"
    assert counts(hooks.postmark(auto)) == IGNORED
    opened = {"RecordType": "Open", "MessageID": str(uuid.uuid4()), "Recipient": "x@example.com"}
    assert counts(hooks.postmark(opened)) == IGNORED

    # A Delivery has no ID: its message and time identify it.
    delivered = postmark_record("delivered", address("pm-no-id"), sent.issue, "unused")
    assert counts(hooks.postmark(delivered)) == APPLIED
    assert counts(hooks.postmark(delivered)) == DUPLICATE
    assert delivery_feedback(svc, sent.issue, sent.sid("pm-no-id")) == "delivered"


def test_mailgun_suppression_reasons_and_events_that_change_nothing(
    hooks: Hooks, sent: Sent, svc: RunningService
) -> None:
    sid = sent.sid("mg-suppressed")
    refused = mailgun_event("bounced", address("mg-suppressed"), sent.issue, uuid.uuid4().hex)
    refused["reason"] = "suppress-complaint"  # Mailgun holds a complaint about the address
    assert counts(hooks.mailgun(refused)) == APPLIED
    assert subscriber(svc, sid).status == "complained"
    retried = mailgun_event("bounced", address("mg-given-up"), None, uuid.uuid4().hex)
    retried["reason"] = "old"  # still undelivered when Mailgun stopped retrying
    assert counts(hooks.mailgun(retried)) == APPLIED
    assert subscriber(svc, sent.sid("mg-given-up")) == ("active", 1)

    name = "mg-ignored"
    before = state(svc)
    opened = {**mailgun_event("delivered", address(name), sent.issue, "o1"), "event": "opened"}
    assert counts(hooks.mailgun(opened)) == IGNORED
    unknown_issue = mailgun_event("bounced", address(name), 999_999, uuid.uuid4().hex)
    assert counts(hooks.mailgun(unknown_issue)) == IGNORED
    not_an_issue = mailgun_event("bounced", address(name), None, uuid.uuid4().hex)
    not_an_issue["user-variables"]["letterpress-issue"] = "draft-7"
    assert counts(hooks.mailgun(not_an_issue)) == IGNORED
    stranger = mailgun_event("bounced", "stranger@example.net", sent.issue, uuid.uuid4().hex)
    assert counts(hooks.mailgun(stranger)) == IGNORED
    invalid = mailgun_event("bounced", "not an address", None, uuid.uuid4().hex)
    assert counts(hooks.mailgun(invalid)) == IGNORED
    webhook = mailgun_event("bounced", address(name), sent.issue, uuid.uuid4().hex)
    webhook["reason"] = "webhook"  # a webhook that failed, not a message
    assert counts(hooks.mailgun(webhook)) == IGNORED
    after = state(svc)
    assert after["nonces"] == before["nonces"] + 6  # each signature used once
    assert {k: v for k, v in after.items() if k != "nonces"} == {
        k: v for k, v in before.items() if k != "nonces"
    }


# -- refused requests change nothing -------------------------------------------------------


def refused(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    return detail


def test_mailgun_refuses_forged_unsigned_stale_replayed_and_malformed_requests(
    hooks: Hooks, sent: Sent, svc: RunningService
) -> None:
    bounce = mailgun_event("bounced", address("mg-forged"), sent.issue, uuid.uuid4().hex)
    before = state(svc)
    refused(hooks.mailgun(bounce, key="not-the-signing-key"), 403)
    refused(hooks.raw("mailgun", json.dumps({"event-data": bounce}).encode()), 401)
    unsigned = {"signature": {"timestamp": str(int(time.time()))}, "event-data": bounce}
    refused(hooks.raw("mailgun", json.dumps(unsigned).encode()), 401)
    assert "too old" in refused(hooks.mailgun(bounce, timestamp=int(time.time()) - 3600), 403)
    refused(hooks.mailgun(bounce, timestamp=int(time.time()) + 3600), 403)
    refused(hooks.raw("mailgun", b'{"signature": {"timestamp": '), 400)
    refused(hooks.raw("mailgun", b"\xff\xfe not even text"), 400)
    refused(hooks.raw("mailgun", b"[1, 2, 3]"), 401)
    refused(hooks.mailgun(["event-data", "is", "a", "list"]), 400)
    refused(hooks.mailgun({**bounce, "recipient": None}), 400)
    refused(hooks.mailgun({k: v for k, v in bounce.items() if k != "id"}), 400)
    assert state(svc) == before

    # A captured request sent again: refused, even with other events inside.
    token = secrets.token_hex(25)
    delivered = mailgun_event("delivered", address("mg-replay"), sent.issue, uuid.uuid4().hex)
    assert counts(hooks.mailgun(delivered, token=token)) == APPLIED
    before = state(svc)
    bounce = mailgun_event("bounced", address("mg-replay"), sent.issue, uuid.uuid4().hex)
    assert "used before" in refused(hooks.mailgun(bounce, token=token), 403)
    assert state(svc) == before
    assert subscriber(svc, sent.sid("mg-replay")).status == "active"


def test_sendgrid_refuses_forged_unsigned_stale_and_malformed_requests(
    hooks: Hooks, sent: Sent, svc: RunningService
) -> None:
    bounce = [sendgrid_event("bounced", address("sg-forged"), sent.issue, uuid.uuid4().hex)]
    before = state(svc)
    refused(hooks.sendgrid(bounce, key=ec.generate_private_key(ec.SECP256R1())), 403)
    refused(hooks.raw("sendgrid", json.dumps(bounce).encode()), 401)
    signed = hooks.sendgrid(bounce, timestamp=int(time.time()) - 3600)
    assert "too old" in refused(signed, 403)
    # Signed, then changed on the way: the signature covers the raw body.
    body = json.dumps(bounce).encode()
    stamp = str(int(time.time()))
    signature = hooks.sendgrid_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    tampered = body.replace(b"bounce", b"delivered", 1)
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }
    refused(hooks.raw("sendgrid", tampered, headers), 403)
    headers["X-Twilio-Email-Event-Webhook-Signature"] = "not base64 at all!"
    refused(hooks.raw("sendgrid", body, headers), 403)
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = "yesterday"
    refused(hooks.raw("sendgrid", body, headers), 403)
    refused(hooks.sendgrid(None, body=b"[{"), 400)
    refused(hooks.sendgrid({"event": "bounce"}), 400)  # an object, not an array
    refused(hooks.sendgrid([*bounce, "not an object"]), 400)
    refused(hooks.sendgrid([*bounce, {"email": address("sg-forged")}]), 400)  # no event
    no_id = {k: v for k, v in bounce[0].items() if k != "sg_event_id"}
    refused(hooks.sendgrid([no_id]), 400)
    assert state(svc) == before
    assert subscriber(svc, sent.sid("sg-forged")).status == "active"


def test_postmark_refuses_requests_without_the_credentials_and_malformed_ones(
    hooks: Hooks, sent: Sent, svc: RunningService
) -> None:
    bounce = postmark_record("bounced", address("pm-forged"), sent.issue, uuid.uuid4().hex)
    before = state(svc)
    answer = requests.post(f"{svc.url}/webhooks/postmark", json=bounce, timeout=10)
    refused(answer, 401)
    assert answer.headers["www-authenticate"].startswith("Basic")
    refused(hooks.postmark(bounce, auth=(POSTMARK_USER, "wrong")), 401)
    refused(hooks.postmark(bounce, auth=("someone", POSTMARK_PASSWORD)), 401)
    garbled = requests.post(
        f"{svc.url}/webhooks/postmark",
        json=bounce,
        headers={"authorization": "Basic ???"},
        timeout=10,
    )
    refused(garbled, 401)
    auth = (POSTMARK_USER, POSTMARK_PASSWORD)
    malformed = requests.post(f"{svc.url}/webhooks/postmark", data=b"{", auth=auth, timeout=10)
    refused(malformed, 400)
    refused(hooks.postmark([bounce]), 400)
    refused(hooks.postmark({k: v for k, v in bounce.items() if k != "RecordType"}), 400)
    refused(hooks.postmark({k: v for k, v in bounce.items() if k != "Email"}), 400)
    refused(hooks.postmark({"RecordType": "Delivery", "Recipient": address("pm-forged")}), 400)
    assert state(svc) == before
    assert subscriber(svc, sent.sid("pm-forged")).status == "active"


def test_nothing_sensitive_reaches_the_log(hooks: Hooks, sent: Sent, svc: RunningService) -> None:
    token = secrets.token_hex(25)
    bounce = mailgun_event("bounced", address("log-check"), sent.issue, uuid.uuid4().hex)
    assert counts(hooks.mailgun(bounce, token=token)) == APPLIED
    refused(hooks.mailgun(bounce, token=token), 403)
    refused(hooks.postmark({"RecordType": "Bounce"}, auth=(POSTMARK_USER, "a-wrong-password")), 401)
    log = svc.output_once("postmark webhook refused")
    assert "mailgun webhook refused (403)" in log
    for secret in (address("log-check"), token, "a-wrong-password", MAILGUN_SIGNING_KEY):
        assert secret not in log


# -- a running send ---------------------------------------------------------------------------


def test_an_address_that_bounces_during_a_send_is_skipped(
    hooks: Hooks, sent: Sent, svc: RunningService
) -> None:
    rt = sent.runtime
    first, gone = sent.sid("skip-first"), sent.sid("skip-bounced")
    issue = issues.create(rt.engine, subject="Second", audience=("later",), articles=ARTICLES)
    issues.schedule(rt.engine, issue, None)
    assert issues.claim_due(rt.engine, timedelta(hours=6)) == [issue]
    batches = prepare(rt.engine, rt.settings, rt.catalog(), issue, 1)
    with rt.engine.connect() as conn:
        ranges = dict(
            conn.execute(
                sa.select(db.batches.c.first_id, db.batches.c.id).where(
                    db.batches.c.issue_id == issue
                )
            ).all()
        )
    assert sorted(batches) == sorted(ranges.values()) and set(ranges) == {first, gone}
    assert rt.sender.send_batch(ranges[first]).status == "sent"
    # The first issue's message to the other address bounces meanwhile.
    assert counts(hooks.event("mailgun", "bounced", "skip-bounced", sent.issue)) == APPLIED
    rt.sender.send_batch(ranges[gone])
    with svc.engine.connect() as conn:
        log = {
            r.subscriber_id: (r.status, r.reason)
            for r in conn.execute(
                sa.select(D.subscriber_id, D.status, D.reason).where(D.issue_id == issue)
            )
        }
    assert log == {first: ("sent", None), gone: ("skipped", "bounced")}
    outbox = Path(svc.settings.outbox_dir)
    written = {p.name for p in outbox.rglob("*.eml") if p.parent.name == f"issue-{issue}"}
    assert written == {f"{first}.eml"}
    assert issues.get(rt.engine, issue).status == "sent"


# -- documentation and configuration -------------------------------------------------------


def test_the_webhooks_are_in_the_openapi_document(svc: RunningService) -> None:
    spec = requests.get(f"{svc.url}/openapi.json", timeout=10).json()
    for provider in PROVIDERS:
        operation = spec["paths"][f"/webhooks/{provider}"]["post"]
        assert operation["tags"] == ["webhooks"]
        assert operation["summary"] and operation["description"]
        assert {"200", "400", "401", "403", "404"} <= set(operation["responses"])
        assert "application/json" in operation["requestBody"]["content"]
    assert spec["components"]["securitySchemes"]["PostmarkWebhook"]["scheme"] == "basic"


def test_a_provider_without_its_secret_answers_404_and_a_bad_key_503(
    sqlite_url: str, tmp_path: Path, sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    blank = {"MAILGUN_WEBHOOK_SIGNING_KEY": "", "POSTMARK_WEBHOOK_PASSWORD": ""}
    settings = {"sendgrid_webhook_public_key": "bm90IGEga2V5"}  # base64, but no key
    with running_service(tmp_path, sqlite_url, None, settings=settings, env=blank) as bare:
        for provider, setting in [
            ("mailgun", "MAILGUN_WEBHOOK_SIGNING_KEY"),
            ("postmark", "POSTMARK_WEBHOOK_PASSWORD"),
        ]:
            answer = requests.post(f"{bare.url}/webhooks/{provider}", json={}, timeout=10)
            assert answer.status_code == 404
            assert setting in answer.json()["detail"]
        hooks = Hooks(bare, sendgrid_key)
        answer = hooks.sendgrid([sendgrid_event("delivered", "a@example.com", None, "x")])
        assert answer.status_code == 503
        assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in answer.json()["detail"]
        assert "bm90IGEga2V5" not in bare.output()
        unset = bare.settings.model_copy(update={"sendgrid_webhook_public_key": ""})
        assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in (webhooks.not_configured(unset, "sendgrid") or "")
