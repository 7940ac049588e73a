"""The web variant: article pages, home, category and series pages, feed, sitemap.

Builds are incremental. Each output page has a key: a hash of everything it is made
from (the article's bytes, the hot block it shows, the navigation, the templates and
the settings). A page whose key is unchanged is not rendered again. The key of every
page, and what the build learnt of every source file, are kept in
``<out>/.letterpress/state.json``; rendered article bodies are cached by content hash.

The costly steps (Markdown to HTML, page rendering) are units of JSON work run by a
``Pool``: in this process, in local processes, or as Celery tasks.

Every link from a page to another page or file of the site is relative to the page (as
MkDocs makes them), so the site works opened from disk and served from any sub-path;
with ``directory_urls`` off (the default) links to pages name their ``index.html``. A
page's depth is fixed by its kind, so its key needs nothing more than the settings.
What is meant for other machines stays absolute (from ``base_url``): canonical and Open
Graph URLs, JSON-LD, the feed, the sitemap, robots.txt and the page-view beacon.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from feedgen.feed import FeedGenerator

from . import hot
from .content import Article, Catalog, FileContentStore, Parsed, build_catalog, parse_article
from .errors import ConfigError, Problem
from .markup import (
    Body,
    Link,
    Renderer,
    link_problems,
    parse_fragment,
    serialize_fragment,
    slugify_heading,
)
from .pool import Pool, SerialPool, Unit
from .settings import Settings, load_settings
from .templating import environment, site_context, templates_version

log = logging.getLogger(__name__)

STATE_DIR = ".letterpress"
FORMAT = 6  # bump when the meaning of cached data changes
CHUNK = 50  # articles per unit of work
PAGE_FOLDERS = ("articles", "category", "series")  # the folders of pages the build makes
FAVICON_TYPES = {".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}


@dataclass
class BuildReport:
    out_dir: Path
    articles: int = 0
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    pool: str = "serial"

    @property
    def ok(self) -> bool:
        return not self.problems


def settings_key(settings: Settings) -> str:
    """What in the settings shapes the output (``RENDER_FIELDS``; sending does not)."""
    output = settings.render_values()
    payload = json.dumps([FORMAT, output], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write a whole file or nothing: a crash never leaves half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------
# Units of work (JSON in, JSON out): run by any Pool, including Celery tasks.


@cache
def _renderer(settings_json: str) -> tuple[Settings, Renderer]:
    settings = load_settings(**json.loads(settings_json))
    return settings, Renderer(settings)


def _unit_settings(unit: Unit) -> tuple[Settings, Renderer]:
    return _renderer(json.dumps(unit["settings"], sort_keys=True))


def _read_article(settings: Settings, path: str, display: str) -> Parsed:
    p = Path(path)
    return parse_article(
        display, p.read_bytes(), settings, datetime.fromtimestamp(p.stat().st_mtime, UTC)
    )


def analyse(unit: Unit) -> Unit:
    """Render the bodies of some articles into the body cache; report what they hold."""
    settings, renderer = _unit_settings(unit)
    cache_dir = Path(unit["cache_dir"])
    results = []
    for path, display in unit["files"]:
        parsed = _read_article(settings, path, display)
        if parsed.article is None:
            results.append({"path": display, "hash": None, "links": [], "problems": []})
            continue
        body = renderer.body(parsed.article)
        atomic_write(cache_dir / f"{parsed.article.source_hash}.json", json.dumps(body.to_json()))
        results.append(_summary(display, parsed.article.slug, parsed.article.source_hash, body))
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
    """Render some article pages. Each job names the source and the cards it shows."""
    settings, renderer = _unit_settings(unit)
    out_dir = Path(unit["out_dir"])
    cache_dir = Path(unit["cache_dir"])
    written = []
    for job in unit["jobs"]:
        parsed = _read_article(settings, job["file"], job["path"])
        if parsed.article is None or parsed.article.source_hash != job["hash"]:
            continue  # changed under our feet: the next build picks it up
        article = parsed.article
        cached = cache_dir / f"{article.source_hash}.json"
        body = (
            Body.from_json(json.loads(cached.read_text(encoding="utf-8")))
            if cached.exists()
            else renderer.body(article)
        )
        html = article_page(settings, article, body, [hot.HotCard(**c) for c in job["hot"]],
                            unit["nav"], unit["css_version"])  # fmt: skip
        atomic_write(out_dir / job["page"], html)
        written.append(job["page"])
    return {"written": written}


# ---------------------------------------------------------------------------
# Links


def _split(url: str) -> tuple[str, str]:
    """A URL's path, and its query and fragment (with their '?' or '#')."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    return url[:cut], url[cut:]


