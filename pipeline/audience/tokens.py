"""Signed tokens for links in emails (unsubscribe, preferences, click tracking).

A token is ``<subscriber>.<ref>.<mac>``: two numbers in the clear, then the first 128
bits of HMAC-SHA256 over the purpose and the numbers, keyed by ``secret_key``. What the
second number means depends on the purpose: the issue for ``click`` and ``view``, the
list for ``unsubscribe`` (0: every list), the hour it was issued for ``confirm``,
``export`` and ``delete`` (so those expire), 0 for ``preferences``. The reply form's
token (``reply``) carries the second it was issued and a checksum of the article's slug;
``reply-notify`` (confirming reply notifications, dated) and ``reply-stop`` carry a
reply's id where the others carry a subscriber's. Nobody can
guess or forge one without the key, a token for one purpose is worthless for another,
and making one costs about a microsecond, so a million recipients can have theirs
without slowing the send.
"""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.settings import Settings

PURPOSES = (
    "unsubscribe", "preferences", "confirm", "click", "view", "export", "delete",
    "reply", "reply-notify", "reply-stop",
)  # fmt: skip


@dataclass(frozen=True)
class Claim:
    subscriber_id: int
    ref: int

    @property
    def issue_id(self) -> int:
        return self.ref


class Signer:
    """Signs with ``secret``; verifies with it and with the ``previous`` keys, so that
    rotating the key (the old one moves to ``LETTERPRESS_PREVIOUS_SECRET_KEYS``) leaves
    the links in mail already delivered working."""

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        if len(secret) < 16:
            raise ConfigError(
                "secret_key is missing or shorter than 16 characters: set LETTERPRESS_SECRET_KEY"
                " in the environment (for example: python -c 'import secrets;"
                " print(secrets.token_urlsafe(32))')"
            )
        if any(len(key) < 16 for key in previous):
            raise ConfigError(
                "LETTERPRESS_PREVIOUS_SECRET_KEYS holds a key shorter than 16 characters:"
                " list the earlier values of LETTERPRESS_SECRET_KEY, separated by commas"
            )
        self._hmac = hmac.new(secret.encode("utf-8"), digestmod="sha256")
        self._verifiers = [self._hmac] + [
            hmac.new(key.encode("utf-8"), digestmod="sha256") for key in previous
        ]

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        return cls(settings.secret_key.get_secret_value(), settings.previous_keys)

    def _mac(self, purpose: str, subscriber_id: int, ref: int, keyed: Any = None) -> str:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        mac = (keyed or self._hmac).copy()  # the keyed state is computed once, not per token
        mac.update(f"{purpose}|{subscriber_id}|{ref}".encode())
        digest = mac.digest()
        return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")

    def sign(self, purpose: str, subscriber_id: int, ref: int = 0) -> str:
        return f"{subscriber_id}.{ref}.{self._mac(purpose, subscriber_id, ref)}"

    def verify(self, purpose: str, token: str) -> Claim | None:
        """The claim a genuine token carries, or None for anything else."""
        parts = token.split(".")
        if len(parts) != 3 or not _number(parts[0]) or not _number(parts[1]):
            return None
        subscriber_id, ref = int(parts[0]), int(parts[1])
        given = parts[2].encode("ascii", "replace")
        for keyed in self._verifiers:
            expected = self._mac(purpose, subscriber_id, ref, keyed)
            if hmac.compare_digest(expected.encode("ascii"), given):
                return Claim(subscriber_id, ref)
        return None

    def sign_dated(self, purpose: str, subscriber_id: int) -> str:
        """A token that ``verify_dated`` accepts for ``max_hours`` from now."""
        return self.sign(purpose, subscriber_id, int(time.time() // 3600))

    def verify_dated(self, purpose: str, token: str, max_hours: float) -> Claim | None:
        claim = self.verify(purpose, token)
        if claim is None or time.time() // 3600 - claim.ref > max_hours:
            return None
        return claim


def _number(text: str) -> bool:
    # ASCII digits only, and no longer than a 64-bit id: str.isdigit() takes "²" too.
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit()
