"""The hot articles block: engagement ranked with time decay, pinned articles first.

Views, and email clicks with approved replies, are kept in two Redis sorted sets with
*forward decay*: an event at time ``t`` adds ``weight * 2 ** ((t - landmark) /
half_life)``, so a newer event counts more and ranking needs no periodic job. When the
multiplier grows large the script rescales both sets and moves the landmark,
atomically. With no Redis (or no data), articles fall back to the most recent first.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.content.article import Article
from pipeline.settings import Settings
from pipeline.store.keys import Keys

if TYPE_CHECKING:  # redis is imported only where Redis is configured
    import redis

log = logging.getLogger(__name__)

# KEYS: views, clicks, landmark. ARGV: which set (1|2), slug, weight, now, half-life (s).
_RECORD = """
local now = tonumber(ARGV[4])
local half_life = tonumber(ARGV[5])
local landmark = tonumber(redis.call('GET', KEYS[3]))
if not landmark then
  landmark = now
  redis.call('SET', KEYS[3], ARGV[4])
end
local age = (now - landmark) / half_life
if age > 64 then
  local factor = 2 ^ (-age)
  for i = 1, 2 do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      redis.call('ZUNIONSTORE', KEYS[i], 1, KEYS[i], 'WEIGHTS', factor)
      redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', 1e-9)
    end
  end
  redis.call('SET', KEYS[3], ARGV[4])
  age = 0
end
return redis.call('ZINCRBY', KEYS[tonumber(ARGV[1])], tonumber(ARGV[3]) * 2 ^ age, ARGV[2])
"""


@dataclass(frozen=True)
class HotCard:
    """One entry of the block, as the seed shows it."""

    slug: str
    label: str
    title: str  # as shown, cut to hot_title_words
    subtitle: str
    full_title: str


class Engagement:
    """Views, clicks and replies in Redis; each ``record_…`` is cheap and atomic."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self._record = client.register_script(_RECORD)

    @classmethod
    def from_settings(cls, settings: Settings) -> Engagement | None:
        if not settings.redis_url:
            return None
        import redis

        return cls(redis.Redis.from_url(settings.redis_url, socket_timeout=5), settings)

    def _add(self, which: int, slug: str, weight: float, at: float | None) -> None:
        now = time.time() if at is None else at
        half_life = self.settings.hot_half_life_hours * 3600
        keys = [self.keys.hot_views, self.keys.hot_clicks, self.keys.hot_landmark]
        self._record(keys=keys, args=[which, slug, weight, now, half_life])

    def record_view(self, slug: str, at: float | None = None) -> None:
        self._add(1, slug, self.settings.hot_view_weight, at)

    def record_click(self, slug: str, at: float | None = None) -> None:
        self._add(2, slug, self.settings.hot_click_weight, at)

    def record_clicks(self, slugs: Iterable[str]) -> None:
        """Several clicks at once: one call per article (decay is linear in the weight)."""
        for slug, n in Counter(slugs).items():
            self._add(2, slug, self.settings.hot_click_weight * n, None)

    def record_replies(self, slugs: Iterable[str]) -> None:
        """Approved replies (``hot_reply_weight`` each), counted with the clicks."""
        for slug, n in Counter(slugs).items():
            self._add(2, slug, self.settings.hot_reply_weight * n, None)

    def scores(self) -> dict[str, float]:
        """Weighted, decayed engagement per slug (only relative sizes mean anything)."""
        pairs: Any = self.client.zunion(
            [self.keys.hot_views, self.keys.hot_clicks],
            aggregate="SUM",
            withscores=True,
        )
        return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in pairs}


def current_scores(engagement: Engagement | None) -> dict[str, float]:
    """Scores from Redis, or none when Redis is not configured or not reachable."""
    if engagement is None:
        return {}
    import redis

    try:
        return engagement.scores()
    except redis.RedisError as exc:
        log.warning("hot articles: Redis unavailable (%s); using most recent first", exc)
        return {}


def rank(
    articles: Iterable[Article],
    scores: dict[str, float],
    *,
    size: int,
    exclude: Sequence[str] = (),
) -> list[Article]:
    """Pinned first (newest first), then by engagement, then the most recent."""
    skip = set(exclude)
    candidates = [a for a in articles if a.is_published and a.slug not in skip]

    def recency(a: Article) -> float:
        return (a.published or a.modified).timestamp()

    def order(a: Article) -> tuple[int, float, float, str]:
        score = scores.get(a.slug, 0.0)
        return (0 if a.pinned else 1, -score if not a.pinned else 0.0, -recency(a), a.slug)

    return sorted(candidates, key=order)[:size]


def trim_words(text: str, words: int) -> str:
    """Shorten a title to ``words`` words with an ellipsis, as the site's theme does."""
    parts = text.split()
    return text if len(parts) <= words else " ".join(parts[:words]) + "…"


def cards(articles: Iterable[Article], settings: Settings) -> list[HotCard]:
    return [
        HotCard(
            slug=a.slug,
            label=a.category,
            title=trim_words(a.title, settings.hot_title_words),
            subtitle=a.subtitle or a.summary,
            full_title=a.title,
        )
        for a in articles
    ]
