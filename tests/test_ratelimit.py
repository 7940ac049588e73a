"""Send-rate limits: token buckets in a real Redis (database 15) and in one process.

The local bucket runs on a fake clock (``FakeTime``: sleeping moves it on at once), so
its arithmetic is checked exactly, whatever the machine's load. The Redis bucket runs
on the Redis server's clock (``TIME`` in its Lua script), which a test cannot move:
its tests check what does not depend on time passing (a fake ``sleep`` records what
the limiter would wait), and a few real-time ones hold it to the rate and the holds
with bounds that load cannot break (waiting longer only lowers what a caller takes).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event as MpEvent

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.errors import LetterpressError
from pipeline.sending.parts import SendingParts
from pipeline.sending.ratelimit import LocalRateLimiter, RateLimiter, RateLimitTimeout
from pipeline.settings import Settings
from pipeline.store.keys import Keys
from tests.cluster import wait_for

Bucket = RateLimiter | LocalRateLimiter
MakeBucket = Callable[[float, int], Bucket]

KEY = Keys("lptest").rate("test-account")
Report = tuple[str, int, int]  # ("ready" | "taken", process id, tokens taken)


class FakeTime:
    """A clock that moves only when told, and a ``sleep`` that moves it at once.

    ``at(when, action)`` runs ``action`` once a sleep brings the clock to ``when``
    (something another worker does meanwhile). Times and rates in these tests are
    chosen to be exact in binary floating point, so results compare with ``==``."""

    def __init__(self, start: float = 1024.0) -> None:
        self.now = start
        self.start = start
        self.sleeps: list[float] = []
        self._due: list[tuple[float, Callable[[], object]]] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for due in [d for d in self._due if d[0] <= self.now - self.start]:
            self._due.remove(due)
            due[1]()

    def at(self, when: float, action: Callable[[], object]) -> None:
        self._due.append((when, action))

    @property
    def elapsed(self) -> float:
        return self.now - self.start


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def local(fake: FakeTime) -> Callable[[float, int], LocalRateLimiter]:
    """A fresh bucket in this process, on the fake clock."""
    return lambda rate, burst: LocalRateLimiter(rate, burst, clock=fake.clock, sleep=fake.sleep)


@pytest.fixture(params=["redis", "local"])
def make_bucket(request: pytest.FixtureRequest, fake: FakeTime) -> MakeBucket:
    """A fresh bucket: in Redis (one shared key) or in this process; either way its
    sleeping is ``fake.sleep`` (Redis time goes on regardless)."""
    if request.param == "local":
        return lambda rate, burst: LocalRateLimiter(rate, burst, clock=fake.clock, sleep=fake.sleep)
    client: redis.Redis = request.getfixturevalue("redis_client")
    return lambda rate, burst: RateLimiter(
        client, KEY, rate, burst, clock=fake.clock, sleep=fake.sleep
    )


def take_for(limiter: Bucket, seconds: float) -> tuple[int, float]:
    """Take one token at a time for ``seconds`` of the limiter's clock: (tokens taken,
    seconds elapsed)."""
    taken = 0
    started = limiter.clock()
    while limiter.clock() - started < seconds:
        limiter.acquire(1, max_wait=1.0)
        taken += 1
    return taken, limiter.clock() - started


# --- the bucket's arithmetic, on a fake clock -----------------------------------------------


def test_the_rate_is_met(local: Callable[[float, int], LocalRateLimiter], fake: FakeTime) -> None:
    limiter = local(64, 8)

    taken, elapsed = take_for(limiter, 2.0)

    # The full bucket at once, then one token every 1/64 s: exactly burst + rate * time.
    assert (taken, elapsed) == (8 + 64 * 2, 2.0)
    assert set(fake.sleeps) == {1 / 64}


def test_more_than_burst_is_taken_in_parts(
    local: Callable[[float, int], LocalRateLimiter], fake: FakeTime
) -> None:
    limiter = local(128, 16)

    waited = limiter.acquire(48, max_wait=2.0)

    # 16 at once, then 16 more twice, each as soon as 16 / 128 s have refilled them.
    assert waited == 0.25
    assert fake.sleeps == [0.125, 0.125]
    assert fake.elapsed == 0.25


def test_penalise_holds_off_then_the_tokens_come(
    local: Callable[[float, int], LocalRateLimiter], fake: FakeTime
) -> None:
    limiter = local(1000, 100)
    limiter.penalise(0.625)
    limiter.penalise(0.125)  # a shorter "retry after" does not end the longer hold

    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire(1, max_wait=0.5)
    assert caught.value.needed == 0.625
    assert fake.sleeps == [], "it should not sleep when it cannot succeed"

    # Asked again after each slice of sleep (max_sleep), until the hold ends.
    assert limiter.acquire(1, max_wait=2.0) == 0.625
    assert fake.sleeps == [0.25, 0.25, 0.125]


def test_a_timeout_gives_back_the_tokens_already_taken(
    local: Callable[[float, int], LocalRateLimiter], fake: FakeTime
) -> None:
    limiter = local(10, 10)
    limiter.acquire(5, max_wait=0)  # 5 left
    # The first 10 come after 0.5 s; then a 429 arrives while the last 5 are awaited.
    fake.at(0.75, lambda: limiter.penalise(1.0))

    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire(15, max_wait=1.25)

    # At 0.75 s: held until 1.75 s, and the last 5 need 2.5 more tokens after it.
    assert fake.elapsed == 0.75
    assert caught.value.needed == 1.25
    # The 10 taken for the failed call are back: once the hold ends, 10 tokens are
    # there at once instead of refilling for another 0.75 s.
    assert limiter.acquire(10, max_wait=3.0) == 1.0
    assert fake.elapsed == 1.75


def test_threads_share_a_local_bucket(fake: FakeTime) -> None:
    # The clock stands still while the threads drain the bucket: exactly its tokens are
    # handed out, however the threads interleave.
    limiter = LocalRateLimiter(100, 50, clock=fake.clock, sleep=fake.sleep)
    counts: queue.Queue[int] = queue.Queue()
    start = threading.Barrier(4)

    def drain() -> None:
        taken = 0
        start.wait()
        try:
            while True:
                limiter.acquire(1, max_wait=0)
                taken += 1
        except RateLimitTimeout:
            counts.put(taken)

    for refill in (0.0, 0.25, 10.0):
        fake.advance(refill)
        threads = [threading.Thread(target=drain) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
            assert not thread.is_alive(), "a thread never stopped taking tokens"
        total = sum(counts.get_nowait() for _ in threads)
        # Full at first; 0.25 s refill 25 tokens; 10 s refill it to the burst, no more.
        assert total == {0.0: 50, 0.25: 25, 10.0: 50}[refill]
    assert fake.sleeps == []


# --- either bucket: what does not wait ------------------------------------------------------


def test_a_full_bucket_serves_a_burst_at_once(make_bucket: MakeBucket, fake: FakeTime) -> None:
    limiter = make_bucket(1, 20)

    assert limiter.acquire(20, max_wait=0) == 0.0
    with pytest.raises(RateLimitTimeout):
        limiter.acquire(1, max_wait=0)
    assert fake.sleeps == []


def test_an_impossible_wait_fails_at_once(make_bucket: MakeBucket, fake: FakeTime) -> None:
    limiter = make_bucket(100, 10)

    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire(1000, max_wait=1.0)

    assert fake.sleeps == []
    assert caught.value.needed == pytest.approx(9.9)
    assert "1000 message(s) cannot be sent within 1 s" in str(caught.value)
    # Nothing was taken: the whole burst is still there.
    assert limiter.acquire(10, max_wait=0) == 0.0


def test_penalise_never_shortens_and_never_sleeps_in_vain(
    make_bucket: MakeBucket, fake: FakeTime
) -> None:
    limiter = make_bucket(1000, 100)
    limiter.penalise(5.0)
    limiter.penalise(0.1)  # a shorter "retry after" does not end the longer hold

    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire(1, max_wait=0.3)

    # (Redis time goes on between the calls: the hold has a little less to run there.)
    assert 4.0 < caught.value.needed <= 5.0 + 1e-6  # (stored to the microsecond)
    assert fake.sleeps == [], "it should not sleep when it cannot succeed"


def test_the_state_shows_the_tokens_and_a_hold_and_changes_nothing(
    make_bucket: MakeBucket, fake: FakeTime
) -> None:
    limiter = make_bucket(1000, 100)
    full = limiter.state()
    assert (full.tokens, full.burst, full.rate, full.held_for) == (100, 100, 1000, 0)

    limiter.acquire(60, max_wait=0)
    assert limiter.state().tokens == pytest.approx(40, abs=1)  # Redis time runs on a little
    limiter.penalise(5.0)
    held = limiter.state()
    assert 4.0 < held.held_for <= 5.0 + 1e-6
    assert limiter.state().tokens == pytest.approx(held.tokens, abs=1e-6)  # no refill in a hold
    with pytest.raises(RateLimitTimeout):  # reading took nothing and lifted nothing
        limiter.acquire(1, max_wait=0.3)


def test_bad_arguments_are_refused(make_bucket: MakeBucket) -> None:
    limiter = make_bucket(10, 10)
    with pytest.raises(ValueError, match="negative"):
        limiter.acquire(-1, max_wait=1)
    with pytest.raises(ValueError, match="max_wait"):
        limiter.acquire(1, max_wait=-1)
    assert limiter.acquire(0, max_wait=0) == 0.0
    with pytest.raises(ValueError, match="rate"):
        make_bucket(0, 10)
    with pytest.raises(ValueError, match="burst"):
        make_bucket(10, 0)


def test_the_timeout_is_a_timeout_error_and_a_letterpress_error(make_bucket: MakeBucket) -> None:
    limiter = make_bucket(1, 1)
    limiter.acquire(1, max_wait=0)

    with pytest.raises(TimeoutError) as caught:
        limiter.acquire(1, max_wait=0)

    assert isinstance(caught.value, LetterpressError)
    assert isinstance(caught.value, RateLimitTimeout)


# --- shared by every worker: Redis ----------------------------------------------------------


def test_the_rate_is_met_in_redis(redis_client: redis.Redis) -> None:
    # Real time (the one Redis test of the refill itself). Never more than the bucket
    # allows, whatever the load; the lower bound only catches a bucket far too stingy.
    limiter = RateLimiter(redis_client, KEY, 50, 10)

    taken, elapsed = take_for(limiter, 2.0)

    allowed = 10 + 50 * elapsed
    assert taken <= allowed + 2, f"{taken} tokens in {elapsed:.2f} s, at most {allowed:.0f}"
    assert taken >= 0.5 * allowed, f"{taken} tokens in {elapsed:.2f} s, about {allowed:.0f}"


def test_penalise_holds_every_worker_off(redis_url: str, redis_client: redis.Redis) -> None:
    other = redis.Redis.from_url(redis_url)
    try:
        one = RateLimiter(redis_client, KEY, 1000, 100)
        two = RateLimiter(other, KEY, 1000, 100)
        held = time.monotonic()  # before the hold starts: it ends 1 s after this, or later
        one.penalise(1.0)

        with pytest.raises(RateLimitTimeout):
            two.acquire(1, max_wait=0.2)
        two.acquire(1, max_wait=3.0)

        assert time.monotonic() - held >= 0.99
    finally:
        other.close()


def test_a_waiting_worker_asks_again_in_slices(redis_client: redis.Redis, fake: FakeTime) -> None:
    def lift_the_hold(seconds: float) -> None:
        fake.sleep(seconds)
        redis_client.delete(KEY)  # the hold is lifted (as when the bucket expires)

    limiter = RateLimiter(redis_client, KEY, 100, 10, clock=fake.clock, sleep=lift_the_hold)
    limiter.penalise(3.0)

    slept = limiter.acquire(1, max_wait=5.0)

    # One slice (max_sleep), then it asked again and found the tokens.
    assert fake.sleeps == [0.25] and slept == 0.25


def _take_in_turn(
    url: str, key: str, start: MpEvent, seconds: float, results: multiprocessing.Queue[Report]
) -> None:
    """One worker process: take tokens one at a time for ``seconds`` after ``start``."""
    client = redis.Redis.from_url(url)
    limiter = RateLimiter(client, key, 40, 5)
    results.put(("ready", os.getpid(), 0))
    start.wait(30)
    taken, _elapsed = take_for(limiter, seconds)
    results.put(("taken", os.getpid(), taken))
    client.close()


@pytest.mark.slow
def test_two_processes_share_one_bucket(redis_url: str, redis_client: redis.Redis) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    results: multiprocessing.Queue[Report] = ctx.Queue()
    seconds = 2.0
    workers = [
        ctx.Process(target=_take_in_turn, args=(redis_url, KEY, start, seconds, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        ready = [results.get(timeout=60) for _ in workers]
        assert all(what == "ready" for what, _, _ in ready)
        start.set()
        reports = [results.get(timeout=30) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
                worker.join()

    counts = {pid: taken for _, pid, taken in reports}
    assert len(counts) == 2 and os.getpid() not in counts
    total = sum(counts.values())
    # Both run for `seconds` from the same start: together they get one bucket's worth
    # (alone, each would get about that much, 85 tokens).
    allowed = 5 + 40 * (seconds + 0.1)
    assert total <= allowed + 2, counts
    assert total >= 0.8 * 40 * seconds, counts
    assert min(counts.values()) >= 0.2 * total, f"one worker was starved: {counts}"


def test_an_idle_bucket_expires(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, KEY, 100, 10)

    limiter.acquire(10, max_wait=0)

    fields = redis_client.hgetall(KEY)
    assert set(fields) == {b"tokens", b"ts"}
    seconds, micros = redis_client.time()
    assert float(fields[b"ts"]) == pytest.approx(seconds + micros / 1e6, abs=1.0)
    # It is full again after 10 / 100 s, and then it is the same as no bucket at all.
    assert 0 < redis_client.pttl(KEY) <= 102
    wait_for(lambda: redis_client.exists(KEY) == 0, 5, "the idle bucket to expire", every=0.02)
    assert limiter.acquire(10, max_wait=0) == 0.0

    limiter.penalise(2.0)
    assert 2000 <= redis_client.pttl(KEY) <= 2102


def test_the_sending_parts_limiter_uses_the_settings_and_the_key_prefix(
    make_settings: Callable[..., Settings], redis_url: str, redis_client: redis.Redis
) -> None:
    settings = make_settings(
        redis_url=redis_url,
        redis_prefix="lptest",
        send_rate=5.0,
        send_burst=3,
        provider="mailgun",
        mailgun_domain="mg.example.org",
    )
    parts = SendingParts(settings)
    try:
        limiter = parts.limiter
        assert isinstance(limiter, RateLimiter)
        limiter.acquire(3, max_wait=0)

        assert limiter.key == "lptest:rate:mailgun:mg.example.org"
        assert (limiter.rate, limiter.burst) == (5.0, 3)
        assert redis_client.exists("lptest:rate:mailgun:mg.example.org") == 1
        with pytest.raises(RateLimitTimeout):
            limiter.acquire(1, max_wait=0.1)
    finally:
        parts.redis.close()


def test_redis_unreachable_raises_its_connection_error() -> None:
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = redis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    limiter = RateLimiter(client, KEY, 10, 10)

    with pytest.raises(redis.ConnectionError):
        limiter.acquire(1, max_wait=1)
    with pytest.raises(redis.ConnectionError):
        limiter.penalise(5)
    client.close()
