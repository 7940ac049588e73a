"""What a send needs, checked before anything is sent: a send that cannot work fails fast.

``problems`` lists, in words, every setting that would make a send fail: the signing
key, the provider's credentials and options, the DKIM key, and (for a real send) an
https base URL and a valid sender address. ``require`` raises one ``ConfigError`` with
all of them. ``letterpress worker``, ``letterpress beat`` and ``issue schedule`` call it
before they start or schedule anything, and a worker that finds a problem on its first
batch pauses the issue with it (``recover.pause_for_configuration``).

A *real* send reaches people: any provider but the outbox, unless it is an SMTP server
marked as a sandbox that delivers to nobody (``delivery_sandbox = true``: Mailpit) or an
HTTP API on loopback (the test double). The mark applies to SMTP only, so a sandbox left
on while switching to Mailgun, SendGrid or Postmark cannot let a real send through.
RFC 8058 one-click unsubscribe, and Gmail and Yahoo with it, require an https
``List-Unsubscribe`` URL, so a real send needs ``LETTERPRESS_BASE_URL`` to be https.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pipeline.errors import ConfigError
from pipeline.settings import Settings

HTTP_APIS = {
    "mailgun": "mailgun_base_url",
    "sendgrid": "sendgrid_base_url",
    "postmark": "postmark_base_url",
}


def _loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def real_send(settings: Settings) -> bool:
    """Whether mail sent with these settings reaches real people."""
    if settings.provider == "outbox":
        return False
    if settings.provider == "smtp" and settings.delivery_sandbox:
        return False
    api = HTTP_APIS.get(settings.provider)
    return not (api and _loopback(getattr(settings, api)))


def problems(settings: Settings) -> list[str]:
    """Every setting that stops a send, each as a sentence that says what to do."""
    from pipeline.audience.tokens import Signer
    from pipeline.sending import dkim
    from pipeline.sending.providers import create

    found: list[str] = []
    try:
        Signer.from_settings(settings)
    except ConfigError as exc:
        found.append(str(exc))
    try:
        create(settings).close()  # each adapter checks its own credentials and options
    except ConfigError as exc:
        found.append(str(exc))
    if settings.provider not in ("outbox", "smtp"):  # those two sign in the adapter
        try:
            dkim.signer(settings)
        except ConfigError as exc:
            found.append(str(exc))
    if real_send(settings):
        if not settings.base_url.startswith("https://"):
            found.append(
                f"LETTERPRESS_BASE_URL is {settings.base_url}: one-click unsubscribe (RFC 8058,"
                " and Gmail's and Yahoo's sender rules) needs an https List-Unsubscribe URL;"
                " set it to the https address where `letterpress serve` answers (or set"
                " delivery_sandbox = true for an SMTP server that delivers to nobody)"
            )
        from pipeline.audience.subscribers import normalise_email

        try:
            normalise_email(settings.sender_email)
        except ValueError as exc:
            found.append(f"sender_email: {exc}; set it to the address your newsletter is from")
    return found


def require(settings: Settings, action: str) -> None:
    """Raise one ConfigError naming every problem, if there is any."""
    found = problems(settings)
    if found:
        raise ConfigError(f"cannot {action}:\n" + "\n".join(f"- {p}" for p in found))
