"""Group commit for the service's hottest writes: clicks, one-click unsubscribes and
readers' replies.

Each server process has one writer thread. A request hands its write to it and waits;
the thread takes every write waiting at that moment and applies them in one
transaction, then answers each request. So a request is answered only once what it
records is committed, but a thousand requests a second cost tens of commits, not a
thousand, and no request thread waits on the database lock (SQLite) or holds a pool
connection (PostgreSQL). If a group fails, its writes are retried one transaction each,
so one bad write never takes the others with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pipeline.audience import consent
from pipeline.audience.tracking import Click, record_clicks
from pipeline.render.hot import Engagement
from pipeline.replies import threads
from pipeline.replies.threads import Closed, NewReply, Posted
from pipeline.settings import Settings
from pipeline.statuses import ReplyStatus

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

MAX_GROUP = 500  # writes per transaction at most


@dataclass(frozen=True)
class Unsubscribe:
    subscriber_id: int
    list_id: int
    via: str


Write = Click | Unsubscribe | NewReply
Result = bool | Posted | Closed


class _Pending:
    __slots__ = ("future", "loop", "write")

    def __init__(self, write: Write, loop: asyncio.AbstractEventLoop) -> None:
        self.write = write
        self.loop = loop
        self.future: asyncio.Future[Result] = loop.create_future()


class GroupWriter:
    def __init__(
        self, engine: Engine, settings: Settings, engagement: Engagement | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.engagement = engagement
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._file_lock = _process_lock(engine)
        self._conn: Connection | None = None  # the writer thread's own

    async def submit(self, write: Write) -> Result:
        """Apply ``write``; returns once it is committed. For a click: whether it counts
        as engagement; for an unsubscribe: whether anything changed; for a reply: what
        became of it (``threads.post``)."""
        pending = _Pending(write, asyncio.get_running_loop())
        self._start()
        self._queue.put(pending)
        return await pending.future

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="letterpress-writer", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            group = [self._queue.get()]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                with self._file_lock(), self._transaction() as conn:
                    results = apply(conn, self.settings, [p.write for p in group])
            except Exception:
                log.warning("a group of %d writes failed; writing them one by one", len(group))
                for pending in group:
                    self._one(pending)
                continue
            self._rank([(p.write, r) for p, r in zip(group, results, strict=True) if r])
            for pending, result in zip(group, results, strict=True):
                _answer(pending, result)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A transaction on the writer's own connection, kept between groups (a pool
        checkout and its ping per group cost a round trip each); one that failed is
        closed, and the next group opens another."""
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.engine.connect()
        conn = self._conn
        try:
            with conn.begin():
                yield conn
        except Exception:
            self._conn = None
            conn.close()
            raise

    def _one(self, pending: _Pending) -> None:
        try:
            with self._file_lock(), self._transaction() as conn:
                result = apply(conn, self.settings, [pending.write])[0]
        except Exception as exc:
            log.exception("a %s could not be written", type(pending.write).__name__.lower())
            _answer(pending, exc)
            return
        if result:
            self._rank([(pending.write, result)])
        _answer(pending, result)

    def _rank(self, done: Sequence[tuple[Write, Result]]) -> None:
        """Engaged clicks on articles and replies published at once count for the hot
        articles: after the commit (the ranking is a cache of what is stored; Redis
        being down loses a little of it), before the answer (a reader who clicks sees
        the ranking include it)."""
        if self.engagement is None:
            return
        try:
            self.engagement.record_clicks(
                w.slug for w, _ in done if isinstance(w, Click) and w.slug is not None
            )
            self.engagement.record_replies(
                r.slug
                for _, r in done
                if isinstance(r, Posted) and r.status is ReplyStatus.APPROVED
            )
        except Exception as exc:  # redis.RedisError and OSError alike
            log.warning("could not rank clicks in Redis: %s", exc)


def _process_lock(engine: Engine) -> Callable[[], AbstractContextManager[None]]:
    """For SQLite, a file lock that the server processes' writers queue on: the kernel
    wakes the next one when the lock is free, where SQLite's own busy handler would
    poll with sleeps of up to 100 ms. Other databases need none."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return contextlib.nullcontext
    path = Path(database).with_name(Path(database).name + ".writer.lock")
    opened: list[IO[str]] = []  # once, for the life of the process (its writer thread)

    @contextlib.contextmanager
    def locked() -> Iterator[None]:
        if not opened:
            opened.append(path.open("a"))
        fcntl.flock(opened[0], fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(opened[0], fcntl.LOCK_UN)

    return locked


def _answer(pending: _Pending, result: Result | BaseException) -> None:
    def settle() -> None:
        if pending.future.done():  # the request went away
            return
        if isinstance(result, BaseException):
            pending.future.set_exception(result)
        else:
            pending.future.set_result(result)

    pending.loop.call_soon_threadsafe(settle)


def apply(conn: Connection, settings: Settings, writes: Sequence[Write]) -> list[Result]:
    """Apply the writes, in order, inside ``conn``'s transaction."""
    results: list[Result] = [False] * len(writes)
    clicks = [(i, w) for i, w in enumerate(writes) if isinstance(w, Click)]
    if clicks:
        engaged = record_clicks(conn, settings, [c for _, c in clicks])
        for (i, _), counts in zip(clicks, engaged, strict=True):
            results[i] = counts
    leaving = [(i, w) for i, w in enumerate(writes) if isinstance(w, Unsubscribe)]
    everything = [(i, u) for i, u in leaving if not u.list_id]
    for via in {u.via for _, u in everything}:
        ids = [u.subscriber_id for _, u in everything if u.via == via]
        changed = consent.leave_everything(conn, ids, via)
        for i, u in everything:
            if u.via == via and u.subscriber_id in changed:
                results[i] = True
                changed.discard(u.subscriber_id)  # a repeated request changed nothing
    for i, u in leaving:
        if u.list_id:
            results[i] = consent.leave(conn, u.subscriber_id, u.list_id, u.via)
    replies = [(i, w) for i, w in enumerate(writes) if isinstance(w, NewReply)]
    if replies:
        posted = threads.post_many(conn, settings, [w for _, w in replies])
        for (i, _), result in zip(replies, posted, strict=True):
            results[i] = result
    return results