def relative_url(page: str, target: str, directory_urls: bool) -> str:
    """The link from the page written at ``page`` (``articles/x/index.html``) to the site
    path ``target``: a folder of pages when it is empty (the home page) or ends in '/',
    else a file. A query or fragment is kept. A folder is linked as its ``index.html``
    (a browser shows a listing for a folder on disk), or with a '/' at the end when
    ``directory_urls`` is on (a server answers it with the index)."""
    path, tail = _split(target)
    here = page.split("/")[:-1]
    folder = path == "" or path.endswith("/")
    parts = [p for p in path.split("/") if p]
    name: list[str] = []
    if not folder:
        parts, name = parts[:-1], parts[-1:]
    elif not directory_urls:
        name = ["index.html"]
    common = 0
    while common < min(len(here), len(parts)) and here[common] == parts[common]:
        common += 1
    link = "/".join([".."] * (len(here) - common) + parts[common:] + name)
    if folder and directory_urls:
        link = link + "/" if link else "./"
    return link + tail


def site_path(settings: Settings, url: str) -> str | None:
    """The path within the site ('' is the home page) that a URL written in an article
    points at, or None when it leads elsewhere: another site, ``mailto:``, an anchor on
    the same page. As for emails, a URL without a scheme is from the site's root."""
    url = url.strip()
    base = settings.base_url
    if not url or url.startswith(("#", "?", "//")):
        return None
    if url == base or url.startswith((base + "/", base + "?", base + "#")):
        return url[len(base) :].lstrip("/")
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return None
    return None if scheme else url.lstrip("/")


@dataclass(frozen=True)
class PageLinks:
    """Links from one page of the site (``page`` is where it is written)."""

    settings: Settings
    page: str

    def __call__(self, target: str) -> str:
        """To a page (``articles/x/``, '' for home) or a file (``feed.xml``) of the site."""
        return relative_url(self.page, target, self.settings.directory_urls)

    def content(self, url: str) -> str:
        """A URL written in an article (a link, an image): relative when it is a page of
        the site or a file it serves (``/images/x.png``); absolute when it is a route of
        the subscriber service at ``base_url`` (``/subscribe``); else as written."""
        target = site_path(self.settings, url)
        if target is None:
            return url
        path, tail = _split(target)
        folder = path.strip("/")
        if "." in folder.rsplit("/", 1)[-1]:
            return self(target)  # a file
        if not folder or folder.split("/")[0] in PAGE_FOLDERS:
            return self((folder + "/" if folder else "") + tail)
        return f"{self.settings.base_url}/{target}"

    def html(self, fragment: str) -> str:
        """An article's HTML with its links and images as ``content`` makes them."""
        if "href=" not in fragment and "src=" not in fragment:
            return fragment
        root = parse_fragment(fragment)
        for el in root.iter("a", "img"):
            attr = "href" if el.tag == "a" else "src"
            value = el.get(attr)
            if value:
                el.set(attr, self.content(value))
        return serialize_fragment(root)


def absolute_url(settings: Settings, url: str) -> str:
    """A URL written in an article, made absolute (for Open Graph and JSON-LD)."""
    if "://" in url:
        return url
    if url.startswith("//"):
        return "https:" + url
    return settings.base_url + "/" + url.lstrip("/")


def favicon_path(settings: Settings) -> str:
    """Where the build writes the favicon in the site."""
    suffix = Path(settings.favicon).suffix.lower() if settings.favicon else ".svg"
    return f"assets/favicon{suffix}"


