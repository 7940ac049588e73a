"""A stand-in for Mailgun, SendGrid and Postmark: a real HTTP server on loopback.

It speaks the parts of their APIs that Letterpress uses, as documented by each:

    POST /v3/{domain}/messages      Mailgun, multipart/form-data (or urlencoded), Basic auth
    GET  /v3/{domain}/events        Mailgun's event log (``accepted`` events, paging.next)
    POST /v3/mail/send              SendGrid v3, JSON, Bearer auth, 202 + X-Message-Id
    POST /email/batch               Postmark batch, JSON, X-Postmark-Server-Token
    GET  /messages/outbound         Postmark's message search (count, offset, metadata_*)

and records every recipient it accepts: a count per address (in lower case, so a
second copy to one address shows as a duplicate), and, with ``keep_messages``, the
message each address received after the provider's own personalisation (Mailgun
``%recipient.x%``, SendGrid ``substitutions``, Postmark as sent). Without it, memory
grows by about one dictionary entry per distinct address.

A request with an ``Idempotency-Key`` that was already answered with success gets the
same answer again and changes nothing. Faults make it misbehave the way the real
services do (see ``Fault``). Control endpoints, for tests and for a person with curl:

    GET  /_double/health   /_double/stats   /_double/recipients   /_double/messages
    POST /_double/reset    /_double/faults  (JSON: {"faults": [...], "seed": 1})

From Python: ``with DoubleServer() as double: ... double.url ... double.stats()``.
From a shell: ``python -m pipeline.sending.providers.double --port 8025``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import math
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import Message as MimeMessage
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl

PROVIDERS = ("mailgun", "sendgrid", "postmark")
KINDS = ("throttle", "error", "slow", "drop", "reject")

MAILGUN_LIMIT = 1000
MAILGUN_OPTIONS_LIMIT = 16 * 1024  # o:, h:, v: and t: fields together
SENDGRID_LIMIT = 1000
POSTMARK_LIMIT = 500
POSTMARK_SEARCH_WINDOW = 10_000

_MAILGUN_VAR = re.compile(r"%recipient\.([A-Za-z0-9_-]+)%")
_MAILGUN_SEND = re.compile(r"/v3/([^/]+)/messages")
_MAILGUN_EVENTS = re.compile(r"/v3/([^/]+)/events(?:/([A-Za-z0-9_=-]+))?")


@dataclass
class Fault:
    """One way to misbehave, on the send endpoints of ``provider`` (None: all three).

    ``kind``:
      throttle   ``status`` (429; Mailgun also used 420) with the provider's hint: Mailgun
                 "try again after N seconds" in the body, SendGrid ``X-RateLimit-Reset``
                 (epoch seconds), Postmark ``Retry-After``
      error      ``status`` (500, or 503, ...) with the provider's error body
      slow       answer ``delay`` seconds late (after recording)
      drop       record the recipients as accepted, then close the connection unanswered
      reject     the ``addresses`` are refused: Postmark answers ErrorCode 406 (inactive
                 recipient) for their messages; Mailgun and SendGrid accept the call and
                 drop them, as they do for suppressed addresses

    It applies to each request with probability ``rate``, at most ``count`` times (None:
    no limit); for ``reject``, per refused address."""

    kind: str
    provider: str | None = None
    rate: float = 1.0
    count: int | None = None
    retry_after: float = 1.0
    status: int | None = None  # default: 429 to throttle, 500 for an error
    delay: float = 1.0
    addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.provider is not None and self.provider not in PROVIDERS:
            raise ValueError(f"unknown provider {self.provider!r} (one of {', '.join(PROVIDERS)})")
        if not 0 <= self.rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if self.count is not None and self.count < 0:
            raise ValueError("count must not be negative")
        if self.kind == "error":
            self.status = self.status or 500
            if not 500 <= self.status < 600:
                raise ValueError("an error fault's status must be 5xx")
        if self.kind == "throttle":
            self.status = self.status or 429
            if self.status not in (420, 429):
                raise ValueError("a throttle fault's status must be 429 or 420")
        self.addresses = tuple(a.lower() for a in self.addresses)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault field {sorted(unknown)[0]!r}")
        values = dict(data)
        if "addresses" in values:
            values["addresses"] = tuple(values["addresses"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "addresses": list(self.addresses)}

    @property
    def code(self) -> int:
        """The HTTP status a throttle or error fault answers with."""
        return self.status or 500

    def roll(self, rng: random.Random) -> bool:
        """Whether it applies this time (spending one of ``count`` if so)."""
        if self.count is not None and self.count <= 0:
            return False
        if self.rate < 1 and rng.random() >= self.rate:
            return False
        if self.count is not None:
            self.count -= 1
        return True


@dataclass(frozen=True)
class KeptMessage:
    """What one address received, after the provider's personalisation."""

    provider: str
    sender: str
    to: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]


