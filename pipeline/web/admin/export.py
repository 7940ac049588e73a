"""The subscriber export as an HTTP answer: ``exports.export_csv`` writes the CSV in
a thread of its own into a bounded pipe, and the answer streams it, so a large export
needs neither the whole file in memory nor a client that reads fast."""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import TextIO, cast

from pipeline.audience import exports
from pipeline.web.service import Service

log = logging.getLogger(__name__)

EXPORT_CHUNK = 64 * 1024  # bytes per piece of the answer
EXPORT_AHEAD = 8  # pieces written ahead of the client at most
EXPORT_STALL_SECONDS = 300.0  # a client that reads nothing this long is given up


class _Stopped(Exception):
    """The client went away (or stalled): the export stops writing."""


class _Pipe(io.TextIOBase):
    """The text stream ``export_csv`` writes in one thread, read as byte pieces in another."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(EXPORT_AHEAD)
        self.stopped = threading.Event()
        self._parts: list[str] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str, /) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= EXPORT_CHUNK:
            self.send()
        return len(text)

    def send(self) -> None:
        if self._parts:
            piece = "".join(self._parts).encode("utf-8")
            self._parts, self._size = [], 0
            self.put(piece)

    def put(self, item: bytes | BaseException | None) -> None:
        deadline = time.monotonic() + EXPORT_STALL_SECONDS
        while not self.stopped.is_set() and time.monotonic() < deadline:
            try:
                self.pieces.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Stopped


def csv_pieces(svc: Service, list_name: str | None, status: str | None) -> Iterator[bytes]:
    """The CSV in pieces, as ``export_csv`` writes it in a thread of its own. An export
    that fails midway ends the answer without its last chunk, so no client takes a
    truncated file for a whole one."""
    pipe = _Pipe()

    def produce() -> None:
        try:
            exports.export_csv(svc.engine, cast(TextIO, pipe), list_name=list_name, status=status)
            pipe.send()
            pipe.put(None)
        except _Stopped:
            pass
        except Exception as exc:
            log.exception("the subscriber export failed")
            with suppress(_Stopped):
                pipe.put(exc)

    writer = threading.Thread(target=produce, name="subscriber-export", daemon=True)
    writer.start()
    try:
        while True:
            try:
                item = pipe.pieces.get(timeout=1.0)
            except queue.Empty:
                if writer.is_alive() or not pipe.pieces.empty():
                    continue
                raise RuntimeError("the subscriber export stopped") from None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise RuntimeError("the subscriber export failed; see the log") from item
            yield item
    finally:
        pipe.stopped.set()
