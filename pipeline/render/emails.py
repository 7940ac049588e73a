"""The email variant: one newsletter email from one or more articles.

The first ``email_full_articles`` articles go in full, the rest as teaser cards with
"Read More →". The HTML is a 600 px table layout whose CSS premailer inlines (so it
still reads well where a client strips ``<style>``; media queries stay in a style
block for phones). The plain-text part is made from the same content with inscriptis,
wrapped at 78 columns, every link kept as a numbered reference.

Per-recipient values are left as merge fields (``%%unsubscribe_url%%``) that the
delivery step fills in without rendering again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import lxml.html
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from premailer import Premailer

from pipeline.content.article import Article
from pipeline.content.store import Catalog
from pipeline.errors import ConfigError, ContentError, EmailTooLarge, NotFound, Problem
from pipeline.merge import MERGE, personalise
from pipeline.render import hot
from pipeline.render.affiliate import require_disclosure
from pipeline.render.markup import Body, Renderer, link_problems, parse_fragment, serialize_fragment
from pipeline.render.policy import article_url, disclaimer_for, disclosure_for
from pipeline.render.templating import WIDTH, environment, site_context, wrap_text
from pipeline.settings import Settings

# RFC 8058: the header that, beside List-Unsubscribe, makes unsubscribing one click.
ONE_CLICK = {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def preview_fields(settings: Settings) -> dict[str, str]:
    """What a preview shows in place of the merge fields: no recipient's name (what a
    subscriber without one sees), and links to service pages that say they belong to a
    preview, so no link in a preview is dead and none acts on anyone."""
    base = settings.base_url
    return {
        "unsubscribe_url": f"{base}/preview/unsubscribe",
        "preferences_url": f"{base}/preview/preferences",
        "name": "",
        "name_html": "",
        "click_token": "",
    }


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    preheader: str
    html: str
    text: str
    slugs: tuple[str, ...]
    has_affiliate: bool

    @property
    def size(self) -> int:
        return len(self.html.encode("utf-8"))


@dataclass
class _Item:
    article: Article
    full: bool
    url: str
    parts: tuple[str, ...] = ()
    faq: tuple[tuple[str, str], ...] = ()
    text: str = ""
    teaser: str = ""
    disclaimer: str = ""
    refs: list[str] = field(default_factory=list)


def with_utm(url: str, settings: Settings, campaign: str) -> str:
    parts = urlsplit(url)
    if (parts.hostname or "").lower() != urlsplit(settings.base_url).hostname:
        return url
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if not k.startswith("utm_")]  # fmt: skip
    query += [("utm_source", settings.utm_source), ("utm_medium", settings.utm_medium),
              ("utm_campaign", campaign)]  # fmt: skip
    return urlunsplit(parts._replace(query=urlencode(query)))


def _absolute(url: str, settings: Settings) -> str:
    if url.startswith(("http://", "https://", "mailto:", "%%")):
        return url
    return settings.base_url + "/" + url.lstrip("/")


def _email_html(fragment: str, settings: Settings, campaign: str) -> str:
    """Absolute URLs (mail clients have no base), UTM on links to the site."""
    if not fragment.strip():
        return ""
    root = parse_fragment(fragment)
    for a in root.iter("a"):
        if a.get("href"):
            a.set("href", with_utm(_absolute(a.get("href", ""), settings), settings, campaign))
    for img in root.iter("img"):
        img.set("src", _absolute(img.get("src", ""), settings))
        img.set("style", "max-width:100%;height:auto;border:0")
    for frame in list(root.iter("iframe")):  # no mail client plays them: link instead
        paragraph = lxml.html.Element("p")
        link = lxml.html.Element("a", href=frame.get("src", ""))
        link.text = frame.get("title") or "Watch the video"
        paragraph.append(link)
        parent = frame.getparent()
        if parent is not None:
            parent.replace(frame, paragraph)
    return serialize_fragment(root)


_TEXT_CONFIG = ParserConfig(display_links=False, display_images=True)


def _plain(fragment: str, refs: list[str]) -> str:
    """HTML to text; each link becomes ``text [n]`` with the URL in ``refs``."""
    if not fragment.strip():
        return ""
    root = parse_fragment(fragment)
    for a in root.iter("a"):
        href = a.get("href")
        if not href:
            continue
        if href in refs:
            n = refs.index(href) + 1
        else:
            refs.append(href)
            n = len(refs)
        a.tail = f" [{n}]" + (a.tail or "")
    text = get_text(serialize_fragment(root), _TEXT_CONFIG)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return wrap_text(text)


def _refs_block(refs: list[str]) -> str:
    if not refs:
        return ""
    return "\n\nLinks:\n" + "\n".join(
        f"[{i}]\n{url}" if len(url) > WIDTH - 5 else f"[{i}] {url}" for i, url in enumerate(refs, 1)
    )


def _teaser(article: Article, words: int) -> str:
    text = article.summary or article.subtitle
    if not text:
        plain = get_text(article.body[:4000]) if article.body else ""
        text = " ".join(plain.split()[:words])
    return hot.trim_words(text, words)


@cache
def _css(templates_dir: Path) -> str:
    return (templates_dir / "email" / "email.css").read_text(encoding="utf-8")


class EmailRenderer:
    def __init__(self, settings: Settings, renderer: Renderer | None = None) -> None:
        self.settings = settings
        self.renderer = renderer or Renderer(settings)

    def render(
        self,
        catalog: Catalog,
        slugs: Sequence[str],
        *,
        subject: str | None = None,
        preheader: str | None = None,
        intro: str = "",
        campaign: str | None = None,
        scores: dict[str, float] | None = None,
        full_articles: int | None = None,
        view_url: str | None = None,
        bodies: dict[str, Body] | None = None,
        full_slugs: Sequence[str] | None = None,
    ) -> RenderedEmail:
        """Render one email. Raises ContentError, DisclosureError or EmailTooLarge.

        The first ``full_articles`` articles go in full, or exactly ``full_slugs`` when
        given; the others are teasers."""
        settings = self.settings
        if not settings.postal_address.strip():
            raise ConfigError(
                "postal_address is empty: CAN-SPAM requires the sender's physical postal address"
                " in every email; set postal_address in letterpress.toml or"
                " LETTERPRESS_POSTAL_ADDRESS"
            )
        if not slugs:
            raise NotFound("an email needs at least one article")
        articles = []
        for slug in slugs:
            if slug not in catalog.articles:
                raise NotFound(f"no article with slug '{slug}' (letterpress check lists them)")
            articles.append(catalog.articles[slug])
        bodies = dict(bodies or {})
        problems = []
        disclosure: list[Problem] = []
        known = {a.slug for a in catalog.articles.values() if a.is_published}
        for article in articles:
            if article.slug not in bodies:
                bodies[article.slug] = self.renderer.body(article)
            body = bodies[article.slug]
            problems += list(body.problems) + link_problems(article.path, body.links, known)
            disclosure += body.disclosure_problems
        require_disclosure(disclosure)
        if problems:
            raise ContentError(problems)

        count = settings.email_full_articles if full_articles is None else full_articles
        full = set(full_slugs) if full_slugs is not None else {a.slug for a in articles[:count]}
        result = self._render(articles, bodies, catalog, subject, preheader, intro, campaign,
                              scores or {}, full, view_url)  # fmt: skip
        if result.size > settings.email_clip_bytes:
            if settings.email_oversize == "teaser" and full:
                result = self._render(articles, bodies, catalog, subject, preheader, intro,
                                      campaign, scores or {}, set(), view_url)  # fmt: skip
            if result.size > settings.email_clip_bytes:
                raise EmailTooLarge(result.size, settings.email_clip_bytes)
        return result

    def _render(
        self,
        articles: list[Article],
        bodies: dict[str, Body],
        catalog: Catalog,
        subject: str | None,
        preheader: str | None,
        intro: str,
        campaign: str | None,
        scores: dict[str, float],
        full: set[str],
        view_url: str | None,
    ) -> RenderedEmail:
        settings = self.settings
        first = articles[0]
        subject = subject or first.title
        preheader = preheader if preheader is not None else (first.description or "")
        campaign = campaign or first.slug
        items: list[_Item] = []
        has_affiliate = False
        for article in articles:
            body = bodies[article.slug]
            has_affiliate = has_affiliate or bool(disclosure_for(settings, article, body))
            url = with_utm(article_url(settings, article.slug), settings, campaign)
            item = _Item(article, full=article.slug in full, url=url)
            if item.full:
                self._fill(item, body, campaign)
            else:
                item.teaser = _teaser(article, settings.email_teaser_words)
            items.append(item)

        in_email = [a.slug for a in articles]
        cards = self._hot(catalog, scores, in_email, campaign)
        ctx: dict[str, Any] = site_context(settings)
        ctx.update(
            subject=subject,
            preheader=preheader,
            items=items,
            hot=cards,
            disclosure=settings.affiliate_disclosure if has_affiliate else "",
            intro=intro,
            intro_text=_plain(intro, []) if intro else "",
            view_url=view_url or with_utm(article_url(settings, first.slug), settings, campaign),
            home_url=with_utm(settings.base_url + "/", settings, campaign),
            unsubscribe_url=MERGE["unsubscribe_url"],
            preferences_url=MERGE["preferences_url"],
            css=_css(settings.templates_dir),
        )
        env = environment(settings.templates_dir)
        html = env.get_template("email/newsletter.html").render(ctx)
        text = env.get_template("email/newsletter.txt").render(ctx)
        return RenderedEmail(
            subject=subject,
            preheader=preheader,
            html=inline_css(html),
            text=text,
            slugs=tuple(in_email),
            has_affiliate=has_affiliate,
        )

    def _hot(
        self, catalog: Catalog, scores: dict[str, float], in_email: list[str], campaign: str
    ) -> list[dict[str, Any]]:
        """The hot articles block: the most engaging articles not in this email."""
        settings = self.settings
        ranked = hot.rank(catalog.articles.values(), scores, size=settings.hot_size,
                          exclude=in_email)  # fmt: skip
        return [
            {**card.__dict__, "url": with_utm(article_url(settings, card.slug), settings, campaign)}
            for card in hot.cards(ranked, settings)
        ]

    def _fill(self, item: _Item, body: Body, campaign: str) -> None:
        """A full article: its parts and FAQ for the HTML, and its plain text with the
        links numbered in a references block."""
        settings = self.settings
        item.parts = tuple(_email_html(p, settings, campaign) for p in body.parts)
        item.faq = tuple((q, _email_html(a, settings, campaign)) for q, a in body.faq)
        item.disclaimer = disclaimer_for(settings, item.article)
        refs = item.refs
        chunks = [_plain(item.parts[0], refs)]
        if item.faq:
            chunks.append("FREQUENTLY ASKED QUESTIONS (FAQ)")
            for question, answer in item.faq:
                chunks.append(wrap_text(question) + "\n\n" + _plain(answer, refs))
        if len(item.parts) > 1:
            chunks.append(_plain(item.parts[1], refs))
        item.text = "\n\n".join(c for c in chunks if c) + _refs_block(refs)


def inline_css(html: str) -> str:
    """Inline the CSS with premailer: no network, media queries and !important kept."""
    inlined = Premailer(
        html,
        allow_network=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        strip_important=False,
        remove_classes=False,
        keep_style_tags=False,
        disable_leftover_css=False,
        disable_basic_attributes=["width", "height"],
    ).transform()
    result = str(inlined)
    if not result.lstrip().lower().startswith("<!doctype"):
        result = "<!DOCTYPE html>\n" + result
    return result


def mime_message(
    email: RenderedEmail,
    settings: Settings,
    *,
    to: str,
    fields: dict[str, str] | None = None,
    when: datetime | None = None,
) -> EmailMessage:
    """A complete multipart/alternative message (text first, HTML preferred), with the
    one-click unsubscribe headers a sent message carries when ``fields`` has the link."""
    filled = fields or {}
    message = EmailMessage(policy=SMTP)
    message["Subject"] = personalise(email.subject, filled)  # as a sent one is
    message["From"] = formataddr((settings.sender_name, settings.sender_email))
    message["To"] = to
    message["Date"] = format_datetime(when or datetime.now(UTC))
    domain = settings.sender_email.rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message["MIME-Version"] = "1.0"
    if "unsubscribe_url" in filled:
        message["List-Unsubscribe"] = f"<{filled['unsubscribe_url']}>"
        for name, value in ONE_CLICK.items():
            message[name] = value
    message.set_content(personalise(email.text, filled), subtype="plain", cte="quoted-printable")
    message.add_alternative(personalise(email.html, filled), subtype="html", cte="quoted-printable")
    return message