@dataclass(frozen=True)
class CapturedRequest:
    """One request as it arrived (``keep_requests``)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        """A header's value, whatever the case of its name ("" when absent)."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), "")

    def form(self) -> list[tuple[str, str]]:
        """The form fields of a Mailgun call, in order."""
        return parse_form(self.header("Content-Type"), self.body)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    drop: bool = False

    @classmethod
    def of(cls, status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> _Answer:
        return cls(status, json.dumps(data).encode(), headers=headers or [])


@dataclass
class _MailgunCall:
    at: float
    domain: str
    message_id: str
    sender: str
    subject: str
    tags: list[str]
    variables: dict[str, str]
    addresses: list[str]


@dataclass
class _PostmarkCall:
    at: float
    first_seq: int  # message i has the id made from first_seq + i
    sender: list[str]
    addresses: list[tuple[str, ...]]
    metadata: list[dict[str, str]]
    tags: list[str]
    streams: list[str]
    subjects: list[str]  # only with keep_messages
    positions: list[int]  # index in the call (refused messages have none)


class DoubleState:
    """Everything the server remembers; every change happens under ``lock``."""

    def __init__(
        self,
        *,
        mailgun_key: str,
        sendgrid_key: str,
        postmark_token: str,
        keep_messages: bool = False,
        keep_requests: bool = False,
        idempotency: bool = True,
        seed: int | None = None,
    ) -> None:
        self.mailgun_key = mailgun_key
        self.sendgrid_key = sendgrid_key
        self.postmark_token = postmark_token
        self.keep_messages = keep_messages
        self.keep_requests = keep_requests
        self.idempotency = idempotency
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.faults: list[Fault] = []
        self.rng = random.Random(seed)
        self._id_prefix = random.getrandbits(64)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.counts: dict[str, int] = {}
            self.accepted = 0
            self.duplicates = 0
            self.requests = 0
            self.statuses: Counter[str] = Counter()
            self.by_provider: Counter[str] = Counter()
            self.suppressed = 0
            self.replayed = 0
            self.dropped = 0
            self.seq = 0
            self.mailgun_calls: list[_MailgunCall] = []
            self.postmark_calls: list[_PostmarkCall] = []
            self.answers: dict[tuple[str, str], tuple[int, list[tuple[str, str]], bytes]] = {}
            self.messages: dict[str, list[KeptMessage]] = {}
            self.captured: list[CapturedRequest] = []
            self.faults = []

    # Faults

    def set_faults(self, faults: Iterable[Fault], seed: int | None = None) -> None:
        with self.lock:
            self.faults = list(faults)
            if seed is not None:
                self.rng = random.Random(seed)

    def pick(self, provider: str) -> tuple[Fault | None, float]:
        """The fault that decides this request (throttle, error or drop), and any delay."""
        delay = 0.0
        with self.lock:
            for fault in self.faults:
                if fault.provider not in (None, provider) or fault.kind == "reject":
                    continue
                if fault.roll(self.rng):
                    if fault.kind == "slow":
                        delay += fault.delay
                    else:
                        return fault, delay
        return None, delay

    def refused(self, provider: str, address: str) -> bool:
        with self.lock:
            for fault in self.faults:
                if (
                    fault.kind == "reject"
                    and fault.provider in (None, provider)
                    and address in fault.addresses
                    and fault.roll(self.rng)
                ):
                    self.suppressed += 1
                    return True
        return False

    # Recording (callers hold the lock)

    def _record(self, provider: str, address: str) -> str:
        count = self.counts.get(address)
        if count is None:
            self.counts[address] = 1
        else:
            self.counts[address] = count + 1
            self.duplicates += 1
        self.accepted += 1
        self.by_provider[provider] += 1
        return address

    def _keep(self, address: str, message: KeptMessage) -> None:
        self.messages.setdefault(address, []).append(message)

    def next_ids(self, n: int) -> int:
        with self.lock:
            first = self.seq
            self.seq += n
            return first

    def message_uuid(self, seq: int) -> str:
        return str(uuid.UUID(int=(self._id_prefix << 64) | seq))

    # Idempotency

    def replay(self, provider: str, key: str) -> _Answer | None:
        if not (key and self.idempotency):
            return None
        with self.lock:
            stored = self.answers.get((provider, key))
            if stored is None:
                return None
            self.replayed += 1
        status, headers, body = stored
        return _Answer(status, zlib.decompress(body), headers=list(headers))

    def remember(self, provider: str, key: str, answer: _Answer) -> None:
        if key and self.idempotency and 200 <= answer.status < 300:
            packed = (answer.status, list(answer.headers), zlib.compress(answer.body, 1))
            with self.lock:
                self.answers[(provider, key)] = packed

    # Reports

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "accepted": self.accepted,
                "unique": len(self.counts),
                "duplicates": self.duplicates,
                "requests": self.requests,
                "statuses": dict(self.statuses),
                "providers": dict(self.by_provider),
                "suppressed": self.suppressed,
                "replayed": self.replayed,
                "dropped": self.dropped,
            }

    def recipients(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)


# ---------------------------------------------------------------------------
# Parsing


