"""Send-rate limits: one token bucket per provider account, shared by every worker.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; sending a
message costs one token. ``RateLimiter`` keeps the bucket in Redis, so every worker
process on every host draws from the same one. One Lua script does each step
atomically and reads the time from Redis (``TIME``), so the workers' own clocks never
matter. The bucket is a hash, ``{tokens, ts}``, that expires when it would be full
again: an idle bucket disappears, and a missing bucket counts as a full one.

``acquire(n, max_wait)`` blocks until ``n`` tokens are taken, asking again after each
slice of sleep; more than ``burst`` tokens are taken in parts as the bucket refills.
``penalise(seconds)`` lets nobody take tokens (nor the bucket refill) until then, for every
worker at once: what a provider's 429 with "retry after N seconds" calls for.

``LocalRateLimiter`` is the same bucket inside one process, for running without Redis.

Time: ``RateLimiter``'s bucket runs on the Redis server's clock (``TIME``, read inside
the Lua script), which no caller can replace. What is read in Python, the time spent
waiting in ``acquire`` (against ``max_wait``) and the sleeping itself, comes from the
``clock`` and ``sleep`` each limiter is given (``time.monotonic`` and ``time.sleep`` by
default); ``LocalRateLimiter`` keeps its bucket on that ``clock`` too, so a test can
drive it with a fake clock and get exact results.
Every worker should build its limiter for an account with the same ``rate`` and
``burst`` (``send_rate`` and ``send_burst``); with different values, the last step
taken decides.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.errors import LetterpressError

if TYPE_CHECKING:  # redis is imported only where Redis is configured
    import redis

log = logging.getLogger(__name__)

# KEYS: the bucket. ARGV: rate (tokens/s), burst, operation, amount.
#   take    take `amount` (<= burst) tokens if they are all there and no hold is on
#   refund  give back `amount` tokens that were taken but not used
#   hold    no taking and no refill until `amount` seconds from now
# `ts` is when `tokens` was counted; while a hold is on, it is the hold's end.
# Returns {1, '0'} when done, or {0, seconds} when `take` has to wait that long.
# Numbers are stored and returned as text: a Lua number in a reply becomes an integer.
_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local op = ARGV[3]
local amount = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
if now > ts then
  tokens = tokens + (now - ts) * rate
  ts = now
end
tokens = math.min(tokens, burst)
if op == 'take' then
  if ts > now or tokens + 1e-9 < amount then
    return {0, string.format('%.9f', (ts - now) + math.max(amount - tokens, 0) / rate)}
  end
  tokens = math.max(tokens - amount, 0)
elseif op == 'refund' then
  tokens = math.min(tokens + amount, burst)
elseif op == 'hold' then
  ts = math.max(ts, now + amount)
else
  return redis.error_reply('unknown bucket operation: ' .. op)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'ts', string.format('%.6f', ts))
local full = (ts - now) + (burst - tokens) / rate
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.ceil(full * 1000) + 1))
return {1, '0'}
"""


class RateLimitTimeout(LetterpressError, TimeoutError):
    """The tokens could not be had within ``max_wait``: send later (a transient condition)."""

    def __init__(self, n: int, max_wait: float, needed: float, where: str) -> None:
        self.n = n
        self.max_wait = max_wait
        self.needed = needed  # seconds it would have taken at least, as last reported
        super().__init__(
            f"send rate limit {where}: {n} message(s) cannot be sent within {max_wait:g} s"
            f" (at least {needed:.3g} s needed); try again later"
        )


@dataclass(frozen=True)
class BucketState:
    """The bucket as an operator sees it: tokens there now (of ``burst``), the refill
    ``rate`` a second, and how long a hold after a provider's 429 still lasts."""

    where: str
    tokens: float
    burst: int
    rate: float
    held_for: float  # seconds; 0 when no hold is on


def _settled(
    tokens: float | None, ts: float | None, now: float, rate: float, burst: int
) -> tuple[float, float]:
    """(tokens now, seconds of hold left) from what the bucket stored, as the script
    counts them; a missing bucket is a full one."""
    if tokens is None or ts is None:
        return float(burst), 0.0
    if now > ts:
        tokens += (now - ts) * rate
    return min(tokens, float(burst)), max(ts - now, 0.0)


class Limiter(Protocol):
    """What a sender needs: wait for room to send ``n``, and hold off after a 429."""

    def acquire(self, n: int, max_wait: float) -> float: ...

    def penalise(self, seconds: float) -> None: ...

    def state(self) -> BucketState: ...


