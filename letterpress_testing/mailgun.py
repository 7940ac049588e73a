"""Mailgun's API, the parts Letterpress uses, as Mailgun documents them:

    POST /v3/{domain}/messages   multipart/form-data (or urlencoded), Basic auth api:KEY
    GET  /v3/{domain}/events     the event log: ``accepted`` events, paging.next

A send is personalised by ``recipient-variables`` (``%recipient.x%``); a refused
address (a reject fault) is dropped silently, as Mailgun drops a suppressed one.
Header names in ``headers`` are in lower case.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl

from letterpress_testing.faults import Fault
from letterpress_testing.parsing import addresses, basic_auth_ok, parse_form, valid
from letterpress_testing.state import Answer, DoubleState, KeptMessage, MailgunCall

LIMIT = 1000
OPTIONS_LIMIT = 16 * 1024  # o:, h:, v: and t: fields together

SEND_PATH = re.compile(r"/v3/([^/]+)/messages")
EVENTS_PATH = re.compile(r"/v3/([^/]+)/events(?:/([A-Za-z0-9_=-]+))?")
_VARIABLE = re.compile(r"%recipient\.([A-Za-z0-9_-]+)%")


@dataclass
class _Send:
    """A send call, read and checked."""

    values: dict[str, list[str]]  # field name -> every value given, in order
    recipients: dict[str, str]  # lower-case address -> as given
    variables: dict[str, Any]  # recipient-variables


@dataclass
class _Query:
    """An events query, from its parameters or from a page token."""

    params: dict[str, Any]  # as given, for the paging links
    limit: int
    begin: float | None
    end: float | None
    offset: int
    ascending: bool
    kind: str | None
    recipient: str


# Send


def send(state: DoubleState, domain: str, headers: Mapping[str, str], body: bytes) -> Answer:
    if not basic_auth_ok(headers.get("authorization", ""), "api", state.mailgun_key):
        return Answer(401, b"Forbidden", content_type="text/plain")
    key = headers.get("idempotency-key", "")
    replayed = state.replay("mailgun", key)
    if replayed is not None:
        return replayed
    fault, delay = state.pick("mailgun")
    if fault is not None and fault.answers:
        return _fault_answer(domain, fault)
    try:
        call = _read(headers, body)
    except ValueError as exc:
        return Answer.of(400, {"message": str(exc)})
    message_id = (
        f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime())}.{secrets.token_hex(8).upper()}@{domain}>"
    )
    _accept(state, domain, message_id, call)
    answer = Answer.of(200, {"id": message_id, "message": "Queued. Thank you."})
    return state.finish("mailgun", key, answer, fault, delay)


def _fault_answer(domain: str, fault: Fault) -> Answer:
    if fault.kind == "throttle":
        return Answer.of(
            fault.code,
            {
                "message": f"Domain {domain} is not allowed to send: account-requests-per-sec"
                f" limit exceeded, try again after {fault.retry_after:g} seconds"
            },
        )
    return Answer.of(fault.code, {"message": "Internal Server Error"})


def _read(headers: Mapping[str, str], body: bytes) -> _Send:
    """The call's fields; ValueError, with Mailgun's message, for what it would refuse."""
    try:
        form = parse_form(headers.get("content-type", ""), body)
    except ValueError as exc:
        raise ValueError(f"cannot read the form: {exc}") from None
    values: dict[str, list[str]] = {}
    for name, value in form:
        values.setdefault(name, []).append(value)
    problem = _problem(form, values)
    if problem is not None:
        raise ValueError(problem)
    return _Send(values, _recipients(values["to"]), _variables(values))


def _problem(form: list[tuple[str, str]], values: Mapping[str, list[str]]) -> str | None:
    for required in ("from", "to", "subject"):
        if not values.get(required):
            return f"{required} parameter is missing"
    if not any(values.get(p) for p in ("text", "html", "amp-html", "template")):
        return "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified"
    options = sum(len(n) + len(v) for n, v in form if n[:2] in ("o:", "h:", "v:", "t:"))
    if options > OPTIONS_LIMIT:
        return "Send options (parameters starting with o:, h:, or v:) are limited to 16KB total"
    return None


def _recipients(to: list[str]) -> dict[str, str]:
    """Lower-case address -> as given, from every ``to`` field."""
    recipients: dict[str, str] = {}
    for value in to:
        for _, address in addresses(value):
            if not valid(address):
                raise ValueError("to parameter is not a valid address. please check documentation")
            recipients.setdefault(address.lower(), address)
    if len(recipients) > LIMIT:
        raise ValueError("Too many recipients: 1000 is the limit")
    return recipients


def _variables(values: Mapping[str, list[str]]) -> dict[str, Any]:
    try:
        variables = json.loads(values.get("recipient-variables", ["{}"])[-1])
        if not isinstance(variables, dict):
            raise ValueError
    except ValueError:
        raise ValueError("recipient-variables parameter is not a valid JSON") from None
    return variables


def _accept(state: DoubleState, domain: str, message_id: str, call: _Send) -> None:
    """Record the recipients no fault refuses, their messages, and the call for events."""
    values = call.values
    kept: list[tuple[str, KeptMessage]] = []
    if state.keep_messages:
        lowered = {str(k).lower(): v for k, v in call.variables.items()}
        for address, given in call.recipients.items():
            mine = call.variables.get(given, lowered.get(address, {}))
            kept.append((address, _message(values, given, mine)))
    taken = [a for a in call.recipients if not (state.faults and state.refused("mailgun", a))]
    with state.lock:
        recorded = [state.record("mailgun", a) for a in taken]
        taken_set = set(taken)
        for address, message in kept:
            if address in taken_set:
                state.keep(address, message)
        state.mailgun_calls.append(
            MailgunCall(
                at=time.time(),
                domain=domain,
                message_id=message_id,
                sender=values["from"][-1],
                subject=values["subject"][-1],
                tags=values.get("o:tag", []),
                variables={n[2:]: v[-1] for n, v in values.items() if n.startswith("v:")},
                addresses=recorded,
            )
        )


def _message(values: Mapping[str, list[str]], to: str, variables: Mapping[str, Any]) -> KeptMessage:
    def fill(text: str) -> str:
        return _VARIABLE.sub(
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


# Events


def events(
    state: DoubleState,
    domain: str,
    token: str | None,
    headers: Mapping[str, str],
    query: str,
    base: str,
) -> Answer:
    """One page of ``accepted`` events; ``token`` is the page in a paging link, ``base``
    the URL those links start with."""
    if not basic_auth_ok(headers.get("authorization", ""), "api", state.mailgun_key):
        return Answer(401, b"Forbidden", content_type="text/plain")
    try:
        wanted = _query(token, query)
    except ValueError as exc:
        return Answer.of(400, {"message": str(exc)})
    with state.lock:
        calls = [c for c in state.mailgun_calls if c.domain == domain]
    items = _items(calls, wanted) if wanted.kind in (None, "accepted") else []

    def page(at: int) -> str:
        data = {k: v for k, v in wanted.params.items() if k != "offset"}
        data["offset"] = max(at, 0)
        encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
        return f"{base}/v3/{domain}/events/{encoded}"

    offset, limit = wanted.offset, wanted.limit
    paging = {
        "first": page(0),
        "next": page(offset + limit),
        "previous": page(offset - limit),
        "last": page(offset + limit),
    }
    return Answer.of(200, {"items": items, "paging": paging})


def _query(token: str | None, query: str) -> _Query:
    """The query a page token or the parameters ask; ValueError with the reason."""
    if token:
        try:
            params = json.loads(base64.urlsafe_b64decode(token.encode()))
        except (ValueError, binascii.Error):
            raise ValueError("invalid page token") from None
    else:
        params = dict(parse_qsl(query))
        params["offset"] = 0
    wanted = _Query(
        params=params,
        limit=int(params.get("limit", 100)),
        begin=_epoch(params.get("begin")),
        end=_epoch(params.get("end")),
        offset=int(params.get("offset", 0)),
        ascending=params.get("ascending", "no") == "yes",
        kind=params.get("event"),
        recipient=str(params.get("recipient", "")).lower(),
    )
    if not 1 <= wanted.limit <= 300:
        raise ValueError("limit must be between 1 and 300")
    return wanted


def _items(calls: list[MailgunCall], wanted: _Query) -> list[dict[str, Any]]:
    """The events of the page ``wanted`` (oldest first if ascending, else newest)."""
    if not wanted.ascending:
        calls = list(reversed(calls))
    offset, limit = wanted.offset, wanted.limit
    items: list[dict[str, Any]] = []
    position = 0
    for call in calls:
        if (wanted.begin is not None and call.at < wanted.begin) or (
            wanted.end is not None and call.at > wanted.end
        ):
            continue
        taken = call.addresses if wanted.ascending else list(reversed(call.addresses))
        for index, address in enumerate(taken):
            if wanted.recipient and address != wanted.recipient:
                continue
            if offset <= position < offset + limit:
                items.append(_event(call, index, address))
            position += 1
        if position >= offset + limit:
            break
    return items


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


def _event(call: MailgunCall, index: int, address: str) -> dict[str, Any]:
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