def parse_form(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """Form fields, in order, from ``multipart/form-data`` or urlencoded bodies."""
    if content_type.lower().startswith("application/x-www-form-urlencoded"):
        return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError(f"unsupported Content-Type {content_type or '(none)'}")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    parsed = BytesParser(policy=compat32).parsebytes(head + body)
    if not parsed.is_multipart():
        raise ValueError("the multipart body has no parts (is the boundary right?)")
    fields = []
    for part in cast(list[MimeMessage], parsed.get_payload()):
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("a form part has no name")
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        charset = part.get_content_charset() or "utf-8"
        fields.append((name, raw.decode(charset, "replace")))
    return fields


def _addresses(value: str) -> list[tuple[str, str]]:
    return [(name, addr) for name, addr in getaddresses([value]) if addr]


def _valid(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(local and at and "." in domain and " " not in address)


# ---------------------------------------------------------------------------
# The three providers


class _Api:
    """The provider endpoints; answers are built here and written by the handler.
    Header names are in lower case."""

    def __init__(self, state: DoubleState) -> None:
        self.state = state

    # Mailgun

    def mailgun_send(self, domain: str, headers: Mapping[str, str], body: bytes) -> _Answer:
        state = self.state
        if not _basic_auth_ok(headers.get("authorization", ""), "api", state.mailgun_key):
            return _Answer(401, b"Forbidden", content_type="text/plain")
        key = headers.get("idempotency-key", "")
        replayed = state.replay("mailgun", key)
        if replayed is not None:
            return replayed
        fault, delay = state.pick("mailgun")
        if fault is not None and fault.kind == "throttle":
            return _Answer.of(
                fault.code,
                {
                    "message": f"Domain {domain} is not allowed to send: account-requests-per-sec"
                    f" limit exceeded, try again after {fault.retry_after:g} seconds"
                },
            )
        if fault is not None and fault.kind == "error":
            return _Answer.of(fault.code, {"message": "Internal Server Error"})

        try:
            form = parse_form(headers.get("content-type", ""), body)
        except ValueError as exc:
            return _Answer.of(400, {"message": f"cannot read the form: {exc}"})
        values: dict[str, list[str]] = {}
        for name, value in form:
            values.setdefault(name, []).append(value)
        for required in ("from", "to", "subject"):
            if not values.get(required):
                return _Answer.of(400, {"message": f"{required} parameter is missing"})
        if not any(values.get(p) for p in ("text", "html", "amp-html", "template")):
            return _Answer.of(
                400,
                {
                    "message": "Need at least one of 'text', 'html', 'amp-html' or 'template'"
                    " parameters specified"
                },
            )
        options = sum(len(n) + len(v) for n, v in form if n[:2] in ("o:", "h:", "v:", "t:"))
        if options > MAILGUN_OPTIONS_LIMIT:
            return _Answer.of(
                400,
                {
                    "message": "Send options (parameters starting with o:, h:, or v:) are"
                    " limited to 16KB total"
                },
            )
        recipients: dict[str, str] = {}  # lower-case address -> as given
        for value in values["to"]:
            for _, address in _addresses(value):
                if not _valid(address):
                    return _Answer.of(
                        400,
                        {
                            "message": "to parameter is not a valid address."
                            " please check documentation"
                        },
                    )
                recipients.setdefault(address.lower(), address)
        if len(recipients) > MAILGUN_LIMIT:
            return _Answer.of(400, {"message": "Too many recipients: 1000 is the limit"})
        variables_json = values.get("recipient-variables", ["{}"])[-1]
        try:
            variables = json.loads(variables_json)
            if not isinstance(variables, dict):
                raise ValueError
        except ValueError:
            return _Answer.of(400, {"message": "recipient-variables parameter is not a valid JSON"})

        message_id = (
            f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime())}."
            f"{secrets.token_hex(8).upper()}@{domain}>"
        )
        user_variables = {n[2:]: v[-1] for n, v in values.items() if n.startswith("v:")}
        kept: list[tuple[str, KeptMessage]] = []
        if state.keep_messages:
            lowered = {str(k).lower(): v for k, v in variables.items()}
            for address, given in recipients.items():
                mine = variables.get(given, lowered.get(address, {}))
                kept.append((address, _mailgun_message(values, given, mine)))
        taken = [a for a in recipients if not (state.faults and state.refused("mailgun", a))]
        with state.lock:
            addresses = [state._record("mailgun", a) for a in taken]
            taken_set = set(taken)
            for address, message in kept:
                if address in taken_set:
                    state._keep(address, message)
            state.mailgun_calls.append(
                _MailgunCall(
                    at=time.time(),
                    domain=domain,
                    message_id=message_id,
                    sender=values["from"][-1],
                    subject=values["subject"][-1],
                    tags=values.get("o:tag", []),
                    variables=user_variables,
                    addresses=addresses,
                )
            )
        answer = _Answer.of(200, {"id": message_id, "message": "Queued. Thank you."})
        return self._finish("mailgun", key, answer, fault, delay)

    def mailgun_events(
        self, domain: str, token: str | None, headers: Mapping[str, str], query: str, base: str
    ) -> _Answer:
        state = self.state
        if not _basic_auth_ok(headers.get("authorization", ""), "api", state.mailgun_key):
            return _Answer(401, b"Forbidden", content_type="text/plain")
        if token:
            try:
                params = json.loads(base64.urlsafe_b64decode(token.encode()))
            except (ValueError, binascii.Error):
                return _Answer.of(400, {"message": "invalid page token"})
        else:
            params = dict(parse_qsl(query))
            params["offset"] = 0
        try:
            limit = int(params.get("limit", 100))
            begin = _epoch(params.get("begin"))
            end = _epoch(params.get("end"))
            offset = int(params.get("offset", 0))
        except ValueError as exc:
            return _Answer.of(400, {"message": str(exc)})
        if not 1 <= limit <= 300:
            return _Answer.of(400, {"message": "limit must be between 1 and 300"})
        ascending = params.get("ascending", "no") == "yes"
        kind = params.get("event")
        recipient = str(params.get("recipient", "")).lower()
        with state.lock:
            calls = [c for c in state.mailgun_calls if c.domain == domain]
        if not ascending:
            calls.reverse()
        items: list[dict[str, Any]] = []
        position = 0
        if kind in (None, "accepted"):
            for call in calls:
                if (begin is not None and call.at < begin) or (end is not None and call.at > end):
                    continue
                addresses = call.addresses if ascending else list(reversed(call.addresses))
                for index, address in enumerate(addresses):
                    if recipient and address != recipient:
                        continue
                    if offset <= position < offset + limit:
                        items.append(_mailgun_event(call, index, address))
                    position += 1
                if position >= offset + limit:
                    break

        def page(at: int) -> str:
            data = {k: v for k, v in params.items() if k != "offset"}
            data["offset"] = max(at, 0)
            encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
            return f"{base}/v3/{domain}/events/{encoded}"

        paging = {
            "first": page(0),
            "next": page(offset + limit),
            "previous": page(offset - limit),
            "last": page(offset + limit),
        }
        return _Answer.of(200, {"items": items, "paging": paging})

    # SendGrid

    def sendgrid_send(self, headers: Mapping[str, str], body: bytes) -> _Answer:
        state = self.state
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token, state.sendgrid_key):
            return _sendgrid_error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        key = headers.get("idempotency-key", "")
        replayed = state.replay("sendgrid", key)
        if replayed is not None:
            return replayed
        fault, delay = state.pick("sendgrid")
        if fault is not None and fault.kind == "throttle":
            reset = math.ceil(time.time() + fault.retry_after)
            return _Answer.of(
                fault.code,
                {"errors": [{"field": None, "message": "too many requests"}]},
                headers=[
                    ("X-RateLimit-Limit", "600"),
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Reset", str(reset)),
                ],
            )
        if fault is not None and fault.kind == "error":
            return _sendgrid_error(fault.code, "internal server error")
        try:
            mail = json.loads(body)
        except ValueError:
            return _sendgrid_error(400, "Bad Request", field=None)
        problem = _sendgrid_problem(mail)
        if problem is not None:
            return _sendgrid_error(400, problem[1], field=problem[0])

        personalizations = mail["personalizations"]
        groups: list[list[str]] = []
        for item in personalizations:
            unique: dict[str, None] = {}
            for kind in ("to", "cc", "bcc"):
                for entry in item.get(kind) or ():
                    unique[entry["email"].lower()] = None
            groups.append(list(unique))
        kept: list[tuple[str, KeptMessage]] = []
        if state.keep_messages:
            for item, group in zip(personalizations, groups, strict=True):
                message = _sendgrid_message(mail, item)
                kept += [(address, message) for address in group]
        refused = set()
        if state.faults:
            refused = {a for group in groups for a in group if state.refused("sendgrid", a)}
        with state.lock:
            for group in groups:
                for address in group:
                    if address not in refused:
                        state._record("sendgrid", address)
            for address, message in kept:
                if address not in refused:
                    state._keep(address, message)
        answer = _Answer(202, b"", headers=[("X-Message-Id", secrets.token_urlsafe(16)[:22])])
        return self._finish("sendgrid", key, answer, fault, delay)

    # Postmark

    def postmark_batch(self, headers: Mapping[str, str], body: bytes) -> _Answer:
        state = self.state
        if headers.get("x-postmark-server-token", "") != state.postmark_token:
            return _postmark_error(
                401,
                10,
                "The Server Token you provided in the X-Postmark-Server-Token request header"
                " was invalid. Please verify that you are using a valid token.",
            )
        key = headers.get("idempotency-key", "")
        replayed = state.replay("postmark", key)
        if replayed is not None:
            return replayed
        fault, delay = state.pick("postmark")
        if fault is not None and fault.kind == "throttle":
            return _Answer.of(
                fault.code,
                {"ErrorCode": 429, "Message": "Rate limit exceeded. Please retry later."},
                headers=[("Retry-After", f"{fault.retry_after:g}")],
            )
        if fault is not None and fault.kind == "error":
            return _postmark_error(fault.code, 0, "Internal server error")
        try:
            batch = json.loads(body)
        except ValueError:
            return _postmark_error(422, 402, "Received invalid JSON input.")
        if not isinstance(batch, list) or not batch:
            return _postmark_error(422, 300, "Invalid email request: expected a non-empty array")
        if len(batch) > POSTMARK_LIMIT:
            return _postmark_error(
                422, 300, f"Invalid email request: at most {POSTMARK_LIMIT} messages per batch"
            )

        first = state.next_ids(len(batch))
        submitted = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        results: list[dict[str, Any]] = []
        call = _PostmarkCall(time.time(), first, [], [], [], [], [], [], [])
        accepted: list[tuple[str, ...]] = []
        kept: list[tuple[str, KeptMessage]] = []
        for index, item in enumerate(batch):
            problem, recipients = _postmark_problem(item)
            if problem is not None:
                results.append({"ErrorCode": problem[0], "Message": problem[1]})
                continue
            refused = [a for a in recipients if state.faults and state.refused("postmark", a)]
            if refused:
                results.append(
                    {
                        "ErrorCode": 406,
                        "Message": "You tried to send to recipient(s) that have been marked as"
                        f" inactive. Found inactive addresses: {', '.join(refused)}. Inactive"
                        " recipients are ones that have generated a hard bounce, a spam"
                        " complaint, or a manual suppression.",
                    }
                )
                continue
            message_id = state.message_uuid(first + index)
            results.append(
                {
                    "ErrorCode": 0,
                    "Message": "OK",
                    "MessageID": message_id,
                    "SubmittedAt": submitted,
                    "To": item["To"],
                }
            )
            accepted.append(recipients)
            call.positions.append(index)
            call.addresses.append(recipients)
            _append_shared(call.metadata, item.get("Metadata") or {})
            _append_shared(call.tags, item.get("Tag") or "")
            _append_shared(call.streams, item.get("MessageStream") or "outbound")
            _append_shared(call.sender, item["From"])
            if state.keep_messages:
                call.subjects.append(item.get("Subject") or "")
                message = _postmark_message(item)
                kept += [(a, message) for a in recipients]
        with state.lock:
            for recipients in accepted:
                for address in recipients:
                    state._record("postmark", address)
            for address, message in kept:
                state._keep(address, message)
            if call.positions:
                state.postmark_calls.append(call)
        answer = _Answer.of(200, results)
        return self._finish("postmark", key, answer, fault, delay)

    def postmark_search(self, headers: Mapping[str, str], query: str) -> _Answer:
        state = self.state
        if headers.get("x-postmark-server-token", "") != state.postmark_token:
            return _postmark_error(401, 10, "The Server Token you provided was invalid.")
        params = dict(parse_qsl(query))
        try:
            count = int(params["count"])
            offset = int(params.get("offset", 0))
        except (KeyError, ValueError):
            return _postmark_error(422, 0, "The 'count' parameter is required (1 to 500).")
        if not 1 <= count <= 500 or offset < 0 or count + offset > POSTMARK_SEARCH_WINDOW:
            return _postmark_error(
                422, 0, "count must be 1 to 500, and count + offset at most 10000"
            )
        wanted = {k[9:]: v for k, v in params.items() if k.startswith("metadata_")}
        recipient = params.get("recipient", "").lower()
        tag = params.get("tag")
        stream = params.get("messagestream")
        with state.lock:
            calls = list(state.postmark_calls)
        matches: list[dict[str, Any]] = []
        total = 0
        for call in reversed(calls):  # newest first, as Postmark lists them
            for i in reversed(range(len(call.positions))):
                metadata = call.metadata[i]
                if any(metadata.get(k) != v for k, v in wanted.items()):
                    continue
                if recipient and recipient not in call.addresses[i]:
                    continue
                if (tag is not None and call.tags[i] != tag) or (
                    stream is not None and call.streams[i] != stream
                ):
                    continue
                if offset <= total < offset + count:
                    matches.append(_postmark_summary(state, call, i))
                total += 1
        return _Answer.of(200, {"TotalCount": total, "Messages": matches})

    # Shared

    def _finish(
        self, provider: str, key: str, answer: _Answer, fault: Fault | None, delay: float
    ) -> _Answer:
        self.state.remember(provider, key, answer)
        answer.delay = delay
        answer.drop = fault is not None and fault.kind == "drop"
        return answer


