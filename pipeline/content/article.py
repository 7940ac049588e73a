"""An article as the rest of Letterpress sees it: what its front matter says, checked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pipeline.errors import Problem

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_SLUG = 120
FAQ_MARKER = "<!-- faq -->"

FIELDS = (
    "title", "slug", "subtitle", "summary", "category", "series", "tags", "author",
    "published", "updated", "status", "affiliate", "disclosure", "disclaimer", "pinned",
    "hero", "faq", "replies",
)  # fmt: skip

AffiliateMode = bool | Literal["auto"]


@dataclass(frozen=True)
class FAQItem:
    question: str
    answer: str  # Markdown


@dataclass(frozen=True)
class Hero:
    src: str
    alt: str


@dataclass(frozen=True)
class Article:
    path: str  # as shown to people, e.g. content/x.md
    slug: str
    title: str
    category: str
    body: str  # Markdown
    body_line: int  # line of the file where the body starts
    source_hash: str
    modified: datetime
    subtitle: str = ""
    summary: str = ""
    series: str = ""
    tags: tuple[str, ...] = ()
    author: str = ""
    published: datetime | None = None
    updated: datetime | None = None
    status: Literal["draft", "published"] = "draft"
    affiliate: AffiliateMode = "auto"
    disclosure: bool = True
    disclaimer: bool | str | None = None
    pinned: bool = False
    hero: Hero | None = None
    faq: tuple[FAQItem, ...] = ()
    replies: bool | None = None  # None: as ``reply_categories`` says for its category
    field_lines: dict[str, int] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_published(self) -> bool:
        return self.status == "published"

    @property
    def description(self) -> str:
        return self.summary or self.subtitle

    @property
    def date(self) -> datetime:
        return self.updated or self.published or self.modified

    def line_of(self, name: str) -> int:
        return self.field_lines.get(name, 1)

    def to_json(self) -> dict[str, Any]:
        """The article as JSON, for units of build work (``from_json`` reads it back)."""
        data = {name: getattr(self, name) for name in _SCALARS}
        data.update(
            modified=self.modified.isoformat(),
            published=self.published.isoformat() if self.published else None,
            updated=self.updated.isoformat() if self.updated else None,
            tags=list(self.tags),
            hero=[self.hero.src, self.hero.alt] if self.hero else None,
            faq=[[item.question, item.answer] for item in self.faq],
            field_lines=self.field_lines,
        )
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Article:
        return cls(
            **{name: data[name] for name in _SCALARS},
            modified=datetime.fromisoformat(data["modified"]),
            published=datetime.fromisoformat(data["published"]) if data["published"] else None,
            updated=datetime.fromisoformat(data["updated"]) if data["updated"] else None,
            tags=tuple(data["tags"]),
            hero=Hero(*data["hero"]) if data["hero"] else None,
            faq=tuple(FAQItem(q, a) for q, a in data["faq"]),
            field_lines=dict(data["field_lines"]),
        )


# The fields of Article that are JSON as they are.
_SCALARS = (
    "path", "slug", "title", "category", "body", "body_line", "source_hash", "subtitle",
    "summary", "series", "author", "status", "affiliate", "disclosure", "disclaimer", "pinned",
    "replies",
)  # fmt: skip


@dataclass
class Parsed:
    article: Article | None
    problems: list[Problem]
