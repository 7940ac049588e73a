"""Mail providers behind one interface (``base.Provider``).

    outbox     files in ``outbox_dir`` (the default: nothing leaves the machine)
    mailgun    Mailgun's batch sending, personalised by recipient-variables
    sendgrid   SendGrid v3 mail send, one personalization per recipient
    postmark   Postmark's batch API, one message per recipient
    smtp       any SMTP server, one message per recipient

``create`` picks one from the settings. The adapters are imported only when chosen,
so importing this package (or one adapter's module) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import requests

    from pipeline.sending.providers.base import Provider
    from pipeline.settings import Settings


def create(settings: Settings, session: requests.Session | None = None) -> Provider:
    """The provider named by ``settings.provider``; a ConfigError names what is missing.

    ``session`` replaces the HTTP adapters' own (which they close in ``close``)."""
    match settings.provider:
        case "outbox":
            from pipeline.sending.providers.outbox import OutboxProvider

            return OutboxProvider(settings)
        case "mailgun":
            from pipeline.sending.providers.mailgun import MailgunProvider

            return MailgunProvider(settings, session)
        case "sendgrid":
            from pipeline.sending.providers.sendgrid import SendGridProvider

            return SendGridProvider(settings, session)
        case "postmark":
            from pipeline.sending.providers.postmark import PostmarkProvider

            return PostmarkProvider(settings, session)
        case "smtp":
            from pipeline.sending.providers.smtp import SmtpProvider

            return SmtpProvider(settings)
    raise ConfigError(f"unknown provider {settings.provider!r} (LETTERPRESS_PROVIDER)")