def _append_shared(values: list[Any], value: Any) -> None:
    """Append ``value``, or the previous item again when equal: one object per batch."""
    values.append(values[-1] if values and values[-1] == value else value)


def _basic_auth_ok(header: str, user: str, password: str) -> bool:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        return False
    return secrets.compare_digest(decoded, f"{user}:{password}")


def _epoch(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(str(value)).timestamp()
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"cannot read the time {value!r}") from None


def _mailgun_message(
    values: Mapping[str, list[str]], to: str, variables: Mapping[str, Any]
) -> KeptMessage:
    def fill(text: str) -> str:
        return _MAILGUN_VAR.sub(
            lambda m: str(variables[m.group(1)]) if m.group(1) in variables else m.group(0), text
        )

    headers = {n[2:]: fill(v[-1]) for n, v in values.items() if n.startswith("h:")}
    return KeptMessage(
        provider="mailgun",
        sender=values["from"][-1],
        to=to,
        subject=fill(values["subject"][-1]),
        text=fill(values.get("text", [""])[-1]),
        html=fill(values.get("html", [""])[-1]),
        headers=headers,
    )


def _mailgun_event(call: _MailgunCall, index: int, address: str) -> dict[str, Any]:
    return {
        "event": "accepted",
        "id": f"{call.message_id.strip('<>').split('@')[0]}-{index}",
        "timestamp": call.at,
        "log-level": "info",
        "method": "HTTP",
        "recipient": address,
        "recipient-domain": address.rpartition("@")[2],
        "tags": call.tags,
        "user-variables": call.variables,
        "flags": {"is-test-mode": False},
        "envelope": {"sender": parseaddr(call.sender)[1], "targets": address},
        "message": {
            "headers": {
                "message-id": call.message_id.strip("<>"),
                "from": call.sender,
                "to": address,
                "subject": call.subject,
            }
        },
    }


