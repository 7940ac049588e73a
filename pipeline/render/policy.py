"""What every rendering of an article shares, on the site and in email: where it lives,
the affiliate disclosure it needs and the medical disclaimer it carries."""

from __future__ import annotations

from pipeline.content.article import Article
from pipeline.render.markup import Body
from pipeline.settings import Settings


def article_url(settings: Settings, slug: str) -> str:
    return f"{settings.base_url}/articles/{slug}/"


def article_page_path(slug: str) -> str:
    return f"articles/{slug}/index.html"


def disclosure_for(settings: Settings, article: Article, body: Body) -> str:
    if article.affiliate is True or body.affiliate_links:
        return settings.affiliate_disclosure
    return ""


def disclaimer_for(settings: Settings, article: Article) -> str:
    if isinstance(article.disclaimer, str):
        return article.disclaimer
    if article.disclaimer is False:
        return ""
    if article.disclaimer is True:
        return settings.disclaimer_text
    cats = settings.disclaimer_categories
    return settings.disclaimer_text if "*" in cats or article.category in cats else ""


def replies_open(settings: Settings, article: Article) -> bool:
    """Whether the article's page takes replies: its ``replies`` front matter, else
    ``reply_categories`` (a moderator may still close them in the console)."""
    if article.replies is not None:
        return article.replies
    cats = settings.reply_categories
    return "*" in cats or article.category in cats
