"""Postmark's API, the parts Letterpress uses, as Postmark documents them:

    POST /email/batch          JSON, X-Postmark-Server-Token; one answer per message
    GET  /messages/outbound    the message search (count, offset, metadata_*, ...)

Messages are sent as they are (Postmark does no personalisation); a refused address (a
reject fault) fails its message with ErrorCode 406, inactive recipient. Header names in
``headers`` are in lower case.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any
from urllib.parse import parse_qsl

from letterpress_testing.faults import Fault
from letterpress_testing.parsing import addresses, valid
from letterpress_testing.state import Answer, DoubleState, KeptMessage, PostmarkCall

LIMIT = 500
SEARCH_WINDOW = 10_000
BATCH_PATH = "/email/batch"
SEARCH_PATH = "/messages/outbound"


# Batch send


def batch(state: DoubleState, headers: Mapping[str, str], body: bytes) -> Answer:
    if headers.get("x-postmark-server-token", "") != state.postmark_token:
        return _error(
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
    if fault is not None and fault.answers:
        return _fault_answer(fault)
    try:
        items = json.loads(body)
    except ValueError:
        return _error(422, 402, "Received invalid JSON input.")
    if not isinstance(items, list) or not items:
        return _error(422, 300, "Invalid email request: expected a non-empty array")
    if len(items) > LIMIT:
        return _error(422, 300, f"Invalid email request: at most {LIMIT} messages per batch")
    answer = Answer.of(200, _accept(state, items))
    return state.finish("postmark", key, answer, fault, delay)


def _fault_answer(fault: Fault) -> Answer:
    if fault.kind == "throttle":
        return Answer.of(
            fault.code,
            {"ErrorCode": 429, "Message": "Rate limit exceeded. Please retry later."},
            headers=[("Retry-After", f"{fault.retry_after:g}")],
        )
    return _error(fault.code, 0, "Internal server error")


def _accept(state: DoubleState, items: list[Any]) -> list[dict[str, Any]]:
    """Record the messages it takes, the call for the search; one answer per message."""
    first = state.next_ids(len(items))
    submitted = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    results: list[dict[str, Any]] = []
    call = PostmarkCall(time.time(), first, [], [], [], [], [], [], [])
    accepted: list[tuple[str, ...]] = []
    kept: list[tuple[str, KeptMessage]] = []
    for index, item in enumerate(items):
        refusal, recipients = _check(state, item)
        if refusal is not None:
            results.append(refusal)
            continue
        results.append(
            {
                "ErrorCode": 0,
                "Message": "OK",
                "MessageID": state.message_uuid(first + index),
                "SubmittedAt": submitted,
                "To": item["To"],
            }
        )
        accepted.append(recipients)
        _log(call, index, item, recipients, subject=state.keep_messages)
        if state.keep_messages:
            message = _message(item)
            kept += [(a, message) for a in recipients]
    with state.lock:
        for recipients in accepted:
            for address in recipients:
                state.record("postmark", address)
        for address, message in kept:
            state.keep(address, message)
        if call.positions:
            state.postmark_calls.append(call)
    return results


def _check(state: DoubleState, item: Any) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """The answer refusing one message (None if taken), and its recipients."""
    problem, recipients = _problem(item)
    if problem is not None:
        return {"ErrorCode": problem[0], "Message": problem[1]}, ()
    refused = [a for a in recipients if state.faults and state.refused("postmark", a)]
    if refused:
        message = (
            "You tried to send to recipient(s) that have been marked as inactive. Found"
            f" inactive addresses: {', '.join(refused)}. Inactive recipients are ones that"
            " have generated a hard bounce, a spam complaint, or a manual suppression."
        )
        return {"ErrorCode": 406, "Message": message}, ()
    return None, recipients


def _log(
    call: PostmarkCall,
    index: int,
    item: Mapping[str, Any],
    recipients: tuple[str, ...],
    *,
    subject: bool,
) -> None:
    """Add one accepted message to the call's log (``subject``: with keep_messages)."""
    call.positions.append(index)
    call.addresses.append(recipients)
    _append_shared(call.metadata, item.get("Metadata") or {})
    _append_shared(call.tags, item.get("Tag") or "")
    _append_shared(call.streams, item.get("MessageStream") or "outbound")
    _append_shared(call.sender, item["From"])
    if subject:
        call.subjects.append(item.get("Subject") or "")


def _append_shared(values: list[Any], value: Any) -> None:
    """Append ``value``, or the previous item again when equal: one object per batch."""
    values.append(values[-1] if values and values[-1] == value else value)


def _error(status: int, code: int, message: str) -> Answer:
    return Answer.of(status, {"ErrorCode": code, "Message": message})


def _problem(item: Any) -> tuple[tuple[int, str] | None, tuple[str, ...]]:
    """(error code and message, or None) and the message's recipients in lower case."""
    if not isinstance(item, dict):
        return (300, "Invalid email request"), ()
    sender = parseaddr(str(item.get("From") or ""))[1]
    if not valid(sender):
        return (300, f"Invalid 'From' address: '{item.get('From') or ''}'."), ()
    recipients: dict[str, None] = {}
    for kind in ("To", "Cc", "Bcc"):
        for _, address in addresses(str(item.get(kind) or "")):
            if not valid(address):
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


def _message(item: Mapping[str, Any]) -> KeptMessage:
    return KeptMessage(
        provider="postmark",
        sender=str(item["From"]),
        to=str(item["To"]),
        subject=str(item.get("Subject") or ""),
        text=str(item.get("TextBody") or ""),
        html=str(item.get("HtmlBody") or ""),
        headers={h["Name"]: str(h.get("Value", "")) for h in item.get("Headers") or ()},
    )


# Message search


def search(state: DoubleState, headers: Mapping[str, str], query: str) -> Answer:
    """The accepted messages that match, newest first, as Postmark lists them."""
    if headers.get("x-postmark-server-token", "") != state.postmark_token:
        return _error(401, 10, "The Server Token you provided was invalid.")
    params = dict(parse_qsl(query))
    try:
        count = int(params["count"])
        offset = int(params.get("offset", 0))
    except (KeyError, ValueError):
        return _error(422, 0, "The 'count' parameter is required (1 to 500).")
    if not 1 <= count <= 500 or offset < 0 or count + offset > SEARCH_WINDOW:
        return _error(422, 0, "count must be 1 to 500, and count + offset at most 10000")
    wanted = {k[9:]: v for k, v in params.items() if k.startswith("metadata_")}
    recipient = params.get("recipient", "").lower()
    tag = params.get("tag")
    stream = params.get("messagestream")
    with state.lock:
        calls = list(state.postmark_calls)
    matches: list[dict[str, Any]] = []
    total = 0
    for call in reversed(calls):
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
                matches.append(_summary(state, call, i))
            total += 1
    return Answer.of(200, {"TotalCount": total, "Messages": matches})


def _summary(state: DoubleState, call: PostmarkCall, i: int) -> dict[str, Any]:
    received = datetime.fromtimestamp(call.at, UTC).isoformat().replace("+00:00", "Z")
    recipients = list(call.addresses[i])
    return {
        "MessageID": state.message_uuid(call.first_seq + call.positions[i]),
        "MessageStream": call.streams[i],
        "Tag": call.tags[i],
        "To": [{"Email": a, "Name": None} for a in recipients],
        "Cc": [],
        "Bcc": [],
        "Recipients": recipients,
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