def _sendgrid_error(status: int, message: str, field: str | None = None) -> _Answer:
    return _Answer.of(status, {"errors": [{"message": message, "field": field, "help": None}]})


def _sendgrid_problem(mail: Any) -> tuple[str | None, str] | None:
    """The first thing SendGrid would refuse in this request, as (field, message)."""
    if not isinstance(mail, dict):
        return None, "Bad Request"
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return (
            "personalizations",
            "The personalizations field is required and must have at least one personalization.",
        )
    if len(personalizations) > SENDGRID_LIMIT:
        return "personalizations", "The personalizations field may have at most 1000 items."
    sender = mail.get("from")
    if not isinstance(sender, dict) or not _valid(str(sender.get("email", ""))):
        return "from.email", "The from object must be provided for every email send."
    content = mail.get("content")
    if not mail.get("template_id"):
        if not isinstance(content, list) or not content:
            return (
                "content",
                "Unless a valid template_id is provided, the content parameter is required.",
            )
        for index, part in enumerate(content):
            if not isinstance(part, dict) or not part.get("type") or not part.get("value"):
                return (
                    f"content.{index}",
                    "The content value must be a string at least one character in length.",
                )
        types = [part["type"] for part in content]
        if "text/plain" in types and types[0] != "text/plain":
            return "content", "If present, text/plain must be first, followed by text/html."
    categories = mail.get("categories", [])
    if not isinstance(categories, list) or len(categories) > 10:
        return "categories", "Too many categories: at most 10."
    for index, item in enumerate(personalizations):
        where = f"personalizations.{index}"
        if not isinstance(item, dict):
            return where, "Invalid type. Expected: object."
        if not mail.get("subject") and not item.get("subject") and not mail.get("template_id"):
            return (
                "subject",
                "The subject is required. You can get around this requirement if you use a"
                " template with a subject defined or if every personalization has a subject"
                " defined.",
            )
        to = item.get("to")
        if not isinstance(to, list) or not to:
            return (
                f"{where}.to",
                "The to array is required for all personalization objects, and must have at"
                " least one email object with a valid email address.",
            )
        seen: set[str] = set()
        for kind in ("to", "cc", "bcc"):
            for entry in item.get(kind) or ():
                email = str(entry.get("email", "")) if isinstance(entry, dict) else ""
                if not _valid(email):
                    return f"{where}.{kind}", "Does not contain a valid address."
                if email.lower() in seen:
                    return (
                        where,
                        "Each email address in the personalization block should be unique"
                        " between to, cc, and bcc. We found the first duplicate instance of"
                        f" [{email}] in the personalizations.{index}.{kind} field.",
                    )
                seen.add(email.lower())
        for name in ("substitutions", "custom_args", "headers"):
            values = item.get(name, {})
            if not isinstance(values, dict) or any(not isinstance(v, str) for v in values.values()):
                return f"{where}.{name}", "Invalid type. Expected: string, given: not a string."
    return None


