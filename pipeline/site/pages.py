"""The pages of the site: an article page with its JSON-LD, and the feed and sitemap."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedgen.feed import FeedGenerator

from pipeline.audience.tokens import Signer
from pipeline.content.article import Article
from pipeline.render import hot
from pipeline.render.markup import Body, parse_fragment, slugify_heading
from pipeline.render.policy import (
    article_page_path,
    article_url,
    disclaimer_for,
    disclosure_for,
    replies_open,
)
from pipeline.render.templating import environment, site_context
from pipeline.replies.guard import HONEYPOT, form_token
from pipeline.settings import Settings
from pipeline.site.links import FAVICON_TYPES, PageLinks, absolute_url, favicon_path


def page_context(
    settings: Settings, nav: list[dict[str, str]], css_version: str, page: str
) -> dict[str, Any]:
    ctx = site_context(settings)
    link = PageLinks(settings, page)
    icon = favicon_path(settings)
    ctx.update(
        nav=nav,
        css_version=css_version,
        url=link,
        favicon={"href": link(icon), "type": FAVICON_TYPES[Path(icon).suffix]},
    )
    return ctx


def article_page(
    settings: Settings,
    article: Article,
    body: Body,
    cards: list[hot.HotCard],
    nav: list[dict[str, str]],
    css_version: str,
    reply_token: str = "",
) -> str:
    """The article's page; ``reply_token`` is its reply form's (``reply_form_token``)."""
    env = environment(settings.templates_dir)
    url = article_url(settings, article.slug)
    ctx = page_context(settings, nav, css_version, article_page_path(article.slug))
    link: PageLinks = ctx["url"]
    # The body is shared with the email (whose links are absolute): made relative here.
    shown = Body(
        tuple(link.html(part) for part in body.parts),
        tuple((question, link.html(answer)) for question, answer in body.faq),
        body.links, body.headings, body.problems, body.disclosure_problems,
    )  # fmt: skip
    ctx.update(
        article=article,
        body=shown,
        hot=cards,
        canonical=url,
        disclosure=disclosure_for(settings, article, body),
        disclaimer=disclaimer_for(settings, article),
        category_slug=slugify_heading(article.category),
        series_slug=slugify_heading(article.series) if article.series else "",
        json_ld=_json_ld(settings, article, body, url),
        replies=_reply_form(settings, article, reply_token),
        beacon=settings.page_view_beacon,
        beacon_url=f"{settings.base_url}/v/{article.slug}",
        absolute=lambda src: absolute_url(settings, src),
    )
    return env.get_template("web/article.html").render(ctx)


def reply_form_token(settings: Settings, article: Article) -> str:
    """The token of the article's reply form, or "" when the article takes no replies
    or there is no ``secret_key`` (the build's own process makes it: no secret goes to
    the units of work). It is issued at the article's date, so it is the same at every
    build (an unchanged page is not written again): it names the article, and the
    page's script replaces it with one issued when the page loads. A page without one
    still works: the service answers its post with the form again, with a fresh one."""
    secret = settings.secret_key.get_secret_value()
    if not replies_open(settings, article) or len(secret) < 16:
        return ""
    return form_token(Signer.from_settings(settings), article.slug, article.date.timestamp())


def _reply_form(settings: Settings, article: Article, token: str) -> dict[str, str] | None:
    """What the page's reply form needs, or None when the article takes no replies."""
    if not replies_open(settings, article):
        return None
    base = settings.base_url
    return {
        "action": f"{base}/replies/{article.slug}",
        "api": f"{base}/api/replies/{article.slug}",
        "page": f"{base}/replies/{article.slug}",
        "token": token,
        "honeypot": HONEYPOT,
        "max_chars": str(settings.reply_max_chars),
    }


def author_type(settings: Settings, name: str) -> str:
    """Organization for the publication and its teams (``organization_authors``)."""
    teams = {n.casefold() for n in [settings.site_name, *settings.organization_authors]}
    return "Organization" if name.casefold() in teams else "Person"


def _json_ld(settings: Settings, article: Article, body: Body, url: str) -> list[dict[str, Any]]:
    author = article.author or settings.default_author
    graph: list[dict[str, Any]] = [
        {
            "@context": "https://schema.org",
            "@type": "Article",
            "headline": article.title,
            "description": article.description,
            **({"image": absolute_url(settings, article.hero.src)} if article.hero else {}),
            "author": {"@type": author_type(settings, author), "name": author},
            "publisher": {
                "@type": "Organization",
                "name": settings.site_name,
                "url": settings.base_url + "/",
            },
            "mainEntityOfPage": url,
            **({"datePublished": article.published.isoformat()} if article.published else {}),
            "dateModified": article.date.isoformat(),
        }
    ]
    if body.faq:
        graph.append(
            {
                "@context": "https://schema.org",
                "@type": "FAQPage",
                "mainEntity": [
                    {
                        "@type": "Question",
                        "name": question,
                        "acceptedAnswer": {
                            "@type": "Answer",
                            "text": parse_fragment(answer).text_content().strip(),
                        },
                    }
                    for question, answer in body.faq
                ],
            }
        )
    return graph


def card(a: Article) -> dict[str, Any]:
    """What lists, feeds and sitemaps show of an article (not its body)."""
    return {"slug": a.slug, "title": a.title, "category": a.category, "series": a.series,
            "description": a.description, "author": a.author, "date": a.date.isoformat(),
            "published": a.published.isoformat() if a.published else None}  # fmt: skip


def nav_for(published: list[Article]) -> list[dict[str, str]]:
    names = sorted({a.category for a in published})
    return [{"name": n, "slug": slugify_heading(n)} for n in names]


def feed(settings: Settings, articles: list[Article]) -> bytes:
    fg = FeedGenerator()
    fg.id(settings.base_url + "/")
    fg.title(settings.site_name)
    fg.subtitle(settings.site_tagline or settings.site_name)
    fg.link(href=settings.base_url + "/", rel="alternate")
    fg.link(href=settings.base_url + "/feed.xml", rel="self")
    fg.language(settings.language)
    newest = max((a.date for a in articles), default=datetime(2000, 1, 1, tzinfo=UTC))
    fg.updated(newest)
    for a in reversed(articles):
        entry = fg.add_entry()
        url = article_url(settings, a.slug)
        entry.id(url)
        entry.title(a.title)
        entry.link(href=url)
        entry.summary(a.description or a.title)
        entry.author({"name": a.author or settings.default_author})
        entry.category(term=a.category)
        entry.published(a.published or a.modified)
        entry.updated(a.date)
    data: bytes = fg.atom_str(pretty=True)
    return data


def sitemap(settings: Settings, env: Any, published: list[Article], nav: list[Any]) -> str:
    urls: list[tuple[str, str | None]] = [(settings.base_url + "/", None)]
    urls += [(article_url(settings, a.slug), a.date.date().isoformat()) for a in published]
    urls += [(f"{settings.base_url}/category/{c['slug']}/", None) for c in nav]
    series = sorted({a.series for a in published if a.series})
    urls += [(f"{settings.base_url}/series/{slugify_heading(s)}/", None) for s in series]
    return str(env.get_template("web/sitemap.xml").render(urls=urls))
