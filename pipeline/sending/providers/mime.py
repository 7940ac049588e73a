"""One complete email for one recipient, for the adapters that send MIME (SMTP, outbox).

The shape is the one ``pipeline.render.emails.mime_message`` gives a preview: a
``multipart/alternative`` with the text part first and the HTML part last (the one
clients prefer), both quoted-printable, with the merge fields filled by
``pipeline.merge.personalise``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, formataddr, make_msgid

from pipeline.audience.addresses import ascii_domain, mailbox, wire
from pipeline.merge import personalise
from pipeline.sending.dkim import Signer
from pipeline.sending.providers.base import Message, Recipient

# Headers the message itself sets; a Message or Recipient header of the same name is ignored.
_OWN = {"subject", "from", "to", "date", "message-id", "mime-version", "content-type"}


def build(
    message: Message,
    recipient: Recipient,
    *,
    headers: Mapping[str, str] | None = None,
    when: datetime | None = None,
    utf8: bool = False,
    channel: str = "this channel",
) -> EmailMessage:
    """The personalised message for ``recipient``; ``headers`` are added last.

    An address that needs SMTPUTF8 (a non-ASCII local part) gets a message whose headers
    are UTF-8 (RFC 6532), when ``utf8`` says the channel carries it; otherwise
    ``AddressNotSupported``. Any other address goes out in ASCII, its domain in IDNA form.
    A header value that cannot be written (a line break in it) raises ValueError."""
    fields = recipient.fields
    to = wire(recipient.email, utf8=utf8, channel=channel)
    international = not to.isascii()
    email = EmailMessage(policy=SMTPUTF8 if international else SMTP)
    email["Subject"] = personalise(message.subject, fields)
    email["From"] = formataddr((message.from_name, message.from_email))
    email["To"] = mailbox(recipient.name, to)
    email["Date"] = format_datetime(when or datetime.now(UTC))
    domain = message.from_email.rpartition("@")[2] or "localhost"
    email["Message-ID"] = make_msgid(domain=ascii_domain(domain))
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


def render(
    message: Message,
    recipient: Recipient,
    *,
    signer: Signer | None,
    headers: Mapping[str, str] | None = None,
    utf8: bool = False,
    channel: str = "this channel",
) -> tuple[bytes, str]:
    """(the message's bytes, DKIM-signed when ``signer`` is given; its Message-ID)."""
    email = build(message, recipient, headers=headers, utf8=utf8, channel=channel)
    data = email.as_bytes()
    if signer is not None:
        data = signer.sign(data, message.from_email.rpartition("@")[2])
    return data, str(email["Message-ID"])
