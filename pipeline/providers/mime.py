"""One complete email for one recipient, for the adapters that send MIME (SMTP, outbox).

The shape is the one ``pipeline.emails.mime_message`` gives a preview: a
``multipart/alternative`` with the text part first and the HTML part last (the one
clients prefer), both quoted-printable, with the merge fields filled by
``pipeline.emails.personalise``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid

from ..emails import personalise
from .base import Message, Recipient

# Headers the message itself sets; a Message or Recipient header of the same name is ignored.
_OWN = {"subject", "from", "to", "date", "message-id", "mime-version", "content-type"}


def build(
    message: Message,
    recipient: Recipient,
    *,
    headers: Mapping[str, str] | None = None,
    when: datetime | None = None,
) -> EmailMessage:
    """The personalised message for ``recipient``; ``headers`` are added last."""
    fields = recipient.fields
    email = EmailMessage(policy=SMTP)
    email["Subject"] = personalise(message.subject, fields)
    email["From"] = formataddr((message.from_name, message.from_email))
    email["To"] = formataddr((recipient.name, recipient.email))
    email["Date"] = format_datetime(when or datetime.now(UTC))
    domain = message.from_email.rpartition("@")[2] or "localhost"
    email["Message-ID"] = make_msgid(domain=domain)
    email["MIME-Version"] = "1.0"
    extra: dict[str, str] = {}
    for source in (message.headers, recipient.headers, headers or {}):
        for name, value in source.items():
            if name.lower() not in _OWN:
                extra = {k: v for k, v in extra.items() if k.lower() != name.lower()}
                extra[name] = personalise(value, fields)
    for name, value in extra.items():
        email[name] = value
    email.set_content(personalise(message.text, fields), subtype="plain", cte="quoted-printable")
    if message.html:
        email.add_alternative(
            personalise(message.html, fields), subtype="html", cte="quoted-printable"
        )
    return email
