"""Test sends: an issue sent to a few addresses typed in (not necessarily subscribers),
through the configured provider, its subject prefixed ``[TEST]``. The command line
(``letterpress issue test``) and the console both call ``send_test``.

Each address is its own provider call, so one refused address does not hide what
happened to the others, and the answer says, address by address, what the provider
did. A test recipient is subscriber 0: its unsubscribe and click links name nobody.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.audience.subscribers import normalise_email
from pipeline.errors import ConfigError
from pipeline.render.emaillint import email_warnings
from pipeline.render.emails import ONE_CLICK
from pipeline.sending.parts import SendingParts
from pipeline.sending.preview import render_issue
from pipeline.sending.providers.base import Message, ProviderError

MAX_ADDRESSES = 10
PREFIX = "[TEST] "


@dataclass
class TestSend:
    """What a test send did: the addresses the provider took, those it refused (address
    -> its reason, in words), and what Gmail or Outlook cannot show of the email."""

    issue_id: int
    subject: str
    provider: str
    sent: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def addresses(given: Sequence[str]) -> list[str]:
    """The addresses, normalised, each once; ``ConfigError`` saying which one is wrong,
    or when there are none or more than ``MAX_ADDRESSES``."""
    found: list[str] = []
    for item in given:
        item = item.strip()
        if not item:
            continue
        try:
            address = normalise_email(item)
        except ValueError as exc:
            raise ConfigError(f"{item!r} is not an email address: {exc}") from None
        if address not in found:
            found.append(address)
    if not found:
        raise ConfigError("give at least one address to send the test to")
    if len(found) > MAX_ADDRESSES:
        raise ConfigError(f"a test goes to at most {MAX_ADDRESSES} addresses, not {len(found)}")
    return found


def send_test(rt: SendingParts, issue_id: int, given: Sequence[str]) -> TestSend:
    """Render the issue as subscribers will get it and send it to ``given``."""
    targets = addresses(given)
    email = render_issue(rt, issue_id)
    message = Message(
        subject=f"{PREFIX}{email.subject}",
        html=email.html.replace("%%name%%", "%%name_html%%"),
        text=email.text,
        from_name=rt.settings.sender_name,
        from_email=rt.settings.sender_email,
        tag=f"issue-{issue_id}-test",
        headers=dict(ONE_CLICK),
        metadata={"issue": f"{issue_id}-test", "batch": f"test-{issue_id}-{time.time_ns()}"},
    )
    done = TestSend(
        issue_id, message.subject, rt.settings.provider, warnings=email_warnings(email.html)
    )
    for index, address in enumerate(targets):
        key = f"{message.metadata['batch']}-{index}"
        recipient = rt.sender._recipient(issue_id, 0, address, "")
        try:
            result = rt.provider.send(message, [recipient], key)
        except ProviderError as exc:
            done.refused[address] = str(exc) or type(exc).__name__
            continue
        if 0 in result.rejected:
            done.refused[address] = result.rejected[0]
        elif 0 in result.accepted:
            done.sent.append(address)
        else:
            done.refused[address] = "the provider did not say it took this message"
    return done