class _TokenBucket:
    """The waiting shared by both limiters; subclasses keep the bucket."""

    # Longest single sleep before asking the bucket again.
    max_sleep = 0.25

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be above 0 tokens a second, not {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst!r}")
        self.rate = float(rate)
        self.burst = int(burst)
        self.clock = clock  # seconds, for the waiting (and the local bucket)
        self.sleep = sleep

    def _where(self) -> str:
        raise NotImplementedError

    def _take(self, n: int) -> tuple[bool, float]:
        """Take ``n`` (at most ``burst``) tokens: (True, 0) if taken, else (False, wait)."""
        raise NotImplementedError

    def _refund(self, n: int) -> None:
        raise NotImplementedError

    def _hold(self, seconds: float) -> None:
        raise NotImplementedError

    def acquire(self, n: int, max_wait: float) -> float:
        """Take ``n`` tokens, sleeping as needed; return the seconds slept.

        Raises ``RateLimitTimeout`` as soon as the bucket says the tokens cannot be had
        within ``max_wait`` seconds, and gives back the tokens already taken for ``n``.
        """
        if n < 0:
            raise ValueError(f"cannot take a negative number of tokens ({n})")
        if max_wait < 0:
            raise ValueError(f"max_wait must not be negative ({max_wait!r})")
        # Even from a full bucket, the part beyond `burst` has to be refilled first.
        least = max(0, n - self.burst) / self.rate
        if least > max_wait:
            raise RateLimitTimeout(n, max_wait, least, self._where())
        started = self.clock()
        slept = 0.0
        taken = 0
        while taken < n:
            part = min(self.burst, n - taken)
            ok, wait = self._take(part)
            if ok:
                taken += part
                continue
            needed = wait + (n - taken - part) / self.rate
            if needed > max_wait - (self.clock() - started):
                if taken:
                    self._refund(taken)
                raise RateLimitTimeout(n, max_wait, needed, self._where())
            pause = min(wait, self.max_sleep)
            self.sleep(pause)
            slept += pause
        return slept

    def state(self) -> BucketState:
        """What the bucket holds now; reading it changes nothing."""
        raise NotImplementedError

    def penalise(self, seconds: float) -> None:
        """Nobody gets tokens for ``seconds`` (a provider's "retry after"); never shortens."""
        if seconds > 0:
            log.info("send rate %s: holding off for %.3g s", self._where(), seconds)
            self._hold(float(seconds))


class RateLimiter(_TokenBucket):
    """A token bucket in Redis under ``key``, shared by every process that names it.

    Redis errors (``redis.ConnectionError`` when it cannot be reached) pass through
    unchanged: callers treat them as transient.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # The bucket itself runs on Redis time (the script's TIME): ``clock`` only
        # measures this caller's waiting against ``max_wait``.
        super().__init__(rate, burst, clock, sleep)
        self.client = client
        self.key = key
        self._script = client.register_script(_BUCKET)

    def _where(self) -> str:
        return self.key

    def _call(self, op: str, amount: float) -> tuple[bool, float]:
        reply: Any = self._script(keys=[self.key], args=[self.rate, self.burst, op, amount])
        done, wait = reply
        return int(done) == 1, float(wait)

    def _take(self, n: int) -> tuple[bool, float]:
        return self._call("take", n)

    def _refund(self, n: int) -> None:
        self._call("refund", n)

    def _hold(self, seconds: float) -> None:
        self._call("hold", seconds)

    def state(self) -> BucketState:
        pipe = self.client.pipeline(transaction=True)  # both read at the same instant
        pipe.hmget(self.key, "tokens", "ts")
        pipe.time()
        (tokens, ts), (seconds, micros) = pipe.execute()
        tokens_now, held = _settled(
            None if tokens is None else float(tokens),
            None if ts is None else float(ts),
            int(seconds) + int(micros) / 1_000_000,
            self.rate,
            self.burst,
        )
        return BucketState(self.key, tokens_now, self.burst, self.rate, held)


class LocalRateLimiter(_TokenBucket):
    """The same bucket for one process (its threads included), without Redis."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(rate, burst, clock, sleep)
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._ts = clock()

    def _where(self) -> str:
        return "(this process)"

    def _refill(self) -> float:
        """Bring the count up to now (the lock is held); return now."""
        now = self.clock()
        if now > self._ts:
            self._tokens += (now - self._ts) * self.rate
            self._ts = now
        self._tokens = min(self._tokens, self.burst)
        return now

    def _take(self, n: int) -> tuple[bool, float]:
        with self._lock:
            now = self._refill()
            if self._ts > now or self._tokens + 1e-9 < n:
                return False, (self._ts - now) + max(n - self._tokens, 0.0) / self.rate
            self._tokens = max(self._tokens - n, 0.0)
            return True, 0.0

    def _refund(self, n: int) -> None:
        with self._lock:
            self._refill()
            self._tokens = min(self._tokens + n, self.burst)

    def _hold(self, seconds: float) -> None:
        with self._lock:
            now = self._refill()
            self._ts = max(self._ts, now + seconds)

    def state(self) -> BucketState:
        with self._lock:
            tokens, held = _settled(self._tokens, self._ts, self.clock(), self.rate, self.burst)
        return BucketState(self._where(), tokens, self.burst, self.rate, held)
