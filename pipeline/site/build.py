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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.content.article import Article, Parsed
from pipeline.content.frontmatter import body_of, parse_article
from pipeline.content.store import Catalog, FileContentStore, Source, build_catalog
from pipeline.errors import Problem
from pipeline.files import atomic_write
from pipeline.render import hot
from pipeline.render.markup import (
    Link,
    link_problems,
    slugify_heading,
)
from pipeline.render.policy import article_page_path, replies_open
from pipeline.render.templating import environment, templates_version
from pipeline.settings import Settings
from pipeline.site.links import favicon_bytes, favicon_path
from pipeline.site.pages import card, feed, nav_for, page_context, reply_form_token, sitemap
from pipeline.site.pool import Pool, SerialPool
from pipeline.site.units import Unit

log = logging.getLogger(__name__)

STATE_DIR = ".letterpress"
FORMAT = 9  # bump when the meaning of cached data changes
CHUNK = 50  # articles per unit of work
# What an article takes from its file at each build; the rest of it is kept in the state.
_FROM_THE_FILE = ("body", "path", "source_hash", "modified")


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
        """One incremental build, in the five steps of ``_Pass``."""
        started = time.perf_counter()
        report = BuildReport(self.out_dir, pool=self.pool.name)
        favicon = favicon_bytes(self.settings)  # a wrong setting stops the build first
        key = settings_key(self.settings)
        run = _Pass(self, report, key, self._load_state(key), force)
        catalog = run.read()
        run.analyse(catalog)
        published = run.check(catalog)
        scores = hot.current_scores(self.engagement)
        css = (self.settings.templates_dir / "web" / "site.css").read_bytes()
        css_version = _hash(css.decode("utf-8"))[:10]
        tpl = templates_version(self.settings.templates_dir)
        nav = nav_for(published)
        run.render_articles(published, scores, nav, css_version, tpl)
        for page, page_key, render in self._site_pages(
            catalog, published, scores, nav, css, css_version, key, tpl, favicon
        ):
            run.write(page, page_key, render)
        run.prune(catalog)
        run.save()
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
        listed = [card(a) for a in published]

        yield "assets/site.css", _hash(css.decode()), lambda: css
        if settings.page_view_beacon:
            beacon = (settings.templates_dir / "web" / "beacon.js").read_bytes()
            yield "assets/beacon.js", hashlib.sha256(beacon).hexdigest(), lambda: beacon
        if any(replies_open(settings, a) for a in published):
            script = (settings.templates_dir / "web" / "replies.js").read_bytes()
            yield "assets/replies.js", hashlib.sha256(script).hexdigest(), lambda: script
        yield favicon_path(settings), hashlib.sha256(favicon).hexdigest(), lambda: favicon

        home_hot = [c.__dict__ for c in hot.cards(
            hot.rank(published, scores, size=settings.hot_size), settings)]  # fmt: skip
        latest = published[:20]

        def home() -> str:
            return env.get_template("web/index.html").render(
                page_context(settings, nav, css_version, "index.html"),
                canonical=settings.base_url + "/", hot=home_hot, latest=latest,
            )  # fmt: skip

        yield "index.html", _hash(key, tpl, home_hot, [card(a) for a in latest], nav), home

        yield from self._listing_pages(published, nav, css_version, key, tpl)

        yield "feed.xml", _hash(key, listed[:50]), lambda: feed(settings, published[:50])
        yield "sitemap.xml", _hash(key, listed), lambda: sitemap(settings, env, published, nav)
        yield (
            "robots.txt",
            _hash(key),
            lambda: f"User-agent: *\nAllow: /\nSitemap: {settings.base_url}/sitemap.xml\n",
        )

    def _listing_pages(
        self,
        published: list[Article],
        nav: list[dict[str, str]],
        css_version: str,
        key: str,
        tpl: str,
    ) -> Iterable[tuple[str, str, Any]]:
        """A page per category and per series, listing its articles."""
        settings = self.settings
        env = environment(settings.templates_dir)
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
                        page_context(settings, nav, css_version, page),
                        canonical=url, kind=kind, heading=name, articles=items,
                    )  # fmt: skip

                yield page, _hash(key, tpl, kind, name, [card(a) for a in items], nav), listing

    def prune_cache(self, live: set[str]) -> None:
        if not self.cache_dir.is_dir():
            return
        for entry in self.cache_dir.iterdir():
            if entry.suffix == ".json" and entry.stem not in live:
                entry.unlink(missing_ok=True)


