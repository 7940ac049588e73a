"""The one small interface every mail provider sits behind.

A delivery step hands a provider one frozen ``Message`` (the issue's snapshot, with
merge fields such as ``%%unsubscribe_url%%`` still in it) and up to ``max_batch``
``Recipient``s, each with the values of those fields and its own headers. The
provider fills the fields in its own way (Mailgun recipient-variables, SendGrid
substitutions, or a cheap string substitution per message) and answers with a
``BatchResult``, or raises one of the errors below, which tell the caller whether a
retry is safe.

The network is injected: HTTP adapters take a ``requests.Session``, so tests talk to
a real server on loopback (``letterpress_testing``, the provider double), never to a monkeypatch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from pipeline.audience.addresses import AddressNotSupported
from pipeline.errors import LetterpressError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Message:
    """What every recipient of one batch gets, before personalisation."""

    subject: str
    html: str  # may be empty: a text-only message
    text: str
    from_name: str
    from_email: str
    tag: str  # the campaign, for the provider's statistics
    headers: dict[str, str] = field(default_factory=dict)  # the same for everyone
    metadata: dict[str, str] = field(default_factory=dict)  # issue and batch ids


@dataclass(frozen=True)
class Recipient:
    subscriber_id: int
    email: str
    name: str
    fields: dict[str, str]  # merge field name -> value (see pipeline.merge.MERGE)
    headers: dict[str, str]  # per-recipient headers: List-Unsubscribe


@dataclass
class BatchResult:
    """``accepted``: subscriber id -> provider message id; ``rejected``: id -> reason.

    A recipient in neither was not attempted (the caller treats it as failed)."""

    accepted: dict[int, str] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)


def build_each(
    recipients: Sequence[Recipient],
    build: Callable[[Recipient], T],
    rejected: dict[int, str],
    provider: str,
) -> list[tuple[Recipient, T]]:
    """``build`` for each recipient; one that cannot be built goes into ``rejected`` with
    its reason (an address the channel cannot carry, a header value that cannot be
    written, an encoding error), and the rest of the batch goes on without it."""
    built: list[tuple[Recipient, T]] = []
    for recipient in recipients:
        try:
            _check(recipient)
            built.append((recipient, build(recipient)))
        except AddressNotSupported as exc:
            rejected[recipient.subscriber_id] = str(exc)
        except Exception as exc:  # whatever one recipient's data does, the batch goes on
            log.warning(
                "%s: cannot build the message for subscriber %s",
                provider,
                recipient.subscriber_id,
                exc_info=True,
            )
            rejected[recipient.subscriber_id] = (
                f"{provider}: could not build the message for this recipient:"
                f" {type(exc).__name__}: {exc}"
            )[:500]
    return built


def _check(recipient: Recipient) -> None:
    """What no channel can carry: text that is not Unicode (lone surrogates, from bytes
    decoded badly) and line breaks in a value that becomes a header."""
    headers = (recipient.name, *recipient.headers.values())
    for value in (recipient.email, *recipient.fields.values(), *headers):
        value.encode("utf-8")
    for value in headers:
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError("a line break in the name or a header value would break the headers")


class ProviderError(LetterpressError):
    """The provider call failed; the subclasses say whether to retry.

    ``partial``: what the provider had already confirmed when a call that sends one
    message at a time (SMTP) broke off, or None when nothing is known to be accepted."""

    def __init__(self, message: str = "", *, partial: BatchResult | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class Transient(ProviderError):
    """Nothing was accepted (5xx, refused connection), beyond what ``partial`` lists:
    retrying the rest is safe."""


class Throttled(Transient):
    """Rate-limited (429, Mailgun 420): retry after ``retry_after`` seconds, if known."""

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        *,
        partial: BatchResult | None = None,
    ) -> None:
        super().__init__(message, partial=partial)
        self.retry_after = retry_after


class Ambiguous(ProviderError):
    """The request may have been accepted (timeout or connection lost after sending).

    With ``partial`` set, those recipients were confirmed; the doubt is about the others."""


class Rejected(ProviderError):
    """The whole call was refused for good (bad key, malformed request): do not retry."""


class Provider(Protocol):
    name: str
    max_batch: int  # recipients per call
    idempotent: bool  # a retry with the same key can never deliver twice

    def send(self, message: Message, recipients: Sequence[Recipient], key: str) -> BatchResult:
        """Send one batch. ``key`` is stable across retries of the same batch."""
        ...

    def accepted(self, key: str, since: datetime) -> set[str] | None:
        """Addresses the provider accepted for batch ``key``, or None if it can't tell."""
        ...

    def close(self) -> None: ...