def _sendgrid_message(mail: Mapping[str, Any], item: Mapping[str, Any]) -> KeptMessage:
    substitutions: Mapping[str, str] = item.get("substitutions") or {}

    def fill(text: str) -> str:
        for tag, value in substitutions.items():
            text = text.replace(tag, value)
        return text

    parts = {part["type"]: part["value"] for part in mail.get("content") or ()}
    sender = mail["from"]
    headers = {**(mail.get("headers") or {}), **(item.get("headers") or {})}
    return KeptMessage(
        provider="sendgrid",
        sender=f"{sender.get('name', '')} <{sender['email']}>".strip(),
        to=", ".join(entry["email"] for entry in item["to"]),
        subject=fill(item.get("subject") or mail.get("subject") or ""),
        text=fill(parts.get("text/plain", "")),
        html=fill(parts.get("text/html", "")),
        headers={name: fill(value) for name, value in headers.items()},
    )


def _postmark_error(status: int, code: int, message: str) -> _Answer:
    return _Answer.of(status, {"ErrorCode": code, "Message": message})


def _postmark_problem(item: Any) -> tuple[tuple[int, str] | None, tuple[str, ...]]:
    """(error code and message, or None) and the message's recipients in lower case."""
    if not isinstance(item, dict):
        return (300, "Invalid email request"), ()
    sender = parseaddr(str(item.get("From") or ""))[1]
    if not _valid(sender):
        return (300, f"Invalid 'From' address: '{item.get('From') or ''}'."), ()
    recipients: dict[str, None] = {}
    for kind in ("To", "Cc", "Bcc"):
        for _, address in _addresses(str(item.get(kind) or "")):
            if not _valid(address):
                return (300, f"Invalid '{kind}' address: '{address}'."), ()
            recipients[address.lower()] = None
    if not recipients:
        return (300, "Zero recipients specified"), ()
    if len(recipients) > 50:
        return (300, "Too many recipients: at most 50 per message"), ()
    if not item.get("TextBody") and not item.get("HtmlBody"):
        return (300, "Provide either email TextBody or HtmlBody or both."), ()
    headers = item.get("Headers") or []
    if not isinstance(headers, list) or any(
        not isinstance(h, dict) or not isinstance(h.get("Name"), str) for h in headers
    ):
        return (300, "Headers must be a list of {Name, Value} objects."), ()
    metadata = item.get("Metadata") or {}
    if not isinstance(metadata, dict) or len(metadata) > 10:
        return (300, "Metadata must be an object of at most 10 fields."), ()
    for name, value in metadata.items():
        if len(name) > 20 or not isinstance(value, str) or len(value) > 80:
            problem = f"Metadata field {name!r}: names up to 20, values up to 80 characters"
            return (300, problem), ()
    return None, tuple(recipients)