def favicon_bytes(settings: Settings) -> bytes:
    """The favicon: the file the setting names (from the working folder), or the
    default of the templates."""
    path = Path(settings.favicon) if settings.favicon else None
    if path is None:
        path = settings.templates_dir / "web" / "favicon.svg"
    elif path.suffix.lower() not in FAVICON_TYPES:
        raise ConfigError(f"setting favicon: {path} is not an .svg, .png or .ico file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"setting favicon: cannot read {path} ({exc.strerror})") from None


# ---------------------------------------------------------------------------
# Pages


def _context(
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


def article_url(settings: Settings, slug: str) -> str:
    return f"{settings.base_url}/articles/{slug}/"


def article_page_path(slug: str) -> str:
    return f"articles/{slug}/index.html"


def article_page(
    settings: Settings,
    article: Article,
    body: Body,
    cards: list[hot.HotCard],
    nav: list[dict[str, str]],
    css_version: str,
) -> str:
    env = environment(settings.templates_dir)
    url = article_url(settings, article.slug)
    ctx = _context(settings, nav, css_version, article_page_path(article.slug))
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
        beacon=settings.page_view_beacon,
        beacon_url=f"{settings.base_url}/v/{article.slug}",
        absolute=lambda src: absolute_url(settings, src),
    )
    return env.get_template("web/article.html").render(ctx)


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


# ---------------------------------------------------------------------------
# The build


class Builder:
    def __init__(
        self,
        settings: Settings,
        out_dir: Path,
        *,
        content_dir: Path | None = None,
        engagement: hot.Engagement | None = None,
        pool: Pool | None = None,
    ) -> None:
        self.settings = settings
        self.out_dir = out_dir
        self.store = FileContentStore(content_dir or settings.content_dir, settings)
        self.engagement = engagement
        self.pool: Pool = pool or SerialPool()
        self.state_dir = out_dir / STATE_DIR
        self.cache_dir = self.state_dir / "bodies"

    def _load_state(self, key: str) -> dict[str, Any]:
        path = self.state_dir / "state.json"
        try:
            state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {"key": key, "sources": {}, "pages": {}}
        if state.get("key") != key:  # other settings or renderer: start again
            return {"key": key, "sources": {}, "pages": state.get("pages", {})}
        return state

    def build(self, force: bool = False) -> BuildReport:
        started = time.perf_counter()
        report = BuildReport(self.out_dir, pool=self.pool.name)
        favicon = favicon_bytes(self.settings)  # a wrong setting stops the build first
        key = settings_key(self.settings)
        state = self._load_state(key)
        unit_settings = self.settings.render_values()  # no secret travels to the workers

        # 1. Read and parse every file; a broken one is reported, never fatal.
        files: dict[str, Path] = {}
        state_keys: dict[str, str] = {}
        parsed: list[Parsed] = []
        for source in self.store.sources():
            files[source.display_path] = source.path
            # state is keyed by the path within the content folder, whatever the cwd
            state_keys[source.display_path] = source.path.relative_to(self.store.root).as_posix()
            try:
                parsed.append(
                    parse_article(source.display_path, source.raw, self.settings, source.modified)
                )
            except Exception as exc:  # a bug must not take the other articles down
                log.exception("parsing %s", source.display_path)
                parsed.append(
                    Parsed(None, [Problem(source.display_path, 1, f"internal error: {exc!r}")])
                )
        catalog = build_catalog(parsed)
        report.problems.extend(catalog.problems)

        # 2. Bodies: analyse the articles whose bytes changed since the last build.
        summaries: dict[str, dict[str, Any]] = {}
        stale: list[Article] = []
        for article in catalog.articles.values():
            known = state["sources"].get(state_keys[article.path])
            cached = self.cache_dir / f"{article.source_hash}.json"
            if not force and known and known["hash"] == article.source_hash and cached.exists():
                summaries[article.path] = known
            else:
                stale.append(article)
        units: list[Unit] = [
            {
                "settings": unit_settings,
                "cache_dir": str(self.cache_dir),
                "files": [[str(files[a.path]), a.path] for a in chunk],
            }
            for chunk in _chunks(stale, CHUNK)
        ]
        for result in self.pool.run("analyse", units):
            for summary in result["results"]:
                if summary["hash"] is not None:
                    summaries[summary["path"]] = summary

        # 3. Problems that need the whole catalog (links to unknown articles).
        slugs = {a.slug for a in catalog.articles.values() if a.is_published}
        broken: set[str] = set()
        for article in catalog.articles.values():
            summary = summaries.get(article.path)
            if summary is None:
                broken.add(article.slug)
                continue
            problems = [Problem(article.path, line, text) for line, text in summary["problems"]]
            if article.is_published:
                links = (Link(href, line, None, slug) for slug, line, href in summary["links"])
                problems += link_problems(article.path, links, slugs)
            if problems:
                broken.add(article.slug)
                report.problems.extend(problems)
        published = [a for a in catalog.published() if a.slug not in broken]
        report.articles = len(published)

        # 4. Plan the pages and render those whose key changed.
        scores = hot.current_scores(self.engagement)
        css = (self.settings.templates_dir / "web" / "site.css").read_bytes()
        css_version = _hash(css.decode("utf-8"))[:10]
        tpl = templates_version(self.settings.templates_dir)
        nav = _nav(published)
        pages: dict[str, str] = {}
        jobs = []
        # Rank once: the block on a page is the top hot_size + 1 minus the page itself.
        size = self.settings.hot_size
        top = [c.__dict__ for c in hot.cards(hot.rank(published, scores, size=size + 1),
                                             self.settings)]  # fmt: skip
        for article in published:
            cards = [c for c in top if c["slug"] != article.slug][:size]
            page = article_page_path(article.slug)
            page_key = _hash(key, tpl, article.source_hash, cards, nav)
            pages[page] = page_key
            if force or state["pages"].get(page) != page_key or not (self.out_dir / page).exists():
                jobs.append(
                    {"file": str(files[article.path]), "path": article.path,
                     "hash": article.source_hash, "hot": cards, "page": page}
                )  # fmt: skip
            else:
                report.unchanged += 1
        units = [
            {
                "settings": unit_settings,
                "out_dir": str(self.out_dir),
                "cache_dir": str(self.cache_dir),
                "nav": nav,
                "css_version": css_version,
                "jobs": chunk,
            }
            for chunk in _chunks(jobs, CHUNK)
        ]
        for result in self.pool.run("render_articles", units):
            report.written.extend(result["written"])

        for page, page_key, render in self._site_pages(
            catalog, published, scores, nav, css, css_version, key, tpl, favicon
        ):
            pages[page] = page_key
            if force or state["pages"].get(page) != page_key or not (self.out_dir / page).exists():
                atomic_write(self.out_dir / page, render())
                report.written.append(page)
            else:
                report.unchanged += 1

        # 5. Remove pages nobody makes any more (deleted or unpublished articles), but
        #    keep the last good page of an article that is broken right now, including
        #    files that no longer parse at all (known by what the last build read).
        failed = set(files) - {a.path for a in catalog.articles.values()}
        for path in failed:
            if state_keys[path] in state["sources"]:
                summaries[path] = state["sources"][state_keys[path]]
                broken.add(summaries[path]["slug"])
        keep = {article_page_path(slug) for slug in broken}
        for page in sorted(set(state["pages"]) - set(pages) - keep):
            target = self.out_dir / page
            if target.exists():
                target.unlink()
                report.removed.append(page)
            _prune_empty(target.parent, self.out_dir)
        for page in keep & set(state["pages"]):
            pages[page] = state["pages"][page]

        new_state: dict[str, Any] = {
            "key": key,
            "sources": {state_keys[p]: summaries[p] for p in files if p in summaries},
            "pages": pages,
        }  # fmt: skip
        atomic_write(self.state_dir / "state.json", json.dumps(new_state))
        self._prune_cache({s["hash"] for s in new_state["sources"].values()})
        report.seconds = time.perf_counter() - started
        return report

    def _site_pages(
        self,
        catalog: Catalog,
        published: list[Article],
        scores: dict[str, float],
        nav: list[dict[str, str]],
        css: bytes,
        css_version: str,
        key: str,
        tpl: str,
        favicon: bytes,
    ) -> Iterable[tuple[str, str, Any]]:
        settings = self.settings
        env = environment(settings.templates_dir)
        listed = [_card(a) for a in published]

        yield "assets/site.css", _hash(css.decode()), lambda: css
        if settings.page_view_beacon:
            beacon = (settings.templates_dir / "web" / "beacon.js").read_bytes()
            yield "assets/beacon.js", hashlib.sha256(beacon).hexdigest(), lambda: beacon
        yield favicon_path(settings), hashlib.sha256(favicon).hexdigest(), lambda: favicon

        home_hot = [c.__dict__ for c in hot.cards(
            hot.rank(published, scores, size=settings.hot_size), settings)]  # fmt: skip
        latest = published[:20]

        def home() -> str:
            return env.get_template("web/index.html").render(
                _context(settings, nav, css_version, "index.html"),
                canonical=settings.base_url + "/", hot=home_hot, latest=latest,
            )  # fmt: skip

        yield "index.html", _hash(key, tpl, home_hot, [_card(a) for a in latest], nav), home

        for kind, attr, folder in (("Category", "category", "category"),
                                   ("Series", "series", "series")):  # fmt: skip
            groups: dict[str, list[Article]] = {}
            for a in published:
                name = getattr(a, attr)
                if name:
                    groups.setdefault(name, []).append(a)
            for name, items in groups.items():
                slug = slugify_heading(name)
                page = f"{folder}/{slug}/index.html"

                def listing(kind: str = kind, name: str = name, items: list[Article] = items,
                            page: str = page,
                            url: str = f"{settings.base_url}/{folder}/{slug}/") -> str:  # fmt: skip
                    return env.get_template("web/listing.html").render(
                        _context(settings, nav, css_version, page),
                        canonical=url, kind=kind, heading=name, articles=items,
                    )  # fmt: skip

                yield page, _hash(key, tpl, kind, name, [_card(a) for a in items], nav), listing

        yield "feed.xml", _hash(key, listed[:50]), lambda: _feed(settings, published[:50])
        yield "sitemap.xml", _hash(key, listed), lambda: _sitemap(settings, env, published, nav)
        yield (
            "robots.txt",
            _hash(key),
            lambda: f"User-agent: *\nAllow: /\nSitemap: {settings.base_url}/sitemap.xml\n",
        )

    def _prune_cache(self, live: set[str]) -> None:
        if not self.cache_dir.is_dir():
            return
        for entry in self.cache_dir.iterdir():
            if entry.suffix == ".json" and entry.stem not in live:
                entry.unlink(missing_ok=True)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _card(a: Article) -> dict[str, Any]:
    """What lists, feeds and sitemaps show of an article (not its body)."""
    return {"slug": a.slug, "title": a.title, "category": a.category, "series": a.series,
            "description": a.description, "author": a.author, "date": a.date.isoformat(),
            "published": a.published.isoformat() if a.published else None}  # fmt: skip


def _nav(published: list[Article]) -> list[dict[str, str]]:
    names = sorted({a.category for a in published})
    return [{"name": n, "slug": slugify_heading(n)} for n in names]


def _feed(settings: Settings, articles: list[Article]) -> bytes:
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


def _sitemap(settings: Settings, env: Any, published: list[Article], nav: list[Any]) -> str:
    urls: list[tuple[str, str | None]] = [(settings.base_url + "/", None)]
    urls += [(article_url(settings, a.slug), a.date.date().isoformat()) for a in published]
    urls += [(f"{settings.base_url}/category/{c['slug']}/", None) for c in nav]
    series = sorted({a.series for a in published if a.series})
    urls += [(f"{settings.base_url}/series/{slugify_heading(s)}/", None) for s in series]
    return str(env.get_template("web/sitemap.xml").render(urls=urls))


def _prune_empty(folder: Path, top: Path) -> None:
    while folder != top and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
