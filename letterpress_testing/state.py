"""What the double remembers, and the records it is made of.

``DoubleState`` counts every recipient accepted (in lower case, so a second copy to one
address shows as a duplicate), keeps messages and raw requests when asked, stores the
answers to idempotent requests, logs the Mailgun and Postmark calls their read
endpoints list, and holds the faults. Every change happens under its ``lock``.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from letterpress_testing.faults import Fault
from letterpress_testing.parsing import parse_form


@dataclass
class Answer:
    """What an endpoint answers; the HTTP handler writes it (or drops the connection)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    drop: bool = False

    @classmethod
    def of(cls, status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> Answer:
        return cls(status, json.dumps(data).encode(), headers=headers or [])


@dataclass(frozen=True)
class KeptMessage:
    """What one address received, after the provider's personalisation."""

    provider: str
    sender: str
    to: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]


@dataclass(frozen=True)
class CapturedRequest:
    """One request as it arrived (``keep_requests``)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        """A header's value, whatever the case of its name ("" when absent)."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), "")

    def form(self) -> list[tuple[str, str]]:
        """The form fields of a Mailgun call, in order."""
        return parse_form(self.header("Content-Type"), self.body)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class MailgunCall:
    """One accepted Mailgun send, for the events endpoint."""

    at: float
    domain: str
    message_id: str
    sender: str
    subject: str
    tags: list[str]
    variables: dict[str, str]
    addresses: list[str]


@dataclass
class PostmarkCall:
    """The accepted messages of one Postmark batch, for the message search."""

    at: float
    first_seq: int  # message i has the id made from first_seq + i
    sender: list[str]
    addresses: list[tuple[str, ...]]
    metadata: list[dict[str, str]]
    tags: list[str]
    streams: list[str]
    subjects: list[str]  # only with keep_messages
    positions: list[int]  # index in the call (refused messages have none)


class DoubleState:
    """Everything the server remembers; every change happens under ``lock``."""

    def __init__(
        self,
        *,
        mailgun_key: str,
        sendgrid_key: str,
        postmark_token: str,
        keep_messages: bool = False,
        keep_requests: bool = False,
        idempotency: bool = True,
        seed: int | None = None,
    ) -> None:
        self.mailgun_key = mailgun_key
        self.sendgrid_key = sendgrid_key
        self.postmark_token = postmark_token
        self.keep_messages = keep_messages
        self.keep_requests = keep_requests
        self.idempotency = idempotency
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.faults: list[Fault] = []
        self.rng = random.Random(seed)
        self._id_prefix = random.getrandbits(64)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.counts: dict[str, int] = {}
            self.accepted = 0
            self.duplicates = 0
            self.requests = 0
            self.statuses: Counter[str] = Counter()
            self.by_provider: Counter[str] = Counter()
            self.suppressed = 0
            self.replayed = 0
            self.dropped = 0
            self.seq = 0
            self.mailgun_calls: list[MailgunCall] = []
            self.postmark_calls: list[PostmarkCall] = []
            self.answers: dict[tuple[str, str], tuple[int, list[tuple[str, str]], bytes]] = {}
            self.messages: dict[str, list[KeptMessage]] = {}
            self.captured: list[CapturedRequest] = []
            self.faults = []

    # Faults

    def set_faults(self, faults: Iterable[Fault], seed: int | None = None) -> None:
        with self.lock:
            self.faults = list(faults)
            if seed is not None:
                self.rng = random.Random(seed)

    def pick(self, provider: str) -> tuple[Fault | None, float]:
        """The fault that decides this request (throttle, error or drop), and any delay."""
        delay = 0.0
        with self.lock:
            for fault in self.faults:
                if fault.provider not in (None, provider) or fault.kind == "reject":
                    continue
                if fault.roll(self.rng):
                    if fault.kind == "slow":
                        delay += fault.delay
                    else:
                        return fault, delay
        return None, delay

    def refused(self, provider: str, address: str) -> bool:
        """Whether a reject fault refuses this address now (counted as suppressed)."""
        with self.lock:
            for fault in self.faults:
                if (
                    fault.kind == "reject"
                    and fault.provider in (None, provider)
                    and address in fault.addresses
                    and fault.roll(self.rng)
                ):
                    self.suppressed += 1
                    return True
        return False

    # Recording (callers hold the lock)

    def record(self, provider: str, address: str) -> str:
        """Count one accepted copy to ``address`` (lower case); the caller holds the lock."""
        count = self.counts.get(address)
        if count is None:
            self.counts[address] = 1
        else:
            self.counts[address] = count + 1
            self.duplicates += 1
        self.accepted += 1
        self.by_provider[provider] += 1
        return address

    def keep(self, address: str, message: KeptMessage) -> None:
        """Keep what ``address`` received; the caller holds the lock."""
        self.messages.setdefault(address, []).append(message)

    def next_ids(self, n: int) -> int:
        with self.lock:
            first = self.seq
            self.seq += n
            return first

    def message_uuid(self, seq: int) -> str:
        return str(uuid.UUID(int=(self._id_prefix << 64) | seq))

    # Idempotency

    def replay(self, provider: str, key: str) -> Answer | None:
        """The stored answer to an ``Idempotency-Key`` already answered with success."""
        if not (key and self.idempotency):
            return None
        with self.lock:
            stored = self.answers.get((provider, key))
            if stored is None:
                return None
            self.replayed += 1
        status, headers, body = stored
        return Answer(status, zlib.decompress(body), headers=list(headers))

    def remember(self, provider: str, key: str, answer: Answer) -> None:
        if key and self.idempotency and 200 <= answer.status < 300:
            packed = (answer.status, list(answer.headers), zlib.compress(answer.body, 1))
            with self.lock:
                self.answers[(provider, key)] = packed

    def finish(
        self, provider: str, key: str, answer: Answer, fault: Fault | None, delay: float
    ) -> Answer:
        """A send's answer, remembered for its key, late or dropped as the faults say."""
        self.remember(provider, key, answer)
        answer.delay = delay
        answer.drop = fault is not None and fault.kind == "drop"
        return answer

    # Reports

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "accepted": self.accepted,
                "unique": len(self.counts),
                "duplicates": self.duplicates,
                "requests": self.requests,
                "statuses": dict(self.statuses),
                "providers": dict(self.by_provider),
                "suppressed": self.suppressed,
                "replayed": self.replayed,
                "dropped": self.dropped,
            }

    def recipients(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)
