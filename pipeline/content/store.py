"""The content store: one Markdown file with YAML front matter per article.

``FileContentStore`` reads a folder of them (``pipeline.content.frontmatter`` parses
each); one broken file never stops the others. Other backends implement the
``ContentStore`` protocol.
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Protocol

from pipeline.content.article import Article, Parsed
from pipeline.content.frontmatter import content_hash, parse_article
from pipeline.errors import NotFound, Problem
from pipeline.settings import Settings


class ContentStore(Protocol):
    """What workers and renderers need from wherever articles are kept."""

    def list(self) -> builtins.list[Article]: ...

    def get(self, slug: str) -> Article: ...


@dataclass
class Source:
    """One file of the store as bytes, before parsing."""

    path: Path
    display_path: str
    raw: bytes
    modified: datetime

    @cached_property
    def hash(self) -> str:
        return content_hash(self.raw)


@dataclass
class Catalog:
    """Everything the store holds: the good articles and every problem found."""

    articles: dict[str, Article]
    problems: list[Problem]

    def published(self) -> list[Article]:
        """Published articles, newest first."""
        items = [a for a in self.articles.values() if a.is_published]
        return sorted(items, key=lambda a: (a.published or a.modified, a.slug), reverse=True)


def _shown_under(root: Path) -> Callable[[Path], str]:
    """How the files under ``root`` are named in messages: relative to the working
    folder when they are inside it, else as they are (the folders resolved once)."""
    try:
        base: Path | None = root.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        base = None
    return lambda path: str(base / path.relative_to(root)) if base is not None else str(path)


class FileContentStore:
    """Articles as ``*.md`` files in one folder (sub-folders included)."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.settings = settings

    def sources(self) -> Iterator[Source]:
        if not self.root.is_dir():
            raise NotFound(f"{self.root}: content folder not found (set --content or content_dir)")
        shown = _shown_under(self.root)
        for path in sorted(self.root.rglob("*.md")):
            if any(part.startswith(".") for part in path.relative_to(self.root).parts):
                continue
            stat = path.stat()
            yield Source(
                path,
                shown(path),
                path.read_bytes(),
                datetime.fromtimestamp(stat.st_mtime, UTC),
            )

    def catalog(self) -> Catalog:
        return build_catalog(
            parse_article(s.display_path, s.raw, self.settings, s.modified) for s in self.sources()
        )

    def list(self) -> builtins.list[Article]:
        return builtins.list(self.catalog().articles.values())

    def get(self, slug: str) -> Article:
        catalog = self.catalog()
        if slug not in catalog.articles:
            known = difflib.get_close_matches(slug, list(catalog.articles), n=1)
            tip = f" (did you mean '{known[0]}'?)" if known else ""
            raise NotFound(f"no article with slug '{slug}' in {self.root}{tip}")
        return catalog.articles[slug]


def build_catalog(results: Iterator[Parsed] | list[Parsed]) -> Catalog:
    """Collect parsed files; two files with one slug are both refused, naming each other."""
    by_slug: dict[str, list[Article]] = {}
    problems: list[Problem] = []
    for parsed in results:
        problems.extend(parsed.problems)
        if parsed.article is not None:
            by_slug.setdefault(parsed.article.slug, []).append(parsed.article)
    articles: dict[str, Article] = {}
    for slug, same in by_slug.items():
        if len(same) == 1:
            articles[slug] = same[0]
            continue
        for article in same:
            others = ", ".join(f"{o.path}:{o.line_of('slug')}" for o in same if o is not article)
            problems.append(
                Problem(
                    article.path,
                    article.line_of("slug"),
                    f"duplicate slug '{slug}' (also in {others})",
                )
            )
    return Catalog(articles, problems)
