"""Signed tokens for links in emails (unsubscribe, preferences, click tracking).

A token is ``<subscriber>.<issue>.<mac>``: the ids in the clear, then the first 128
bits of HMAC-SHA256 over the purpose and the ids, keyed by ``secret_key``. Nobody can
guess or forge one without the key, a token for one purpose is worthless for another,
and making one costs about a microsecond, so a million recipients can have theirs
without slowing the send.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass

from .errors import ConfigError

PURPOSES = ("unsubscribe", "preferences", "confirm", "click", "view")


@dataclass(frozen=True)
class Claim:
    subscriber_id: int
    issue_id: int


class Signer:
    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ConfigError(
                "secret_key is missing or shorter than 16 characters: set LETTERPRESS_SECRET_KEY"
                " in the environment (for example: python -c 'import secrets;"
                " print(secrets.token_urlsafe(32))')"
            )
        self._hmac = hmac.new(secret.encode("utf-8"), digestmod="sha256")

    def _mac(self, purpose: str, subscriber_id: int, issue_id: int) -> str:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        mac = self._hmac.copy()  # the keyed state is computed once, not per token
        mac.update(f"{purpose}|{subscriber_id}|{issue_id}".encode())
        digest = mac.digest()
        return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")

    def sign(self, purpose: str, subscriber_id: int, issue_id: int = 0) -> str:
        return f"{subscriber_id}.{issue_id}.{self._mac(purpose, subscriber_id, issue_id)}"

    def verify(self, purpose: str, token: str) -> Claim | None:
        """The claim a genuine token carries, or None for anything else."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        subscriber_id, issue_id = int(parts[0]), int(parts[1])
        expected = self._mac(purpose, subscriber_id, issue_id)
        if not hmac.compare_digest(expected.encode("ascii"), parts[2].encode("ascii", "replace")):
            return None
        return Claim(subscriber_id, issue_id)
