"""Send-rate limits: token buckets in a real Redis (database 15) and in one process.

Timing bounds are generous: a bucket may never hand out more than ``burst`` plus
``rate * elapsed`` tokens (plus a token or two of slack for the last call), and a busy
caller should get most of that.
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
from pipeline.sending.ratelimit import LocalRateLimiter, RateLimiter, RateLimitTimeout
from pipeline.settings import Settings
from pipeline.store.keys import Keys

Bucket = RateLimiter | LocalRateLimiter
MakeBucket = Callable[[float, int], Bucket]

KEY = Keys("lptest").rate("test-account")
Report = tuple[str, int, int]  # ("ready" | "taken", process id, tokens taken)


@pytest.fixture(params=["redis", "local"])
def make_bucket(request: pytest.FixtureRequest) -> MakeBucket:
    """A fresh bucket: in Redis (one shared key) or in this process."""
    if request.param == "local":
        return LocalRateLimiter
    client: redis.Redis = request.getfixturevalue("redis_client")
    return lambda rate, burst: RateLimiter(client, KEY, rate, burst)


def take_for(limiter: Bucket, seconds: float) -> tuple[int, float]:
    """Take one token at a time for ``seconds``: (tokens taken, seconds elapsed)."""
    taken = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        limiter.acquire(1, max_wait=1.0)
        taken += 1
    return taken, time.monotonic() - started


def assert_rate(taken: int, elapsed: float, rate: float, burst: int) -> None:
    allowed = burst + rate * elapsed
    assert taken <= allowed + 2, f"{taken} tokens in {elapsed:.2f} s, at most {allowed:.0f}"
    assert taken >= 0.8 * allowed, f"{taken} tokens in {elapsed:.2f} s, about {allowed:.0f}"


# --- one bucket, Redis or local -------------------------------------------------------------


def test_the_rate_is_met(make_bucket: MakeBucket) -> None:
    limiter = make_bucket(50, 10)

    taken, elapsed = take_for(limiter, 2.0)

    assert_rate(taken, elapsed, rate=50, burst=10)


def test_a_full_bucket_serves_a_burst_at_once(make_bucket: MakeBucket) -> None:
    limiter = make_bucket(1, 20)

    assert limiter.acquire(20, max_wait=0) == 0.0
    with pytest.raises(RateLimitTimeout):
        limiter.acquire(1, max_wait=0)


def test_more_than_burst_is_taken_in_parts(make_bucket: MakeBucket) -> None:
    limiter = make_bucket(100, 10)

    started = time.monotonic()
    waited = limiter.acquire(35, max_wait=2.0)

    # 10 at once, then 25 more at 100 a second.
    assert 0.2 <= waited <= 0.6, waited
    assert 0.2 <= time.monotonic() - started <= 0.8


def test_an_impossible_wait_fails_at_once(make_bucket: MakeBucket) -> None:
    limiter = make_bucket(100, 10)

    started = time.monotonic()
    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire(1000, max_wait=1.0)

    assert time.monotonic() - started < 0.1
    assert caught.value.needed == pytest.approx(9.9)
    assert "1000 message(s) cannot be sent within 1 s" in str(caught.value)
    # Nothing was taken: the whole burst is still there.
    assert limiter.acquire(10, max_wait=0) == 0.0


def test_penalise_holds_off_and_never_shortens(make_bucket: MakeBucket) -> None:
    limiter = make_bucket(1000, 100)
    limiter.penalise(0.6)
    limiter.penalise(0.1)  # a shorter "retry after" does not end the longer hold
    held = time.monotonic()

    with pytest.raises(RateLimitTimeout) as caught:
        limiter.acquire(1, max_wait=0.3)
    assert caught.value.needed > 0.4
    assert time.monotonic() - held < 0.1, "it should not sleep when it cannot succeed"

    limiter.acquire(1, max_wait=2.0)
    assert time.monotonic() - held >= 0.58


def test_a_timeout_gives_back_the_tokens_already_taken(make_bucket: MakeBucket) -> None:
    limiter = make_bucket(10, 10)
    limiter.acquire(5, max_wait=0)  # 5 left
    # The first 10 come after 0.5 s; then a 429 arrives while the last 5 are awaited.
    timer = threading.Timer(0.7, limiter.penalise, args=(1.0,))
    timer.start()
    try:
        with pytest.raises(RateLimitTimeout):
            limiter.acquire(15, max_wait=1.2)
    finally:
        timer.join()

    # The 10 taken for the failed call are back: after the hold (about 0.95 s more),
    # 10 tokens are there at once instead of refilling for another second.
    waited = limiter.acquire(10, max_wait=3.0)
    assert 0.7 <= waited <= 1.4, waited


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


def test_penalise_holds_every_worker_off(redis_url: str, redis_client: redis.Redis) -> None:
    other = redis.Redis.from_url(redis_url)
    try:
        one = RateLimiter(redis_client, KEY, 1000, 100)
        two = RateLimiter(other, KEY, 1000, 100)
        one.penalise(0.5)
        held = time.monotonic()

        with pytest.raises(RateLimitTimeout):
            two.acquire(1, max_wait=0.2)
        two.acquire(1, max_wait=2.0)

        assert time.monotonic() - held >= 0.48
    finally:
        other.close()


def test_a_waiting_worker_asks_again_in_slices(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, KEY, 100, 10)
    limiter.penalise(3.0)
    done: queue.Queue[float] = queue.Queue()
    started = time.monotonic()
    waiter = threading.Thread(target=lambda: done.put(limiter.acquire(1, max_wait=5.0)))
    waiter.start()

    time.sleep(0.3)
    redis_client.delete(KEY)  # the hold is lifted (as when the bucket expires)
    waiter.join(timeout=5)

    assert not done.empty(), "the waiting worker never finished"
    assert time.monotonic() - started < 1.0, "it slept the whole hold instead of asking again"


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
    time.sleep(0.25)
    assert redis_client.exists(KEY) == 0
    assert limiter.acquire(10, max_wait=0) == 0.0

    limiter.penalise(2.0)
    assert 2000 <= redis_client.pttl(KEY) <= 2102


def test_for_account_uses_the_settings_and_the_key_prefix(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings(redis_prefix="lptest", send_rate=5.0, send_burst=3)

    limiter = RateLimiter.for_account(redis_client, settings, "mailgun:mg.example.org")
    limiter.acquire(3, max_wait=0)

    assert limiter.key == "lptest:rate:mailgun:mg.example.org"
    assert (limiter.rate, limiter.burst) == (5.0, 3)
    assert redis_client.exists("lptest:rate:mailgun:mg.example.org") == 1
    with pytest.raises(RateLimitTimeout):
        limiter.acquire(1, max_wait=0.1)


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


# --- one process, several threads -----------------------------------------------------------


def test_threads_share_a_local_bucket() -> None:
    limiter = LocalRateLimiter(50, 5)
    counts: queue.Queue[int] = queue.Queue()
    started = time.monotonic()
    threads = [
        threading.Thread(target=lambda: counts.put(take_for(limiter, 1.5)[0])) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    total = sum(counts.get_nowait() for _ in threads)
    assert_rate(total, elapsed, rate=50, burst=5)
