"""SendGrid's v3 mail send, as SendGrid documents it:

    POST /v3/mail/send   JSON, Bearer auth; 202 with X-Message-Id

A send is personalised by each personalization's ``substitutions``; a refused address
(a reject fault) is dropped silently, as SendGrid drops a suppressed one. Header names
in ``headers`` are in lower case.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Mapping
from typing import Any

from letterpress_testing.faults import Fault
from letterpress_testing.parsing import valid
from letterpress_testing.state import Answer, DoubleState, KeptMessage

LIMIT = 1000
SEND_PATH = "/v3/mail/send"

Problem = tuple[str | None, str]  # the field SendGrid names, and its message


def send(state: DoubleState, headers: Mapping[str, str], body: bytes) -> Answer:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token, state.sendgrid_key):
        return _error(401, "The provided authorization grant is invalid, expired, or revoked")
    key = headers.get("idempotency-key", "")
    replayed = state.replay("sendgrid", key)
    if replayed is not None:
        return replayed
    fault, delay = state.pick("sendgrid")
    if fault is not None and fault.answers:
        return _fault_answer(fault)
    try:
        mail = json.loads(body)
    except ValueError:
        return _error(400, "Bad Request", field=None)
    problem = _problem(mail)
    if problem is not None:
        return _error(400, problem[1], field=problem[0])
    _accept(state, mail)
    answer = Answer(202, b"", headers=[("X-Message-Id", secrets.token_urlsafe(16)[:22])])
    return state.finish("sendgrid", key, answer, fault, delay)


def _fault_answer(fault: Fault) -> Answer:
    if fault.kind == "throttle":
        reset = math.ceil(time.time() + fault.retry_after)
        return Answer.of(
            fault.code,
            {"errors": [{"field": None, "message": "too many requests"}]},
            headers=[
                ("X-RateLimit-Limit", "600"),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", str(reset)),
            ],
        )
    return _error(fault.code, "internal server error")


def _accept(state: DoubleState, mail: Mapping[str, Any]) -> None:
    """Record each personalization's recipients no fault refuses, and their messages."""
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
            message = _message(mail, item)
            kept += [(address, message) for address in group]
    refused = set()
    if state.faults:
        refused = {a for group in groups for a in group if state.refused("sendgrid", a)}
    with state.lock:
        for group in groups:
            for address in group:
                if address not in refused:
                    state.record("sendgrid", address)
        for address, message in kept:
            if address not in refused:
                state.keep(address, message)


def _error(status: int, message: str, field: str | None = None) -> Answer:
    return Answer.of(status, {"errors": [{"message": message, "field": field, "help": None}]})


def _problem(mail: Any) -> Problem | None:
    """The first thing SendGrid would refuse in this request."""
    if not isinstance(mail, dict):
        return None, "Bad Request"
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return (
            "personalizations",
            "The personalizations field is required and must have at least one personalization.",
        )
    if len(personalizations) > LIMIT:
        return "personalizations", "The personalizations field may have at most 1000 items."
    sender = mail.get("from")
    if not isinstance(sender, dict) or not valid(str(sender.get("email", ""))):
        return "from.email", "The from object must be provided for every email send."
    if not mail.get("template_id"):
        problem = _content_problem(mail.get("content"))
        if problem is not None:
            return problem
    categories = mail.get("categories", [])
    if not isinstance(categories, list) or len(categories) > 10:
        return "categories", "Too many categories: at most 10."
    for index, item in enumerate(personalizations):
        problem = _personalization_problem(mail, index, item)
        if problem is not None:
            return problem
    return None


def _content_problem(content: Any) -> Problem | None:
    """What is wrong with ``content`` (required without a template)."""
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
    return None


def _personalization_problem(mail: Mapping[str, Any], index: int, item: Any) -> Problem | None:
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
            if not valid(email):
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


def _message(mail: Mapping[str, Any], item: Mapping[str, Any]) -> KeptMessage:
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