def _postmark_message(item: Mapping[str, Any]) -> KeptMessage:
    return KeptMessage(
        provider="postmark",
        sender=str(item["From"]),
        to=str(item["To"]),
        subject=str(item.get("Subject") or ""),
        text=str(item.get("TextBody") or ""),
        html=str(item.get("HtmlBody") or ""),
        headers={h["Name"]: str(h.get("Value", "")) for h in item.get("Headers") or ()},
    )


def _postmark_summary(state: DoubleState, call: _PostmarkCall, i: int) -> dict[str, Any]:
    received = datetime.fromtimestamp(call.at, UTC).isoformat().replace("+00:00", "Z")
    addresses = list(call.addresses[i])
    return {
        "MessageID": state.message_uuid(call.first_seq + call.positions[i]),
        "MessageStream": call.streams[i],
        "Tag": call.tags[i],
        "To": [{"Email": a, "Name": None} for a in addresses],
        "Cc": [],
        "Bcc": [],
        "Recipients": addresses,
        "ReceivedAt": received,
        "From": call.sender[i],
        "Subject": call.subjects[i] if call.subjects else "",
        "Attachments": [],
        "Status": "Sent",
        "TrackOpens": False,
        "TrackLinks": "None",
        "Metadata": call.metadata[i],
        "Sandboxed": False,
    }


