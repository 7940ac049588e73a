"""Mailgun: one batch-sending call per batch (``POST /v3/{domain}/messages``).

Mailgun personalises each copy itself from ``recipient-variables``: the merge field
``%%name%%`` is sent as ``%recipient.name%``, and each recipient's own headers
(List-Unsubscribe) go the same way:
``h:List-Unsubscribe: %recipient.h_list_unsubscribe%``.
The batch key is attached to every copy as the user variable ``letterpress-batch``,
which is how ``accepted`` finds the batch again in Mailgun's event log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import formataddr

import requests

from pipeline.audience.addresses import mailbox, wire
from pipeline.merge import MERGE_FIELD, merge_names, personalise
from pipeline.sending.providers.base import BatchResult, Message, Recipient, Transient, build_each
from pipeline.sending.providers.http import (
    HttpApi,
    base_url,
    json_body,
    required,
)
from pipeline.settings import Settings

LIMIT = 1000  # recipients per call (Mailgun's batch-sending limit)
EVENTS_PAGE = 300  # the most the events API returns per page
_MAX_PAGES = 100_000


def header_variable(header: str) -> str:
    """``List-Unsubscribe`` -> ``h_list_unsubscribe``, a recipient variable name."""
    return "h_" + header.lower().replace("-", "_")


def to_mailgun(text: str) -> str:
    """``%%name%%`` -> ``%recipient.name%``."""
    return MERGE_FIELD.sub(lambda m: f"%recipient.{m.group(1)}%", text)


class MailgunProvider:
    name = "mailgun"

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        key = required(
            settings.mailgun_api_key.get_secret_value(),
            "MAILGUN_API_KEY",
            "provider mailgun needs the API key of your Mailgun account",
        )
        self.domain = required(
            settings.mailgun_domain,
            "MAILGUN_DOMAIN",
            "provider mailgun needs the sending domain (as in the Mailgun dashboard)",
        )
        self.base = base_url(settings.mailgun_base_url, "MAILGUN_BASE_URL")
        self.max_batch = min(LIMIT, settings.batch_size or LIMIT)
        self.idempotent = settings.provider_idempotency
        self.api = HttpApi(
            "mailgun",
            settings,
            session,
            key_setting="MAILGUN_API_KEY (and MAILGUN_DOMAIN, MAILGUN_BASE_URL for EU accounts)",
            throttle_statuses=(420, 429),
            auth=("api", key),
        )

    def form(
        self,
        message: Message,
        recipients: Sequence[Recipient],
        key: str,
        rejected: dict[int, str],
    ) -> tuple[list[tuple[str, str]], list[Recipient]]:
        """The form fields of one call, in order (``to`` repeats once per recipient), and
        the recipients in it: one whose part cannot be built goes into ``rejected``.

        Mailgun takes international addresses (SMTPUTF8): an ASCII local part goes with
        its domain in IDNA form, any other address as it is."""
        names = merge_names(message.subject, message.html, message.text, *message.headers.values())
        own: dict[str, None] = {}  # per-recipient header names, in order of first use
        for recipient in recipients:
            own.update(dict.fromkeys(recipient.headers))

        def part(recipient: Recipient) -> tuple[str, str, dict[str, str]]:
            address = wire(recipient.email, utf8=True, channel="mailgun")
            to = mailbox(recipient.name, address)
            values = {name: recipient.fields.get(name, f"%%{name}%%") for name in names}
            for header in own:
                value = recipient.headers.get(header, "")
                values[header_variable(header)] = personalise(value, recipient.fields)
            return address, to, values

        parts = build_each(recipients, part, rejected, self.name)
        variables = {address: values for _, (address, _, values) in parts}
        fields = [("from", formataddr((message.from_name, message.from_email)))]
        fields += [("to", to) for _, (_, to, _) in parts]
        fields.append(("subject", to_mailgun(message.subject)))
        if message.text:
            fields.append(("text", to_mailgun(message.text)))
        if message.html:
            fields.append(("html", to_mailgun(message.html)))
        if message.tag:
            fields.append(("o:tag", message.tag))
        for header, value in message.headers.items():
            if header not in own:
                fields.append((f"h:{header}", to_mailgun(value)))
        fields += [(f"h:{h}", f"%recipient.{header_variable(h)}%") for h in own]
        fields.append(("v:letterpress-batch", key))
        for name, value in message.metadata.items():
            if name != "batch":
                fields.append((f"v:letterpress-{name}", value))
        fields.append(("recipient-variables", json.dumps(variables, ensure_ascii=False)))
        return fields, [recipient for recipient, _ in parts]

    def send(self, message: Message, recipients: Sequence[Recipient], key: str) -> BatchResult:
        result = BatchResult()
        fields, recipients = self.form(message, recipients, key, result.rejected)
        if not recipients:
            return result
        response = self.api.request(
            "POST",
            f"{self.base}/v3/{self.domain}/messages",
            key=key,
            files=[(name, (None, value)) for name, value in fields],
        )
        body = json_body(response)
        message_id = str(body.get("id", "")) if isinstance(body, dict) else ""
        result.accepted.update({r.subscriber_id: message_id for r in recipients})
        return result

    def accepted(self, key: str, since: datetime) -> set[str] | None:
        """Recipients (in lower case) of Mailgun's ``accepted`` events for batch ``key``."""
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        url = f"{self.base}/v3/{self.domain}/events"
        params: dict[str, str] | None = {
            "event": "accepted",
            "begin": str(int(since.timestamp())),
            "ascending": "yes",
            "limit": str(EVENTS_PAGE),
        }
        found: set[str] = set()
        seen = {url}
        for _ in range(_MAX_PAGES):
            page = json_body(self.api.request("GET", url, key=key, params=params))
            if not isinstance(page, dict):
                raise Transient("mailgun: the events API answered with something other than JSON")
            items = page.get("items") or []
            if not items:
                break
            for item in items:
                variables = item.get("user-variables") or {}
                if variables.get("letterpress-batch") == key and item.get("recipient"):
                    found.add(str(item["recipient"]).lower())
            following = (page.get("paging") or {}).get("next")
            if not following or following in seen:
                break
            seen.add(following)
            url, params = following, None
        return found

    def close(self) -> None:
        self.api.close()
