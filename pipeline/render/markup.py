"""Article bodies: CommonMark to sanitised HTML, with anchors and classified links.

markdown-it-py parses (CommonMark, raw HTML allowed), nh3 sanitises everything it
produced, and one lxml pass then classifies links (internal, affiliate), marks
affiliate links ``rel="sponsored nofollow noopener"``, and collects headings and
problems with the line of the file they come from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import lxml.html
import nh3
from markdown_it import MarkdownIt
from mdit_py_plugins.anchors import anchors_plugin
from mdit_py_plugins.attrs import attrs_plugin

from pipeline.content.article import FAQ_MARKER, Article
from pipeline.errors import Problem
from pipeline.render.affiliate import SPONSORED_REL, AffiliateRules, disclosure_problems
from pipeline.settings import Settings

ARTICLE_PATH = re.compile(r"^/articles/([^/?#]+)/?(?:[?#].*)?$")

_TAGS = (set(nh3.ALLOWED_TAGS) - {"center", "strike", "tt", "acronym"}) | {"iframe"}
_ATTRIBUTES: dict[str, set[str]] = {k: set(v) for k, v in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES.update(
    {
        "a": {"href", "title", "hreflang", "class"},
        "img": {"src", "alt", "title", "width", "height"},
        "iframe": {"src", "title", "width", "height", "allow", "allowfullscreen"},
        "abbr": {"title"},
        **{f"h{n}": {"id"} for n in range(1, 7)},
    }
)


@dataclass(frozen=True)
class Link:
    href: str
    line: int
    affiliate: str | None  # why it is an affiliate link
    slug: str | None  # the article it points to, for links within the site


@dataclass(frozen=True)
class Body:
    parts: tuple[str, ...]  # the body's HTML before and after the FAQ marker
    faq: tuple[tuple[str, str], ...]  # (question, answer HTML)
    links: tuple[Link, ...]
    headings: tuple[tuple[int, str, str], ...]  # (level, id, text)
    problems: tuple[Problem, ...]  # all of them, the disclosure ones included
    disclosure_problems: tuple[Problem, ...] = ()

    @property
    def affiliate_links(self) -> list[Link]:
        return [link for link in self.links if link.affiliate]

    @property
    def html(self) -> str:
        return "\n".join(self.parts)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Body:
        return cls(
            parts=tuple(data["parts"]),
            faq=tuple((q, a) for q, a in data["faq"]),
            links=tuple(Link(**link) for link in data["links"]),
            headings=tuple((int(n), i, t) for n, i, t in data["headings"]),
            problems=tuple(Problem(**p) for p in data["problems"]),
            disclosure_problems=tuple(Problem(**p) for p in data["disclosure_problems"]),
        )


def parse_fragment(html: str) -> lxml.html.HtmlElement:
    """An HTML fragment inside a wrapping <div>, for ``serialize_fragment``."""
    return lxml.html.fragment_fromstring(html, create_parent="div")


def serialize_fragment(root: lxml.html.HtmlElement) -> str:
    text = str(lxml.html.tostring(root, encoding="unicode"))
    return text[len("<div>") : -len("</div>")]


def slugify_heading(text: str) -> str:
    """Stable anchor for a heading: lowercase words joined by hyphens."""
    words = re.findall(r"[0-9a-z]+", text.lower().replace("\u2019", "").replace("'", ""))
    return "-".join(words) or "section"


class Renderer:
    """Turns article Markdown into sanitised HTML. One per settings; reusable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules = AffiliateRules(settings.affiliate_rules, settings.affiliate_shorteners)
        self.md = (
            MarkdownIt("commonmark", {"html": True, "typographer": False})
            .enable("table")
            .enable("strikethrough")
            .use(anchors_plugin, min_level=1, max_level=6, slug_func=slugify_heading)
            .use(attrs_plugin)
        )
        iframe_hosts = {h.lower() for h in settings.iframe_hosts}

        def attribute_filter(tag: str, attr: str, value: str) -> str | None:
            if tag == "iframe" and attr == "src":
                parts = urlsplit(value)
                ok = parts.scheme == "https" and (parts.hostname or "") in iframe_hosts
                return value if ok else None
            if tag == "a" and attr == "class":
                return "affiliate" if "affiliate" in value.split() else None
            return value

        self.cleaner = nh3.Cleaner(
            tags=_TAGS,
            attributes=_ATTRIBUTES,
            url_schemes={"http", "https", "mailto"},
            link_rel=None,
            strip_comments=True,
            attribute_filter=attribute_filter,
        )

    def markdown(self, text: str) -> str:
        """Markdown to sanitised HTML, without link processing (front-matter answers)."""
        return str(self.cleaner.clean(self.md.render(text)))

    def body(self, article: Article) -> Body:
        rendered = self.md.render(article.body)
        raw_parts = rendered.split(FAQ_MARKER, 1) if article.faq else [rendered]
        links: list[Link] = []
        headings: list[tuple[int, str, str]] = []
        problems: list[Problem] = []
        parts = tuple(
            self._postprocess(self.cleaner.clean(part), article, links, headings, problems)
            for part in raw_parts
        )
        faq = tuple((q.question, self.markdown(q.answer)) for q in article.faq)
        disclosure = disclosure_problems(
            article.path,
            article.line_of("affiliate") if "affiliate" in article.field_lines else 1,
            mode=article.affiliate,
            affiliate_lines=[
                (link.line, link.href, link.affiliate) for link in links if link.affiliate
            ],
            disclosure_on=article.disclosure,
            disclosure_text=self.settings.affiliate_disclosure,
        )
        return Body(
            parts, faq, tuple(links), tuple(headings), tuple(problems + disclosure),
            disclosure_problems=tuple(disclosure),
        )  # fmt: skip

    def _postprocess(
        self,
        html: str,
        article: Article,
        links: list[Link],
        headings: list[tuple[int, str, str]],
        problems: list[Problem],
    ) -> str:
        if not html.strip():
            return ""
        root = parse_fragment(html)
        for frame in root.iter("iframe"):
            if not frame.get("src"):
                frame.drop_tree()
        for el in root.iter("h1", "h2", "h3", "h4", "h5", "h6"):
            level = int(el.tag[1])
            text = el.text_content().strip()
            if level == 1:
                problems.append(
                    Problem(
                        article.path,
                        _line(article, text),
                        f"heading '{text}' is a level-1 heading: start sections at '##'"
                        " (the title is the page's only h1)",
                    )
                )
            headings.append((level, el.get("id", ""), text))
        for img in root.iter("img"):
            if not (img.get("alt") or "").strip():
                src = img.get("src", "")
                problems.append(
                    Problem(
                        article.path,
                        _line(article, src),
                        f"image without alt text ({src}): describe it, ![what it shows]({src})",
                    )
                )
        for a in root.iter("a"):
            href = (a.get("href") or "").strip()
            if not href:
                continue
            reason = self.rules.reason(href, a.get("class", ""))
            if reason:
                a.set("rel", SPONSORED_REL)
                a.set("class", "affiliate")
            links.append(Link(href, _line(article, href), reason, self._slug_of(href)))
        return serialize_fragment(root)

    def _slug_of(self, href: str) -> str | None:
        base = self.settings.base_url
        path = href[len(base) :] if href.startswith(base + "/") else href
        match = ARTICLE_PATH.match(path)
        return match.group(1) if match else None


def _line(article: Article, needle: str) -> int:
    index = article.body.find(needle) if needle else -1
    return article.body_line + (article.body[:index].count("\n") if index >= 0 else 0)


def link_problems(path: str, links: Iterable[Link], known: set[str]) -> list[Problem]:
    """Links to articles that are not published: they do not exist, or are drafts."""
    return [
        Problem(
            path, link.line, f"link to unknown article '{link.slug}' ({link.href}): check the slug"
        )
        for link in links
        if link.slug is not None and link.slug not in known
    ]
