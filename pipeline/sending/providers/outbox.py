"""The embedded default provider: every message becomes a file instead of an email.

``{outbox_dir}/issue-{issue}/{subscriber_id}.eml``, written atomically
(``pipeline.files.atomic_write``: a temporary file in the same folder, then a rename).
Writing the same recipient again replaces the file, so a retry can never deliver
twice. The batch key travels in an ``X-Letterpress-Batch`` header, which is how
``accepted`` answers later.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.parser import HeaderParser
from email.utils import parseaddr
from pathlib import Path

from pipeline.files import atomic_write
from pipeline.sending import dkim
from pipeline.sending.providers import mime
from pipeline.sending.providers.base import BatchResult, Message, Recipient, Transient, build_each
from pipeline.settings import Settings

LIMIT = 100
BATCH_HEADER = "X-Letterpress-Batch"
_HEAD_BYTES = 65536  # the headers are well inside the first 64 KiB
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class OutboxProvider:
    name = "outbox"
    idempotent = True

    def __init__(self, settings: Settings) -> None:
        self.root = Path(settings.outbox_dir)
        self.max_batch = min(LIMIT, settings.batch_size or LIMIT)
        self.signer = dkim.signer(settings)

    def folder(self, message: Message) -> Path:
        """``issue-<id>`` for an issue, ``<kind>`` for other mail (``signup-confirm``)."""
        kind = _UNSAFE.sub("_", message.metadata.get("kind", ""))
        if kind and "issue" not in message.metadata:
            return self.root / kind
        issue = _UNSAFE.sub("_", message.metadata.get("issue", "")) or "unknown"
        return self.root / f"issue-{issue}"

    def send(self, message: Message, recipients: Sequence[Recipient], key: str) -> BatchResult:
        folder = self.folder(message)
        result = BatchResult()

        def render(recipient: Recipient) -> tuple[bytes, str]:
            # A file can hold an internationalised message (RFC 6532) for any address.
            return mime.render(
                message,
                recipient,
                signer=self.signer,
                headers={BATCH_HEADER: key},
                utf8=True,
                channel="the outbox",
            )

        built = build_each(recipients, render, result.rejected, self.name)
        try:
            for recipient, (data, message_id) in built:
                name = f"{recipient.subscriber_id}.eml"
                # other mail, and test sends (subscriber 0): one file per message
                if "issue" not in message.metadata or not recipient.subscriber_id:
                    name = f"{recipient.subscriber_id}-{_UNSAFE.sub('_', key)}.eml"
                atomic_write(folder / name, data)
                result.accepted[recipient.subscriber_id] = message_id
        except OSError as exc:
            raise Transient(f"outbox: cannot write into {folder}: {exc}", partial=result) from exc
        return result

    def accepted(self, key: str, since: datetime) -> set[str] | None:
        """Addresses (in lower case, as the files carry them) of the files last written for
        batch ``key``."""
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        oldest = since.timestamp() - 2  # file times may be coarser than the clock
        found: set[str] = set()
        parser = HeaderParser()
        for path in self.root.glob("issue-*/*.eml"):
            try:
                if path.stat().st_mtime < oldest:
                    continue
                with path.open("rb") as file:
                    head = file.read(_HEAD_BYTES).decode("utf-8", "replace")
                headers = parser.parsestr(head)
            except OSError:  # replaced or removed meanwhile
                continue
            if headers.get(BATCH_HEADER, "").strip() == key:
                found.add(parseaddr(str(headers.get("To", "")))[1].lower())
        return found

    def close(self) -> None:
        pass
