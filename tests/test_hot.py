"""Hot articles, ranked by engagement in a real Redis, with time decay."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import redis

from pipeline.content.store import FileContentStore
from pipeline.render import hot
from pipeline.settings import Settings
from tests.conftest import CONTENT

DAY = 86400.0


def published(settings: Settings) -> list:  # type: ignore[type-arg]
    return list(FileContentStore(CONTENT, settings).catalog().articles.values())


def engagement(
    make_settings: Callable[..., Settings], redis_url: str, **kw: object
) -> hot.Engagement:
    settings = make_settings(redis_url=redis_url, redis_prefix="lptest", **kw)
    result = hot.Engagement.from_settings(settings)
    assert result is not None
    return result


def test_without_data_the_most_recent_come_first_as_in_the_seed(settings: Settings) -> None:
    ranked = hot.rank(published(settings), {}, size=4,
                      exclude=["vitamin-k2-for-directing-calcium-to-bones"])  # fmt: skip
    cards = hot.cards(ranked, settings)
    assert [(c.label, c.title, c.subtitle) for c in cards] == [
        ("Symptom Decoder Series", "Early Warning Signs You Ignore",
         "The Subtle Signals Your Body Sends Long Before Disease Appears"),
        ("Mental & Cognitive Health", "Anxiety Without a Trigger: Could It Be a Magnesium…",
         "When Anxiety Appears Out of Nowhere, the Cause Is Often Biochemical — Not Psychological"),
        ("Vitamin Deficiency Symptoms", "Burning Feet at Night? Check These Vitamin Deficiencies",
         "Burning Feet at Night? Check These Vitamin Deficiencies"),
        ("Digestive Health & Absorption", "Poor Appetite but Constant Fatigue",
         "Poor Appetite but Constant Fatigue"),
    ]  # fmt: skip


def test_engagement_ranks_and_clicks_weigh_more_than_views(
    make_settings: Callable[..., Settings], redis_url: str, redis_client: redis.Redis
) -> None:
    e = engagement(make_settings, redis_url)
    now = time.time()
    for _ in range(2):
        e.record_view("poor-appetite-but-constant-fatigue", at=now)
    e.record_click("the-role-of-vitamin-k2-in-calcium-distribution", at=now)  # weight 3 > 2 views
    ranked = hot.rank(published(e.settings), e.scores(), size=3)
    assert [a.slug for a in ranked] == [
        "the-role-of-vitamin-k2-in-calcium-distribution",
        "poor-appetite-but-constant-fatigue",
        "early-warning-signs-you-ignore",  # no data: most recent fills the rest
    ]
    assert redis_client.exists("lptest:hot:views", "lptest:hot:clicks") == 2


def test_old_engagement_decays(
    make_settings: Callable[..., Settings], redis_url: str, redis_client: redis.Redis
) -> None:
    e = engagement(make_settings, redis_url, hot_half_life_hours=24.0)
    now = time.time()
    for _ in range(10):  # ten views a week ago: 10 / 2**7 ≈ 0.08 now
        e.record_view("burning-feet-at-night-vitamin-deficiencies", at=now - 7 * DAY)
    e.record_view("poor-appetite-but-constant-fatigue", at=now)  # one view now
    ranked = hot.rank(published(e.settings), e.scores(), size=2)
    assert [a.slug for a in ranked] == [
        "poor-appetite-but-constant-fatigue", "burning-feet-at-night-vitamin-deficiencies"
    ]  # fmt: skip
    scores = e.scores()
    ratio = (
        scores["burning-feet-at-night-vitamin-deficiencies"]
        / scores["poor-appetite-but-constant-fatigue"]
    )
    assert abs(ratio - 10 / 2**7) < 1e-9


def test_rescaling_keeps_the_order(
    make_settings: Callable[..., Settings], redis_url: str, redis_client: redis.Redis
) -> None:
    e = engagement(make_settings, redis_url, hot_half_life_hours=1.0)
    start = time.time()
    e.record_view("early-warning-signs-you-ignore", at=start)
    e.record_click("poor-appetite-but-constant-fatigue", at=start + 70 * 3600)  # forces a rescale
    e.record_view("burning-feet-at-night-vitamin-deficiencies", at=start + 70 * 3600)
    assert float(redis_client.get("lptest:hot:landmark") or 0) == start + 70 * 3600
    scores = e.scores()
    assert scores["poor-appetite-but-constant-fatigue"] == 3.0
    assert scores["burning-feet-at-night-vitamin-deficiencies"] == 1.0
    assert "early-warning-signs-you-ignore" not in scores  # decayed to nothing and pruned


def test_pinned_first_drafts_current_and_excluded_never(
    make_settings: Callable[..., Settings],
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    import dataclasses

    e = engagement(make_settings, redis_url)
    articles = published(e.settings)
    by_slug = {a.slug: a for a in articles}
    by_slug["the-role-of-vitamin-k2-in-calcium-distribution"] = dataclasses.replace(
        by_slug["the-role-of-vitamin-k2-in-calcium-distribution"], pinned=True
    )
    by_slug["early-warning-signs-you-ignore"] = dataclasses.replace(
        by_slug["early-warning-signs-you-ignore"], status="draft"
    )
    for _ in range(5):
        e.record_click("early-warning-signs-you-ignore")  # a draft: never shown
        e.record_click("poor-appetite-but-constant-fatigue")
    ranked = hot.rank(by_slug.values(), e.scores(), size=4,
                      exclude=["vitamin-k2-for-directing-calcium-to-bones",
                               "burning-feet-at-night-vitamin-deficiencies"])  # fmt: skip
    assert [a.slug for a in ranked] == [
        "the-role-of-vitamin-k2-in-calcium-distribution",  # pinned
        "poor-appetite-but-constant-fatigue",  # engagement
        "anxiety-without-a-trigger-magnesium-deficiency",  # most recent of the rest
    ]
    assert len(hot.rank(by_slug.values(), {}, size=1)) == 1


def test_without_redis_or_with_redis_down_the_fallback_is_used(
    make_settings: Callable[..., Settings],
) -> None:
    assert hot.Engagement.from_settings(make_settings()) is None
    assert hot.current_scores(None) == {}
    down = hot.Engagement.from_settings(make_settings(redis_url="redis://127.0.0.1:1/0"))
    assert hot.current_scores(down) == {}


def test_titles_are_cut_to_nine_words_like_the_theme() -> None:
    assert hot.trim_words("Anxiety Without a Trigger: Could It Be a Magnesium Deficiency?", 9) == (
        "Anxiety Without a Trigger: Could It Be a Magnesium…"
    )
    assert hot.trim_words("Burning Feet at Night? Check These Vitamin Deficiencies", 9) == (
        "Burning Feet at Night? Check These Vitamin Deficiencies"
    )
