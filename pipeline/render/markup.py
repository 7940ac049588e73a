"""Article bodies: CommonMark to sanitised HTML, with anchors and classified links.

cmark-gfm (through cmarkgfm, in C) parses CommonMark with GFM tables and ``~~strike~~``,
raw HTML allowed; nh3 sanitises everything it produced; one lxml pass then gives each
heading its anchor, reads the ``{.affiliate}`` marker after a link, classifies links
(internal, affiliate), marks affiliate links ``rel="sponsored nofollow noopener"``, and
collects headings and problems with the line of the file they come from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import cmarkgfm
import lxml.html
import nh3
from cmarkgfm.cmark import Options

from pipeline.content.article import FAQ_MARKER, Article
from pipeline.errors import Problem
from pipeline.render.affiliate import SPONSORED_REL, AffiliateRules, disclosure_problems
from pipeline.settings import Settings

ARTICLE_PATH = re.compile(r"^/articles/([^/?#]+)/?(?:[?#].*)?$")
AFFILIATE_MARK = "{.affiliate}"  # right after a link: [text](url){.affiliate}
# Any other {...} right after a link or image: an attribute list this renderer ignores.
_ATTRIBUTE_LIST = re.compile(r"\{[.#]?[\w-]+(?:=[^{}\n]*)?(?:\s+[^{}\n]*)?\}")
_CMARK_OPTIONS = Options.CMARK_OPT_UNSAFE | Options.CMARK_OPT_STRIKETHROUGH_DOUBLE_TILDE
_CMARK_EXTENSIONS = ["table", "strikethrough"]

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
        def problems(items: tuple[Problem, ...]) -> list[dict[str, Any]]:
            return [{"path": p.path, "line": p.line, "message": p.message} for p in items]

        return {
            "parts": list(self.parts),
            "faq": [list(item) for item in self.faq],
            "links": [[x.href, x.line, x.affiliate, x.slug] for x in self.links],
            "headings": [list(h) for h in self.headings],
            "problems": problems(self.problems),
            "disclosure_problems": problems(self.disclosure_problems),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Body:
        return cls(
            parts=tuple(data["parts"]),
            faq=tuple((q, a) for q, a in data["faq"]),
            links=tuple(Link(*link) for link in data["links"]),
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
        html = str(self.cleaner.clean(commonmark(text)))
        if "<h" not in html:
            return html
        root = parse_fragment(html)
        anchor_headings(root, set())
        return serialize_fragment(root)

    def body(self, article: Article) -> Body:
        rendered = commonmark(article.body)
        raw_parts = rendered.split(FAQ_MARKER, 1) if article.faq else [rendered]
        links: list[Link] = []
        headings: list[tuple[int, str, str]] = []
        problems: list[Problem] = []
        slugs: set[str] = set()  # the anchors of the whole body, both parts
        parts = tuple(
            self._postprocess(self.cleaner.clean(part), article, links, headings, problems, slugs)
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
        slugs: set[str],
    ) -> str:
        if not html.strip():
            return ""
        root = parse_fragment(html)
        for frame in root.iter("iframe"):
            if not frame.get("src"):
                frame.drop_tree()
        anchor_headings(root, slugs)
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
            self._attribute_list(img, article, problems)
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
            if a.tail and a.tail.startswith(AFFILIATE_MARK):
                a.tail = a.tail[len(AFFILIATE_MARK) :] or None
                a.set("class", "affiliate")
            else:
                self._attribute_list(a, article, problems)
            href = (a.get("href") or "").strip()
            if not href:
                continue
            reason = self.rules.reason(href, a.get("class", ""))
            if reason:
                a.set("rel", SPONSORED_REL)
                a.set("class", "affiliate")
            links.append(Link(href, _line(article, href), reason, self._slug_of(href)))
        return serialize_fragment(root)

    @staticmethod
    def _attribute_list(
        el: lxml.html.HtmlElement, article: Article, problems: list[Problem]
    ) -> None:
        """A ``{...}`` after a link or image that is not the affiliate marker stays text
        on the page: tell the author, who may mean an attribute list."""
        match = _ATTRIBUTE_LIST.match(el.tail or "")
        if match:
            what = "a link" if el.tag == "a" else "an image"
            problems.append(
                Problem(
                    article.path,
                    _line(article, match.group()),
                    f"'{match.group()}' after {what} is shown as text: only {AFFILIATE_MARK}"
                    " after a link is understood (remove it, or write {.affiliate})",
                )
            )

    def _slug_of(self, href: str) -> str | None:
        base = self.settings.base_url
        path = href[len(base) :] if href.startswith(base + "/") else href
        match = ARTICLE_PATH.match(path)
        return match.group(1) if match else None


def commonmark(text: str) -> str:
    """CommonMark (with GFM tables and ``~~strike~~``) to HTML, raw HTML kept for nh3."""
    return str(
        cmarkgfm.markdown_to_html_with_extensions(
            text, options=_CMARK_OPTIONS, extensions=_CMARK_EXTENSIONS
        )
    )


def anchor_headings(root: lxml.html.HtmlElement, slugs: set[str]) -> None:
    """An ``id`` for every heading without one, from its text; ids already given are
    kept and reserved first, and a repeated slug gets ``-1``, ``-2`` ..."""
    headings = list(root.iter("h1", "h2", "h3", "h4", "h5", "h6"))
    slugs.update(el.get("id") for el in headings if el.get("id"))
    for el in headings:
        if el.get("id"):
            continue
        base = slug = slugify_heading(el.text_content())
        n = 1
        while slug in slugs:
            slug, n = f"{base}-{n}", n + 1
        slugs.add(slug)
        el.set("id", slug)


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
