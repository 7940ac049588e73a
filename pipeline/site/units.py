"""The build's units of work: JSON in, JSON out, run by any ``Pool`` (in this process,
in local processes, or as Celery tasks)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.content.article import Article
from pipeline.files import atomic_write
from pipeline.render import hot
from pipeline.render.markup import Body, Renderer
from pipeline.settings import Settings, load_settings
from pipeline.site.pages import article_page

Unit = dict[str, Any]


@cache
def _renderer(settings_json: str) -> tuple[Settings, Renderer]:
    settings = load_settings(**json.loads(settings_json))
    return settings, Renderer(settings)


def _unit_settings(unit: Unit) -> tuple[Settings, Renderer]:
    return _renderer(json.dumps(unit["settings"], sort_keys=True))


def analyse(unit: Unit) -> Unit:
    """Render the bodies of some articles (parsed by the build, sent as JSON) into the
    body cache; report what they hold."""
    _, renderer = _unit_settings(unit)
    cache_dir = Path(unit["cache_dir"])
    results = []
    for data in unit["articles"]:
        article = Article.from_json(data)
        body = renderer.body(article)
        atomic_write(cache_dir / f"{article.source_hash}.json", json.dumps(body.to_json()))
        results.append(_summary(article.path, article.slug, article.source_hash, body))
    return {"results": results}


def _summary(display: str, slug: str, source_hash: str, body: Body) -> dict[str, Any]:
    return {
        "path": display,
        "hash": source_hash,
        "slug": slug,
        "links": [[link.slug, link.line, link.href] for link in body.links if link.slug],
        "affiliate": bool(body.affiliate_links),
        "problems": [[p.line, p.message] for p in body.problems],
    }


def render_articles(unit: Unit) -> Unit:
    """Render some article pages. Each job carries its article and the cards it shows."""
    settings, renderer = _unit_settings(unit)
    out_dir = Path(unit["out_dir"])
    cache_dir = Path(unit["cache_dir"])
    written = []
    for job in unit["jobs"]:
        article = Article.from_json(job["article"])
        cached = cache_dir / f"{article.source_hash}.json"
        body = (
            Body.from_json(json.loads(cached.read_text(encoding="utf-8")))
            if cached.exists()
            else renderer.body(article)
        )
        html = article_page(settings, article, body, [hot.HotCard(**c) for c in job["hot"]],
                            unit["nav"], unit["css_version"], job["token"])  # fmt: skip
        atomic_write(out_dir / job["page"], html)
        written.append(job["page"])
    return {"written": written}