@dataclass
class _Pass:
    """What one build learns as it goes: the files, what their bodies hold, the pages
    it makes and the articles that are broken right now."""

    builder: Builder
    report: BuildReport
    key: str
    state: dict[str, Any]
    force: bool
    files: dict[str, Path] = field(default_factory=dict)  # display path -> file
    state_keys: dict[str, str] = field(default_factory=dict)  # display path -> state key
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # slugs
    pages: dict[str, str] = field(default_factory=dict)  # page -> its key
    fronts: dict[str, dict[str, Any]] = field(default_factory=dict)  # display path -> article

    def read(self) -> Catalog:
        """1. Read and parse every file; a broken one is reported, never fatal."""
        store, settings = self.builder.store, self.builder.settings
        parsed: list[Parsed] = []
        for source in store.sources():
            self.files[source.display_path] = source.path
            # state is keyed by the path within the content folder, whatever the cwd
            key = source.path.relative_to(store.root).as_posix()
            self.state_keys[source.display_path] = key
            try:
                known = self._known_front(key, source)
                if known is not None:
                    parsed.append(Parsed(known, []))
                    self.fronts[source.display_path] = self.state["sources"][key]["front"]
                    continue
                result = parse_article(source.display_path, source.raw, settings, source.modified)
                parsed.append(result)
            except Exception as exc:  # a bug must not take the other articles down
                log.exception("parsing %s", source.display_path)
                parsed.append(
                    Parsed(None, [Problem(source.display_path, 1, f"internal error: {exc!r}")])
                )
        catalog = build_catalog(parsed)
        self.report.problems.extend(catalog.problems)
        for article in catalog.articles.values():  # kept for the next build, body aside
            if article.path in self.fronts:  # the last build's, unchanged
                continue
            front = article.to_json()
            for name in _FROM_THE_FILE:
                del front[name]
            self.fronts[article.path] = front
        return catalog

    def _known_front(self, key: str, source: Source) -> Article | None:
        """The article as the last build parsed it, when the file's bytes (and the
        settings, in the state's key) are the same: its front matter is not parsed
        again, only its body taken from the file."""
        known = self.state["sources"].get(key)
        if self.force or not known or "front" not in known or known["hash"] != source.hash:
            return None
        from_the_file = {  # the fields of _FROM_THE_FILE
            "path": source.display_path,
            "source_hash": source.hash,
            "modified": source.modified.isoformat(),
            "body": body_of(source.raw),
        }
        return Article.from_json({**known["front"], **from_the_file})

    def analyse(self, catalog: Catalog) -> None:
        """2. Bodies: analyse the articles whose bytes changed since the last build."""
        cache_dir = self.builder.cache_dir
        stale: list[Article] = []
        for article in catalog.articles.values():
            known = self.state["sources"].get(self.state_keys[article.path])
            cached = cache_dir / f"{article.source_hash}.json"
            if (
                not self.force
                and known
                and known["hash"] == article.source_hash
                and cached.exists()
            ):
                self.summaries[article.path] = known
            else:
                stale.append(article)
        units: list[Unit] = [
            {
                "settings": self.builder.settings.render_values(),  # no secret travels
                "cache_dir": str(cache_dir),
                "articles": [a.to_json() for a in chunk],
            }
            for chunk in _chunks(stale, CHUNK)
        ]
        for result in self.builder.pool.run("analyse", units):
            for summary in result["results"]:
                self.summaries[summary["path"]] = summary

    def check(self, catalog: Catalog) -> list[Article]:
        """3. Problems that need the whole catalog (links to unknown articles); the
        published articles without problems are the ones the site shows."""
        slugs = {a.slug for a in catalog.articles.values() if a.is_published}
        for article in catalog.articles.values():
            summary = self.summaries.get(article.path)
            if summary is None:
                self.broken.add(article.slug)
                continue
            problems = [Problem(article.path, line, text) for line, text in summary["problems"]]
            if article.is_published:
                links = (Link(href, line, None, slug) for slug, line, href in summary["links"])
                problems += link_problems(article.path, links, slugs)
            if problems:
                self.broken.add(article.slug)
                self.report.problems.extend(problems)
        published = [a for a in catalog.published() if a.slug not in self.broken]
        self.report.articles = len(published)
        return published

    def stale(self, page: str, page_key: str) -> bool:
        self.pages[page] = page_key
        if self.force or self.state["pages"].get(page) != page_key:
            return True
        if not (self.builder.out_dir / page).exists():
            return True
        self.report.unchanged += 1
        return False

    def render_articles(
        self,
        published: list[Article],
        scores: dict[str, float],
        nav: list[dict[str, str]],
        css_version: str,
        tpl: str,
    ) -> None:
        """4a. The article pages whose key changed, as units of work."""
        size = self.builder.settings.hot_size
        # Rank once: the block on a page is the top hot_size + 1 minus the page itself.
        top = [c.__dict__ for c in hot.cards(hot.rank(published, scores, size=size + 1),
                                             self.builder.settings)]  # fmt: skip
        jobs = []
        # What every page shares is hashed once; a page's key hashes those hashes.
        shared, card_keys = _hash(self.key, tpl, nav), {c["slug"]: _hash(c) for c in top}
        for article in published:
            cards = [c for c in top if c["slug"] != article.slug][:size]
            page = article_page_path(article.slug)
            # The reply form's token is made here: the secret never goes to the units.
            token = reply_form_token(self.builder.settings, article)
            key = _hash(shared, article.source_hash, [card_keys[c["slug"]] for c in cards], token)
            if self.stale(page, key):
                jobs.append(
                    {"article": article.to_json(), "hot": cards, "page": page, "token": token}
                )
        units = [
            {
                "settings": self.builder.settings.render_values(),
                "out_dir": str(self.builder.out_dir),
                "cache_dir": str(self.builder.cache_dir),
                "nav": nav,
                "css_version": css_version,
                "jobs": chunk,
            }
            for chunk in _chunks(jobs, CHUNK)
        ]
        for result in self.builder.pool.run("render_articles", units):
            self.report.written.extend(result["written"])

    def write(self, page: str, page_key: str, render: Callable[[], str | bytes]) -> None:
        """4b. One of the other pages, when its key changed."""
        if self.stale(page, page_key):
            atomic_write(self.builder.out_dir / page, render())
            self.report.written.append(page)

    def prune(self, catalog: Catalog) -> None:
        """5. Remove pages nobody makes any more (deleted or unpublished articles), but
        keep the last good page of an article that is broken right now, including files
        that no longer parse at all (known by what the last build read)."""
        out_dir, sources = self.builder.out_dir, self.state["sources"]
        failed = set(self.files) - {a.path for a in catalog.articles.values()}
        for path in failed:
            if self.state_keys[path] in sources:
                self.summaries[path] = sources[self.state_keys[path]]
                self.broken.add(self.summaries[path]["slug"])
        keep = {article_page_path(slug) for slug in self.broken}
        for page in sorted(set(self.state["pages"]) - set(self.pages) - keep):
            target = out_dir / page
            if target.exists():
                target.unlink()
                self.report.removed.append(page)
            _prune_empty(target.parent, out_dir)
        for page in keep & set(self.state["pages"]):
            self.pages[page] = self.state["pages"][page]

    def save(self) -> None:
        """What the next build starts from; cached bodies nobody uses go."""
        sources = {}
        for p in self.files:
            if p in self.summaries:
                entry = self.summaries[p]
                sources[self.state_keys[p]] = (
                    {**entry, "front": self.fronts[p]} if p in self.fronts else entry
                )
        new_state: dict[str, Any] = {"key": self.key, "sources": sources, "pages": self.pages}
        atomic_write(self.builder.state_dir / "state.json", json.dumps(new_state))
        self.builder.prune_cache({s["hash"] for s in new_state["sources"].values()})


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _prune_empty(folder: Path, top: Path) -> None:
    while folder != top and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
