"""Fixed-window request limits (sign-ups per IP and per address, console sign-ins per IP
and per account).

In Redis when it is configured, so every server process shares the count; in this
process otherwise. Keys hold a keyed hash of the IP or address, never the value. An IPv6 client is
counted by its /64 network (``client_of``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import threading
import time
from typing import Any

from starlette.requests import Request

IPV6_NETWORK = 64  # one subscriber line or host gets a /64: it is counted as one


def client_of(request: Request) -> str:
    """Whom a per-address limit counts: the client's IPv4 address, or the /64 network of
    its IPv6 address (one host has a whole /64 to take new addresses from)."""
    host = request.client.host if request.client else ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/{IPV6_NETWORK}", strict=False))
    return str(ip)


# DECR only a key that exists: one that has expired is not brought back without a TTL.
_FORGIVE = """
if redis.call('exists', KEYS[1]) == 1 and tonumber(redis.call('get', KEYS[1])) > 0 then
  return redis.call('decr', KEYS[1])
end
return 0
"""


class Limits:
    def __init__(self, redis: Any | None, prefix: str, secret: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._key = secret.encode("utf-8")
        self._local: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def _name(self, kind: str, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
        return f"{self.prefix}:limit:{kind}:{digest}"

    def hit(self, kind: str, value: str, limit: int, window: int) -> int:
        """Count one request; 0 if it is within ``limit`` per ``window`` seconds, else the
        seconds until the window ends."""
        key = self._name(kind, value)
        if self.redis is not None:
            pipe = self.redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
            pipe.ttl(key)
            count, _, ttl = pipe.execute()
            return 0 if int(count) <= limit else max(int(ttl), 1)
        now = time.monotonic()
        with self._lock:
            count, until = self._local.get(key, (0, now + window))
            if until <= now:
                count, until = 0, now + window
            self._local[key] = (count + 1, until)
            if len(self._local) > 100_000:  # forget ended windows
                self._local = {k: v for k, v in self._local.items() if v[1] > now}
        return 0 if count + 1 <= limit else max(int(until - now), 1)

    def hit_all(self, hits: list[tuple[str, str, int, int]]) -> int:
        """Count one request against each (kind, value, limit, window) at once (one
        round trip to Redis); 0 if it is within every limit, else the longest wait."""
        if self.redis is None:
            return max((self.hit(*h) for h in hits), default=0)
        pipe = self.redis.pipeline(transaction=False)
        for kind, value, _, window in hits:
            key = self._name(kind, value)
            pipe.incr(key)
            pipe.expire(key, window, nx=True)
            pipe.ttl(key)
        answers = pipe.execute()
        wait = 0
        for i, (_, _, limit, _) in enumerate(hits):
            count, ttl = answers[3 * i], answers[3 * i + 2]
            if int(count) > limit:
                wait = max(wait, max(int(ttl), 1))
        return wait

    def forgive(self, kind: str, value: str) -> None:
        """Take back one request counted by ``hit`` (a sign-in that succeeded), if its
        window is still open."""
        key = self._name(kind, value)
        if self.redis is not None:
            self.redis.eval(_FORGIVE, 1, key)
            return
        with self._lock:
            count, until = self._local.get(key, (0, 0.0))
            if count > 0 and until > time.monotonic():
                self._local[key] = (count - 1, until)

    def first(self, kind: str, value: str, window: int) -> bool:
        """True the first time ``value`` is seen in ``window`` seconds (a page view)."""
        key = self._name(kind, value)
        if self.redis is not None:
            return bool(self.redis.set(key, 1, nx=True, ex=window))
        return self.hit(kind, value, 1, window) == 0
