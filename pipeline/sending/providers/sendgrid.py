"""SendGrid: one v3 mail-send call per batch (``POST /v3/mail/send``).

One personalization per recipient carries that recipient's ``substitutions``
(``"%%name%%": "Ada"``), headers (List-Unsubscribe) and ``custom_args`` (the batch,
the issue and the subscriber, as strings). SendGrid answers 202 with an
``X-Message-Id``. Its event history (Email Activity) is a paid add-on, so
``accepted`` cannot tell.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import requests

from pipeline.audience.addresses import wire
from pipeline.merge import merge_names, personalise
from pipeline.sending.providers.base import BatchResult, Message, Recipient, build_each
from pipeline.sending.providers.http import HttpApi, base_url, required
from pipeline.settings import Settings

LIMIT = 1000  # personalizations per call


class SendGridProvider:
    name = "sendgrid"

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        key = required(
            settings.sendgrid_api_key.get_secret_value(),
            "SENDGRID_API_KEY",
            "provider sendgrid needs an API key with the Mail Send permission",
        )
        self.base = base_url(settings.sendgrid_base_url, "SENDGRID_BASE_URL")
        self.max_batch = min(LIMIT, settings.batch_size or LIMIT)
        self.idempotent = settings.provider_idempotency
        self.api = HttpApi(
            "sendgrid",
            settings,
            session,
            key_setting="SENDGRID_API_KEY (it needs the Mail Send permission)",
            headers={"Authorization": f"Bearer {key}"},
        )

    def payload(
        self,
        message: Message,
        recipients: Sequence[Recipient],
        key: str,
        rejected: dict[int, str],
    ) -> tuple[dict[str, Any], list[Recipient]]:
        """The request body and the recipients in it; one whose personalization cannot be
        built goes into ``rejected``. SendGrid takes ASCII addresses only (an IDN domain
        in its ``xn--`` form): an address with a non-ASCII local part is refused here."""
        names = merge_names(message.subject, message.html, message.text)
        extra = {f"letterpress_{k}": v for k, v in message.metadata.items() if k != "batch"}

        tags = [(f"%%{name}%%", name) for name in names]  # made once per batch

        def personalization(recipient: Recipient) -> dict[str, Any]:
            to: dict[str, str] = {"email": wire(recipient.email, utf8=False, channel="sendgrid")}
            if recipient.name:
                to["name"] = recipient.name
            item: dict[str, Any] = {"to": [to]}
            if names:
                fields = recipient.fields
                item["substitutions"] = {tag: fields.get(name, tag) for tag, name in tags}
            if recipient.headers:
                item["headers"] = {
                    h: personalise(v, recipient.fields) for h, v in recipient.headers.items()
                }
            item["custom_args"] = {
                "letterpress_batch": key,
                **extra,
                "subscriber": str(recipient.subscriber_id),
            }
            return item

        built = build_each(recipients, personalization, rejected, self.name)
        personalizations = [item for _, item in built]
        sender: dict[str, str] = {"email": message.from_email}
        if message.from_name:
            sender["name"] = message.from_name
        content = []
        if message.text:
            content.append({"type": "text/plain", "value": message.text})
        if message.html:
            content.append({"type": "text/html", "value": message.html})
        payload: dict[str, Any] = {
            "personalizations": personalizations,
            "from": sender,
            "subject": message.subject,
            "content": content,
        }
        if message.headers:
            payload["headers"] = dict(message.headers)
        if message.tag:
            payload["categories"] = [message.tag]
        return payload, [recipient for recipient, _ in built]

    def send(self, message: Message, recipients: Sequence[Recipient], key: str) -> BatchResult:
        result = BatchResult()
        payload, recipients = self.payload(message, recipients, key, result.rejected)
        if not recipients:
            return result
        body = orjson.dumps(payload)  # C, and no text made on the way to bytes
        response = self.api.request(
            "POST",
            f"{self.base}/v3/mail/send",
            key=key,
            data=body,
            content_type="application/json",
        )
        message_id = response.headers.get("X-Message-Id", "")
        result.accepted.update({r.subscriber_id: message_id for r in recipients})
        return result

    def accepted(self, key: str, since: datetime) -> set[str] | None:
        return None

    def close(self) -> None:
        self.api.close()
