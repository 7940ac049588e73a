"""The ways the double misbehaves on request, as the real services do: ``Fault``.

The state (``state.DoubleState``) holds the list and rolls the dice under its lock; each
provider module turns a fault into that provider's own answer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

PROVIDERS = ("mailgun", "sendgrid", "postmark")
KINDS = ("throttle", "error", "slow", "drop", "reject")


@dataclass
class Fault:
    """One way to misbehave, on the send endpoints of ``provider`` (None: all three).

    ``kind``:
      throttle   ``status`` (429; Mailgun also used 420) with the provider's hint: Mailgun
                 "try again after N seconds" in the body, SendGrid ``X-RateLimit-Reset``
                 (epoch seconds), Postmark ``Retry-After``
      error      ``status`` (500, or 503, ...) with the provider's error body
      slow       answer ``delay`` seconds late (after recording)
      drop       record the recipients as accepted, then close the connection unanswered
      reject     the ``addresses`` are refused: Postmark answers ErrorCode 406 (inactive
                 recipient) for their messages; Mailgun and SendGrid accept the call and
                 drop them, as they do for suppressed addresses

    It applies to each request with probability ``rate``, at most ``count`` times (None:
    no limit); for ``reject``, per refused address."""

    kind: str
    provider: str | None = None
    rate: float = 1.0
    count: int | None = None
    retry_after: float = 1.0
    status: int | None = None  # default: 429 to throttle, 500 for an error
    delay: float = 1.0
    addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.provider is not None and self.provider not in PROVIDERS:
            raise ValueError(f"unknown provider {self.provider!r} (one of {', '.join(PROVIDERS)})")
        if not 0 <= self.rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if self.count is not None and self.count < 0:
            raise ValueError("count must not be negative")
        if self.kind == "error":
            self.status = self.status or 500
            if not 500 <= self.status < 600:
                raise ValueError("an error fault's status must be 5xx")
        if self.kind == "throttle":
            self.status = self.status or 429
            if self.status not in (420, 429):
                raise ValueError("a throttle fault's status must be 429 or 420")
        self.addresses = tuple(a.lower() for a in self.addresses)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault field {sorted(unknown)[0]!r}")
        values = dict(data)
        if "addresses" in values:
            values["addresses"] = tuple(values["addresses"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "addresses": list(self.addresses)}

    @property
    def code(self) -> int:
        """The HTTP status a throttle or error fault answers with."""
        return self.status or 500

    @property
    def answers(self) -> bool:
        """Whether it answers in place of the endpoint (throttle or error)."""
        return self.kind in ("throttle", "error")

    def roll(self, rng: random.Random) -> bool:
        """Whether it applies this time (spending one of ``count`` if so)."""
        if self.count is not None and self.count <= 0:
            return False
        if self.rate < 1 and rng.random() >= self.rate:
            return False
        if self.count is not None:
            self.count -= 1
        return True