# ---------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: DoubleState) -> None:
        self.state = state
        self.api = _Api(state)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url_host(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!r}:{port}" if isinstance(host, bytes) else f"{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # the client went away
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "letterpress-double"
    sys_version = ""
    wbufsize = 1 << 16  # one write per answer; flushed after each request
    disable_nagle_algorithm = True

    @property
    def double(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        with self.double.connections_lock:
            self.double.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.double.connections_lock:
                self.double.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._write(_Answer.of(411, {"message": "Content-Length is required"}))
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._write(_Answer.of(400, {"message": "bad Content-Length"}))
            return
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        headers = {name.lower(): value for name, value in self.headers.items()}
        state = self.double.state
        if path.startswith("/_double/"):
            self._write(self._control(path, body))
            return
        if state.keep_requests:
            with state.lock:
                captured = CapturedRequest(
                    self.command, self.path, dict(self.headers.items()), body
                )
                state.captured.append(captured)
        answer = self._route(path, query, headers, body)
        with state.lock:
            state.requests += 1
            if answer.drop:
                state.dropped += 1
            else:
                state.statuses[str(answer.status)] += 1
        if answer.delay and state.stopping.wait(answer.delay):
            answer.drop = True  # the server is stopping: do not wait any longer
        if answer.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(answer)

    def _route(self, path: str, query: str, headers: Mapping[str, str], body: bytes) -> _Answer:
        """``headers`` have lower-case names."""
        api = self.double.api
        method = self.command
        if path == "/v3/mail/send":
            return api.sendgrid_send(headers, body) if method == "POST" else _not_allowed()
        if path == "/email/batch":
            return api.postmark_batch(headers, body) if method == "POST" else _not_allowed()
        if path == "/messages/outbound":
            return api.postmark_search(headers, query) if method == "GET" else _not_allowed()
        match = _MAILGUN_SEND.fullmatch(path)
        if match:
            if method != "POST":
                return _not_allowed()
            return api.mailgun_send(match.group(1), headers, body)
        match = _MAILGUN_EVENTS.fullmatch(path)
        if match:
            if method != "GET":
                return _not_allowed()
            base = f"http://{headers.get('host') or self.double.url_host}"
            return api.mailgun_events(match.group(1), match.group(2), headers, query, base)
        return _Answer.of(404, {"message": f"no such endpoint: {method} {path}"})

    def _control(self, path: str, body: bytes) -> _Answer:
        state = self.double.state
        method = self.command
        if path == "/_double/health" and method == "GET":
            return _Answer.of(200, {"ok": True})
        if path == "/_double/stats" and method == "GET":
            return _Answer.of(200, state.stats())
        if path == "/_double/recipients" and method == "GET":
            return _Answer.of(200, state.recipients())
        if path == "/_double/messages" and method == "GET":
            with state.lock:
                kept = {a: [asdict(m) for m in ms] for a, ms in state.messages.items()}
            return _Answer.of(200, kept)
        if path == "/_double/reset" and method == "POST":
            state.reset()
            return _Answer.of(200, {"ok": True})
        if path == "/_double/faults":
            if method == "POST":
                try:
                    data = json.loads(body or b"{}")
                    items = data if isinstance(data, list) else data.get("faults", [])
                    seed = None if isinstance(data, list) else data.get("seed")
                    state.set_faults([Fault.from_json(item) for item in items], seed=seed)
                except (ValueError, TypeError, AttributeError) as exc:
                    return _Answer.of(400, {"message": f"bad faults: {exc}"})
            elif method != "GET":
                return _not_allowed()
            with state.lock:
                return _Answer.of(200, {"faults": [f.to_json() for f in state.faults]})
        return _Answer.of(404, {"message": f"no such endpoint: {method} {path}"})

    def _write(self, answer: _Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)


def _not_allowed() -> _Answer:
    return _Answer.of(405, {"message": "method not allowed"})


# ---------------------------------------------------------------------------
# The Python API and the command line


class DoubleServer:
    """The double in a background thread on 127.0.0.1 (``port=0``: any free port)."""

    def __init__(
        self,
        *,
        port: int = 0,
        keep_messages: bool = False,
        keep_requests: bool = False,
        idempotency: bool = True,
        seed: int | None = None,
        mailgun_key: str = "key-double",
        sendgrid_key: str = "SG.double",
        postmark_token: str = "postmark-double",
    ) -> None:
        self.port = port
        self.state = DoubleState(
            mailgun_key=mailgun_key,
            sendgrid_key=sendgrid_key,
            postmark_token=postmark_token,
            keep_messages=keep_messages,
            keep_requests=keep_requests,
            idempotency=idempotency,
            seed=seed,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def idempotency(self) -> bool:
        """Whether a repeated ``Idempotency-Key`` gets the stored answer."""
        return self.state.idempotency

    @idempotency.setter
    def idempotency(self, value: bool) -> None:
        self.state.idempotency = value

    @property
    def mailgun_key(self) -> str:
        return self.state.mailgun_key

    @property
    def sendgrid_key(self) -> str:
        return self.state.sendgrid_key

    @property
    def postmark_token(self) -> str:
        return self.state.postmark_token

    def start(self) -> DoubleServer:
        if self._server is None:
            self.state.stopping.clear()
            self._server = _Server(("127.0.0.1", self.port), self.state)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="provider-double",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.state.stopping.set()
        server.shutdown()
        thread.join()
        server.close_connections()
        server.server_close()  # waits for the connection threads
        self._server = self._thread = None

    def __enter__(self) -> DoubleServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the double is not running: start() it first")
        return f"http://{self._server.url_host}"

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def recipients(self) -> dict[str, int]:
        return self.state.recipients()

    @property
    def messages(self) -> dict[str, list[KeptMessage]]:
        """Address -> what it received (``keep_messages``); a copy."""
        with self.state.lock:
            return {a: list(ms) for a, ms in self.state.messages.items()}

    @property
    def requests(self) -> list[CapturedRequest]:
        """Every provider request as it arrived (``keep_requests``); a copy."""
        with self.state.lock:
            return list(self.state.captured)

    def set_faults(self, *faults: Fault | Mapping[str, Any], seed: int | None = None) -> None:
        """Replace the faults (none: behave)."""
        self.state.set_faults(
            [f if isinstance(f, Fault) else Fault.from_json(f) for f in faults], seed=seed
        )

    def reset(self) -> None:
        """Forget everything: recipients, counters, stored answers, messages, faults."""
        self.state.reset()


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.sending.providers.double",
        description="A stand-in for Mailgun, SendGrid and Postmark on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    parser.add_argument("--keep-messages", action="store_true", help="keep what each got")
    parser.add_argument("--keep-requests", action="store_true", help="keep raw requests")
    parser.add_argument(
        "--no-idempotency", action="store_true", help="ignore Idempotency-Key headers"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault dice")
    parser.add_argument("--mailgun-key", default="key-double")
    parser.add_argument("--sendgrid-key", default="SG.double")
    parser.add_argument("--postmark-token", default="postmark-double")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _options(argv)
    done = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with DoubleServer(
        port=args.port,
        keep_messages=args.keep_messages,
        keep_requests=args.keep_requests,
        idempotency=not args.no_idempotency,
        seed=args.seed,
        mailgun_key=args.mailgun_key,
        sendgrid_key=args.sendgrid_key,
        postmark_token=args.postmark_token,
    ) as double:
        print(f"listening on {double.url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
