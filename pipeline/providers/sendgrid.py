"""SendGrid: one v3 mail-send call per batch (``POST /v3/mail/send``).

One personalization per recipient carries that recipient's ``substitutions``
(``"%%name%%": "Ada"``), headers (List-Unsubscribe) and ``custom_args`` (the batch,
the issue and the subscriber, as strings). SendGrid answers 202 with an
``X-Message-Id``. Its event history (Email Activity) is a paid add-on, so
``accepted`` cannot tell.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import requests

from ..emails import personalise
from ..settings import Settings
from .base import BatchResult, Message, Recipient
from .http import HttpApi, base_url, merge_names, required

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
        self, message: Message, recipients: Sequence[Recipient], key: str
    ) -> dict[str, Any]:
        names = merge_names(message.subject, message.html, message.text)
        extra = {f"letterpress_{k}": v for k, v in message.metadata.items() if k != "batch"}
        personalizations = []
        for recipient in recipients:
            to: dict[str, str] = {"email": recipient.email}
            if recipient.name:
                to["name"] = recipient.name
            item: dict[str, Any] = {"to": [to]}
            if names:
                item["substitutions"] = {
                    f"%%{name}%%": recipient.fields.get(name, f"%%{name}%%") for name in names
                }
            if recipient.headers:
                item["headers"] = {
                    h: personalise(v, recipient.fields) for h, v in recipient.headers.items()
                }
            item["custom_args"] = {
                "letterpress_batch": key,
                **extra,
                "subscriber": str(recipient.subscriber_id),
            }
            personalizations.append(item)
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
        return payload

    def send(self, message: Message, recipients: Sequence[Recipient], key: str) -> BatchResult:
        if not recipients:
            return BatchResult()
        body = json.dumps(self.payload(message, recipients, key)).encode()
        response = self.api.request(
            "POST",
            f"{self.base}/v3/mail/send",
            key=key,
            data=body,
            content_type="application/json",
        )
        message_id = response.headers.get("X-Message-Id", "")
        return BatchResult(accepted={r.subscriber_id: message_id for r in recipients})

    def accepted(self, key: str, since: datetime) -> set[str] | None:
        return None

    def close(self) -> None:
        self.api.close()
