"""``letterpress check``: every problem in the content store, as ``path:line: message``."""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.content.store import Catalog, FileContentStore
from pipeline.errors import Problem
from pipeline.render.markup import Renderer, link_problems
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def check(settings: Settings, content_dir: Path | None = None) -> tuple[Catalog, list[Problem]]:
    """Parse and render every article; return the catalog and all problems, sorted."""
    catalog = FileContentStore(content_dir or settings.content_dir, settings).catalog()
    renderer = Renderer(settings)
    problems = list(catalog.problems)
    published = {a.slug for a in catalog.articles.values() if a.is_published}
    for article in catalog.articles.values():
        try:
            body = renderer.body(article)
        except Exception as exc:  # one article's bug must not hide the others' problems
            log.exception("rendering %s", article.path)
            problems.append(Problem(article.path, 1, f"internal error while rendering: {exc!r}"))
            continue
        problems.extend(body.problems)
        if article.is_published:
            problems.extend(link_problems(article.path, body.links, published))
    return catalog, sorted(set(problems))
