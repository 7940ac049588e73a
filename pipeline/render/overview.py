"""The articles as an editor looks them over: every article of the content store with
its status, category and dates, the problems ``letterpress check`` finds in it
(``path:line: message``), its web page, and its engagement: the views and email clicks
kept for the hot block (weighted and decayed, ``hot.Engagement``) and its place in that
block's ranking (``hot.rank``). Files that do not parse into an article at all are
listed with their problems on their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.content.article import Article
from pipeline.content.check import check
from pipeline.errors import Problem
from pipeline.render import hot
from pipeline.render.hot import Engagement
from pipeline.render.policy import article_url
from pipeline.settings import Settings
from pipeline.store.keys import Keys

log = logging.getLogger(__name__)


@dataclass
class ArticleLine:
    article: Article
    url: str
    problems: list[Problem] = field(default_factory=list)
    views: float = 0.0
    clicks: float = 0.0
    rank: int | None = None  # place in the hot ranking (1 is first); None if unpublished
    in_hot: bool = False  # within the hot block's hot_size


@dataclass
class Overview:
    articles: list[ArticleLine]
    unreadable: list[Problem]  # problems of files that are no article
    engagement: bool  # False: no Redis, or it did not answer (counts are all 0)
    hot_size: int


def _scores(engagement: Engagement, key: str) -> dict[str, float]:
    pairs: Any = engagement.client.zrange(key, 0, -1, withscores=True)
    return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in pairs}


def counts(engagement: Engagement | None) -> tuple[dict[str, float], dict[str, float]] | None:
    """Views and clicks per slug, or None when Redis is not configured or not answering."""
    if engagement is None:
        return None
    import redis

    keys = Keys(engagement.settings.redis_prefix)
    try:
        return _scores(engagement, keys.hot_views), _scores(engagement, keys.hot_clicks)
    except redis.RedisError as exc:
        log.warning("articles overview: Redis unavailable (%s)", exc)
        return None


def overview(
    settings: Settings, engagement: Engagement | None, content_dir: Path | None = None
) -> Overview:
    catalog, problems = check(settings, content_dir)
    found = counts(engagement)
    views, clicks = found if found is not None else ({}, {})
    scores = {s: views.get(s, 0.0) + clicks.get(s, 0.0) for s in {*views, *clicks}}
    ranked = hot.rank(catalog.articles.values(), scores, size=len(catalog.articles))
    place = {a.slug: n for n, a in enumerate(ranked, 1)}
    by_path: dict[str, list[Problem]] = {}
    for problem in problems:
        by_path.setdefault(problem.path, []).append(problem)
    lines = []
    for article in sorted(catalog.articles.values(), key=lambda a: (-a.date.timestamp(), a.slug)):
        rank = place.get(article.slug)
        lines.append(
            ArticleLine(
                article,
                article_url(settings, article.slug),
                by_path.pop(article.path, []),
                views.get(article.slug, 0.0),
                clicks.get(article.slug, 0.0),
                rank,
                rank is not None and rank <= settings.hot_size,
            )
        )
    unreadable = [p for path in sorted(by_path) for p in by_path[path]]
    return Overview(lines, unreadable, found is not None, settings.hot_size)
