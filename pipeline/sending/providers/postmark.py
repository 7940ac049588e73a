"""Postmark: one batch call per batch (``POST /email/batch``, up to 500 messages).

Postmark has no merge fields of its own for batches, so every message is
personalised here (``pipeline.merge.personalise``). It answers 200 with one result
per message, in order: ``ErrorCode`` 0 is accepted, anything else is that
recipient's rejection. The batch key goes into each message's ``Metadata``, which
``accepted`` searches (``GET /messages/outbound?metadata_letterpress-batch=…``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.utils import formataddr
from typing import Any

import orjson
import requests

from pipeline.audience.addresses import wire
from pipeline.merge import personalise
from pipeline.sending.providers.base import (
    Ambiguous,
    BatchResult,
    Message,
    Recipient,
    Transient,
    build_each,
)
from pipeline.sending.providers.http import HttpApi, base_url, json_body, required
from pipeline.settings import Settings

LIMIT = 500  # messages per call
SEARCH_PAGE = 500  # the most the message search returns per page
SEARCH_WINDOW = 10_000  # Postmark's limit on count + offset
BATCH_FIELD = "letterpress-batch"


class PostmarkProvider:
    name = "postmark"

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        token = required(
            settings.postmark_server_token.get_secret_value(),
            "POSTMARK_SERVER_TOKEN",
            "provider postmark needs the Server API token of your Postmark server",
        )
        self.base = base_url(settings.postmark_base_url, "POSTMARK_BASE_URL")
        self.stream = settings.postmark_message_stream
        self.max_batch = min(LIMIT, settings.batch_size or LIMIT)
        self.idempotent = settings.provider_idempotency
        self.api = HttpApi(
            "postmark",
            settings,
            session,
            key_setting="POSTMARK_SERVER_TOKEN (a Server token, not the Account token)",
            headers={"X-Postmark-Server-Token": token},
        )

    def messages(
        self,
        message: Message,
        recipients: Sequence[Recipient],
        key: str,
        rejected: dict[int, str],
    ) -> tuple[list[dict[str, Any]], list[Recipient]]:
        """One message per recipient, and the recipients they are for; one that cannot be
        built goes into ``rejected``. Addresses go out in ASCII (an IDN domain in its
        ``xn--`` form); one with a non-ASCII local part is refused here."""
        sender = formataddr((message.from_name, message.from_email))
        metadata = {BATCH_FIELD: key}
        metadata.update(
            {f"letterpress-{k}": v for k, v in message.metadata.items() if k != "batch"}
        )

        def build(recipient: Recipient) -> dict[str, Any]:
            fields = recipient.fields
            headers = {**message.headers, **recipient.headers}
            to = wire(recipient.email, utf8=False, channel="postmark")
            item: dict[str, Any] = {
                "From": sender,
                "To": formataddr((recipient.name, to)),
                "Subject": personalise(message.subject, fields),
                "MessageStream": self.stream,
                "Headers": [
                    {"Name": h, "Value": personalise(v, fields)} for h, v in headers.items()
                ],
                "Metadata": metadata,
            }
            if message.text:
                item["TextBody"] = personalise(message.text, fields)
            if message.html:
                item["HtmlBody"] = personalise(message.html, fields)
            if message.tag:
                item["Tag"] = message.tag
            return item

        built = build_each(recipients, build, rejected, self.name)
        return [item for _, item in built], [recipient for recipient, _ in built]

    def send(self, message: Message, recipients: Sequence[Recipient], key: str) -> BatchResult:
        result = BatchResult()
        items, recipients = self.messages(message, recipients, key, result.rejected)
        if not recipients:
            return result
        body = orjson.dumps(items)  # C, and no text made on the way to bytes
        response = self.api.request(
            "POST",
            f"{self.base}/email/batch",
            key=key,
            data=body,
            content_type="application/json",
        )
        answers = json_body(response)
        if not isinstance(answers, list):
            raise Ambiguous(
                f"postmark answered {response.status_code} without a list of results:"
                f" {response.text[:200]}"
            )
        for recipient, answer in zip(recipients, answers, strict=False):
            if not isinstance(answer, dict):
                continue
            code = answer.get("ErrorCode")
            if code == 0:
                result.accepted[recipient.subscriber_id] = str(answer.get("MessageID", ""))
            else:
                reason = f"ErrorCode {code}: {answer.get('Message', '')}"
                result.rejected[recipient.subscriber_id] = reason
        return result

    def accepted(self, key: str, since: datetime) -> set[str] | None:
        """Recipients (in lower case) of the sent messages whose metadata names ``key``."""
        found: set[str] = set()
        offset = 0
        while offset < SEARCH_WINDOW:
            count = min(SEARCH_PAGE, SEARCH_WINDOW - offset)
            params = {"count": str(count), "offset": str(offset), f"metadata_{BATCH_FIELD}": key}
            response = self.api.request(
                "GET", f"{self.base}/messages/outbound", key=key, params=params
            )
            page = json_body(response)
            if not isinstance(page, dict):
                raise Transient("postmark: the message search did not answer with JSON")
            messages = page.get("Messages") or []
            for item in messages:
                for address in item.get("Recipients") or []:
                    found.add(str(address).lower())
            offset += len(messages)
            if not messages or offset >= int(page.get("TotalCount", 0)):
                break
        return found

    def close(self) -> None:
        self.api.close()
