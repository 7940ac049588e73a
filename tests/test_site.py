"""The web variant: pages, feed, sitemap, metadata, escaping and incremental builds."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import lxml.html
import pytest
import redis

from pipeline.errors import ConfigError
from pipeline.render.hot import Engagement
from pipeline.settings import Settings
from pipeline.site.build import Builder
from pipeline.site.pool import SerialPool
from pipeline.site.units import Unit
from tests.conftest import front, write_article

GUIDE = "articles/vitamin-k2-for-directing-calcium-to-bones/index.html"
ROLE = "articles/the-role-of-vitamin-k2-in-calcium-distribution/index.html"


def page(out: Path, rel: str) -> lxml.html.HtmlElement:
    return lxml.html.fromstring((out / rel).read_text(encoding="utf-8"))


def test_full_build_writes_every_page(
    settings: Settings, content_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    report = Builder(settings, out, content_dir=content_dir).build()
    assert report.problems == []
    assert report.articles == 6
    expected = {
        "index.html", "feed.xml", "sitemap.xml", "robots.txt", "assets/site.css", GUIDE, ROLE,
        "category/vitamins-supplements/index.html", "category/symptom-decoder-series/index.html",
        "series/symptom-decoder-series/index.html",
    }  # fmt: skip
    assert expected <= set(report.written)
    assert not list(out.rglob(".*.html*"))  # no temporary files left behind

    doc = page(out, GUIDE)
    url = "https://news.example.org/articles/vitamin-k2-for-directing-calcium-to-bones/"
    assert doc.get("lang") == "en"
    assert doc.xpath("//link[@rel='canonical']/@href") == [url]
    assert doc.xpath("//meta[@property='og:url']/@content") == [url]
    assert doc.xpath("//meta[@property='og:type']/@content") == ["article"]
    assert doc.xpath("//h1/text()") == ["Vitamin K2 for Directing Calcium to Bones"]
    blocks = [json.loads(s) for s in doc.xpath("//script[@type='application/ld+json']/text()")]
    faq = next(b for b in blocks[0] if b["@type"] == "FAQPage")
    assert (
        next(q["name"] for q in faq["mainEntity"])
        == "Why is vitamin K2 important when taking calcium?"
    )
    assert len(faq["mainEntity"]) == 4
    # the seed's order: FAQ, then Final Thoughts, then the disclaimer, then Hot Articles;
    # the other seed's "Leave a Reply" comes with the replies, after the article
    headings = [h.text_content() for h in doc.xpath("//h2")]
    tail = headings[headings.index("Frequently Asked Questions (FAQ)") :]
    assert tail == ["Frequently Asked Questions (FAQ)", "Final Thoughts", "Important Disclaimer",
                    "Replies", "Leave a Reply", "Hot Articles"]  # fmt: skip
    assert "does not replace professional medical advice" in doc.text_content()
    assert not doc.xpath("//aside[@class='disclosure']")  # no affiliate links in the guide

    feed = ElementTree.parse(out / "feed.xml").getroot()
    atom = "{http://www.w3.org/2005/Atom}"
    assert feed.tag == f"{atom}feed"
    assert len(feed.findall(f"{atom}entry")) == 6
    sitemap = ElementTree.parse(out / "sitemap.xml").getroot()
    locs = [e.text for e in sitemap.iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")]
    assert url in locs and "https://news.example.org/" in locs


def test_disclosure_sits_at_the_top_of_an_affiliate_article(
    settings: Settings, content_dir: Path, tmp_path: Path
) -> None:
    body = "First paragraph.\n\nSecond.\n\nBuy it [on Amazon](https://www.amazon.com/dp/B0?tag=x-20).\n"
    write_article(content_dir, "with-links", front("With links"), body)
    out = tmp_path / "site"
    Builder(settings, out, content_dir=content_dir).build()
    for rel in (ROLE, "articles/with-links/index.html"):
        html = (out / rel).read_text()
        disclosure = html.index(settings.affiliate_disclosure)
        assert disclosure < html.index('<div class="body">')
    html = (out / "articles/with-links/index.html").read_text()
    assert html.index(settings.affiliate_disclosure) < html.index("amazon.com")
    assert 'rel="sponsored nofollow noopener"' in html


def test_front_matter_is_escaped_everywhere(
    settings: Settings, content_dir: Path, tmp_path: Path
) -> None:
    evil = "<script>alert(1)</script>"
    write_article(
        content_dir,
        "evil",
        f"title: '{evil} & \"quotes\"'\ncategory: '<b>Cat</b>'\nsummary: '\"><img src=x onerror=alert(1)>'"
        "\nstatus: published\npublished: 2026-05-01\ntags: ['<i>t</i>']\nseries: '<u>S</u>'",
    )
    out = tmp_path / "site"
    Builder(settings, out, content_dir=content_dir).build()
    for path in out.rglob("*"):
        if path.suffix in (".html", ".xml"):
            text = path.read_text()
            assert "<script>alert" not in text, path
            assert "<img src=x" not in text and "<b>Cat</b>" not in text, path
    article = (out / "articles/evil/index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in article
    assert "\\u003cscript\\u003e" in article  # JSON-LD is escaped for a script element


def test_rebuild_renders_only_what_changed(
    settings: Settings, content_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    builder = Builder(settings, out, content_dir=content_dir)
    builder.build()
    again = builder.build()
    assert again.written == [] and again.problems == []
    path = content_dir / "poor-appetite-but-constant-fatigue.md"
    path.write_text(path.read_text() + "\nAn added sentence.\n")
    edited = builder.build()
    assert edited.written == ["articles/poor-appetite-but-constant-fatigue/index.html"]
    assert "An added sentence." in (out / edited.written[0]).read_text()
    # a new title shows on every page whose hot block lists the article, and in the lists
    path.write_text(path.read_text().replace('title: "Poor Appetite', 'title: "Low Appetite'))
    retitled = builder.build()
    assert "index.html" in retitled.written and "feed.xml" in retitled.written
    # itself and the four pages whose hot block lists it; The Role's block stops before it
    assert len([p for p in retitled.written if p.startswith("articles/")]) == 5
    assert ROLE not in retitled.written


def test_a_rebuild_parses_only_the_files_whose_bytes_changed(
    settings: Settings, content_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front matter of the others comes from the build state, with the body read
    from the file: the pages are what a build that parses everything makes."""
    import pipeline.site.build as build_module

    parsed: list[str] = []
    real = build_module.parse_article

    def counting(where: str, *args: Any) -> Any:
        parsed.append(where)
        return real(where, *args)

    monkeypatch.setattr(build_module, "parse_article", counting)
    out = tmp_path / "site"
    builder = Builder(settings, out, content_dir=content_dir)
    builder.build()
    files = len(list(content_dir.glob("*.md")))
    assert len(parsed) == files
    path = content_dir / "poor-appetite-but-constant-fatigue.md"
    path.write_text(path.read_text().replace('title: "Poor Appetite', 'title: "Low Appetite'))
    parsed.clear()
    builder.build()
    assert [Path(p).name for p in parsed] == [path.name]
    parsed.clear()
    kept = builder.build()
    assert parsed == [] and kept.written == []
    fresh = Builder(settings, tmp_path / "fresh", content_dir=content_dir).build()
    assert fresh.written  # every page, each file parsed
    for rel in [GUIDE, ROLE, "articles/poor-appetite-but-constant-fatigue/index.html"]:
        assert (out / rel).read_text() == (tmp_path / "fresh" / rel).read_text()


def test_templates_and_settings_changes_rebuild_everything(
    make_settings: Callable[..., Settings], content_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    Builder(make_settings(), out, content_dir=content_dir).build()
    renamed = Builder(make_settings(site_name="Another Name"), out, content_dir=content_dir).build()
    assert len([p for p in renamed.written if p.startswith("articles/")]) == 6
    assert "Another Name" in (out / GUIDE).read_text()


def test_deleted_and_unpublished_articles_disappear(
    settings: Settings, content_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    builder = Builder(settings, out, content_dir=content_dir)
    builder.build()
    (content_dir / "poor-appetite-but-constant-fatigue.md").unlink()
    role = content_dir / "the-role-of-vitamin-k2-in-calcium-distribution.md"
    role.write_text(role.read_text().replace("status: published", "status: draft"))
    report = builder.build()
    assert sorted(report.removed) == [
        "articles/poor-appetite-but-constant-fatigue/index.html",
        ROLE,
        "category/digestive-health-absorption/index.html",  # its only article is gone
    ]
    assert not (out / "articles/poor-appetite-but-constant-fatigue").exists()
    assert "poor-appetite" not in (out / "sitemap.xml").read_text()


def test_a_broken_article_keeps_its_last_page_and_never_stops_the_rest(
    settings: Settings, content_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    builder = Builder(settings, out, content_dir=content_dir)
    builder.build()
    before = (out / ROLE).read_text()
    role = content_dir / "the-role-of-vitamin-k2-in-calcium-distribution.md"
    role.write_text(role.read_text().replace("title:", "title: [broken"))
    other = content_dir / "early-warning-signs-you-ignore.md"
    other.write_text(other.read_text() + "\nStill built.\n")
    report = builder.build()
    assert [Path(p.path).name for p in report.problems] == [role.name]
    assert (out / ROLE).read_text() == before
    assert (
        "Still built." in (out / "articles/early-warning-signs-you-ignore/index.html").read_text()
    )


def test_a_ten_megabyte_article_is_refused_and_the_site_still_builds(
    settings: Settings, content_dir: Path, tmp_path: Path
) -> None:
    big = content_dir / "huge.md"
    big.write_bytes(f"---\n{front('Huge')}\n---\n".encode() + b"lorem ipsum " * 900_000)
    started = time.perf_counter()
    report = Builder(settings, tmp_path / "site", content_dir=content_dir).build()
    assert time.perf_counter() - started < 10
    assert [p.message.split(",")[0] for p in report.problems] == ["file is 10.8 MB"]
    assert report.articles == 6


def test_hot_block_on_pages_follows_engagement_in_redis(
    make_settings: Callable[..., Settings], redis_url: str, redis_client: redis.Redis,
    content_dir: Path, tmp_path: Path,
) -> None:  # fmt: skip
    settings = make_settings(redis_url=redis_url, redis_prefix="lptest")
    engagement = Engagement.from_settings(settings)
    assert engagement is not None
    for _ in range(3):
        engagement.record_click("the-role-of-vitamin-k2-in-calcium-distribution")
    out = tmp_path / "site"
    Builder(settings, out, content_dir=content_dir, engagement=engagement).build()
    cards = page(out, GUIDE).xpath("//aside[@class='hot']//h3/a/text()")
    assert cards[0] == "The Role of Vitamin K2 in Calcium Distribution"
    assert len(cards) == 4
    assert "Vitamin K2 for Directing Calcium to Bones" not in cards  # never the page itself


def test_category_pages_and_disclaimer_setting(
    make_settings: Callable[..., Settings], content_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(disclaimer_categories=["Mental & Cognitive Health"])
    out = tmp_path / "site"
    Builder(settings, out, content_dir=content_dir).build()
    anxiety = (
        out / "articles/anxiety-without-a-trigger-magnesium-deficiency/index.html"
    ).read_text()
    assert "Important Disclaimer" in anxiety
    # the seeds say `disclaimer: true`, so they show it whatever the categories say
    assert "Important Disclaimer" in (out / GUIDE).read_text()
    listing = page(out, "category/vitamins-supplements/index.html")
    titles = listing.xpath("//main//li//a/text()")
    assert titles == ["Vitamin K2 for Directing Calcium to Bones",
                      "The Role of Vitamin K2 in Calcium Distribution"]  # fmt: skip
    assert re.search(
        r"<h1[^>]*>Vitamins &amp; Supplements</h1>",
        (out / "category/vitamins-supplements/index.html").read_text(),
    )


def test_a_build_from_another_folder_is_still_incremental(
    settings: Settings, content_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "site"
    monkeypatch.chdir(tmp_path)
    Builder(settings, out, content_dir=Path("content")).build()
    monkeypatch.chdir(content_dir)
    again = Builder(settings, out, content_dir=Path(".")).build()
    assert again.written == [] and again.unchanged >= 16


def test_naming_a_redis_does_not_make_the_next_build_cold(
    make_settings: Callable[..., Settings], content_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    Builder(make_settings(), out, content_dir=content_dir).build()
    again = Builder(make_settings(redis_url="redis://127.0.0.1:1/0"), out, content_dir=content_dir)
    assert again.build().written == []


def test_build_and_check_word_a_broken_link_alike(
    settings: Settings, content_dir: Path, tmp_path: Path
) -> None:
    from pipeline.content.check import check

    write_article(content_dir, "linker", front(), "See [gone](/articles/gone/).\n")
    built = Builder(settings, tmp_path / "site", content_dir=content_dir).build().problems
    _, checked = check(settings, content_dir)
    assert [str(p) for p in built] == [str(p) for p in checked]
    assert checked[0].message == "link to unknown article 'gone' (/articles/gone/): check the slug"


# --- links relative to the page, absolute URLs for machines, favicon, JSON-LD ---------------

K2_ROLE_SLUG = "the-role-of-vitamin-k2-in-calcium-distribution"
LINKING_BODY = f"""See [the guide](/articles/vitamin-k2-for-directing-calcium-to-bones/) and
[its FAQ](https://news.example.org/articles/{K2_ROLE_SLUG}/#faq).

![Natto in a bowl](/images/photo.png)

[Subscribe](/subscribe), [elsewhere](https://example.com/x), [write](mailto:a@example.com),
[down here](#down-here).

## Down here
"""


def add_linking_article(content_dir: Path) -> None:
    hero = "hero:\n  src: /images/hero.png\n  alt: A bowl of natto"
    write_article(content_dir, "linking", front("Linking", series="Links") + "\n" + hero,
                  LINKING_BODY)  # fmt: skip


def add_images(out: Path) -> None:
    """The images the site serves (a build copies none)."""
    (out / "images").mkdir(exist_ok=True)
    for name in ("hero.png", "photo.png"):
        (out / "images" / name).write_bytes(b"\x89PNG\r\n\x1a\n")


def local_links(doc: lxml.html.HtmlElement) -> list[tuple[str, str]]:
    """(tag, URL) of every href and src that is neither absolute nor an anchor."""
    found = []
    for el in doc.xpath("//*[@href or @src]"):
        value = el.get("href") if el.get("href") is not None else el.get("src")
        if not value.startswith("#") and not re.match(r"^[a-z][a-z0-9+.-]*:", value):
            found.append((el.tag, value))
    return found


def html_pages(out: Path) -> list[Path]:
    pages = sorted(p for p in out.rglob("*.html") if ".letterpress" not in p.parts)
    assert len(pages) >= 12
    return pages


def test_every_link_resolves_from_disk(
    settings: Settings, content_dir: Path, tmp_path: Path
) -> None:
    add_linking_article(content_dir)
    out = tmp_path / "site"
    assert Builder(settings, out, content_dir=content_dir).build().problems == []
    add_images(out)
    for path in html_pages(out):
        for tag, link in local_links(page(out, str(path.relative_to(out)))):
            assert not link.startswith("/"), (path, link)  # never from the server's root
            target = (path.parent / re.split(r"[?#]", link)[0]).resolve()
            assert target.is_file(), (path, link)
            assert out.resolve() in target.parents, (path, link)
            if tag == "a":
                assert not link.endswith("/"), (path, link)  # a folder on disk is a listing
    home = page(out, "index.html")
    assert home.xpath("//a[@class='site-name']/@href") == ["index.html"]
    assert home.xpath("//link[@rel='icon']/@href") == ["assets/favicon.svg"]
    assert home.xpath("//link[@rel='stylesheet']/@href")[0].startswith("assets/site.css?v=")
    assert home.xpath("//footer//a/@href") == ["feed.xml", "sitemap.xml"]

    linking = page(out, "articles/linking/index.html")
    body = linking.xpath("//div[@class='body']")[0]
    assert body.xpath(".//a/@href") == [
        "../vitamin-k2-for-directing-calcium-to-bones/index.html",
        f"../{K2_ROLE_SLUG}/index.html#faq",
        "https://news.example.org/subscribe",  # the subscriber service, not a page
        "https://example.com/x",
        "mailto:a@example.com",
        "#down-here",
    ]
    assert body.xpath(".//img/@src") == ["../../images/photo.png"]
    assert linking.xpath("//figure[@class='hero']/img/@src") == ["../../images/hero.png"]
    assert linking.xpath("//header//p[@class='label']/a/@href") == [
        "../../category/testing/index.html", "../../series/links/index.html"]  # fmt: skip
    assert linking.xpath("//a[@class='site-name']/@href") == ["../../index.html"]
    beacon = linking.xpath("//script[@data-url]")[0]
    assert beacon.get("src") == "../../assets/beacon.js"
    assert beacon.get("data-url") == "https://news.example.org/v/linking"  # the service

    # The email of the same (cached) body keeps absolute links: it is not a page.
    from pipeline.content.store import FileContentStore
    from pipeline.render.emails import EmailRenderer

    email = EmailRenderer(settings).render(FileContentStore(content_dir, settings).catalog(),
                                           ["linking"]).html  # fmt: skip
    hrefs = lxml.html.fromstring(email).xpath("//a/@href | //img/@src")
    assert not [h for h in hrefs if h.startswith("../")]
    assert any(h.startswith("https://news.example.org/articles/vitamin-k2-") for h in hrefs)


def test_directory_urls_end_in_a_slash(
    make_settings: Callable[..., Settings], content_dir: Path, tmp_path: Path
) -> None:
    add_linking_article(content_dir)
    out = tmp_path / "site"
    Builder(make_settings(directory_urls=True), out, content_dir=content_dir).build()
    add_images(out)
    folders = 0
    for path in html_pages(out):
        for tag, link in local_links(page(out, str(path.relative_to(out)))):
            linked = re.split(r"[?#]", link)[0]
            target = path.parent / linked
            if tag == "a" and not re.search(r"\.[a-z]+$", linked):  # a page, not a file
                assert linked.endswith("/"), (path, link)
                assert (target / "index.html").is_file(), (path, link)
                folders += 1
            else:
                assert target.is_file(), (path, link)
            assert "index.html" not in link, (path, link)
    assert folders > 100
    assert page(out, "index.html").xpath("//a[@class='site-name']/@href") == ["./"]
    linking = page(out, "articles/linking/index.html")
    assert linking.xpath("//div[@class='body']//a/@href")[:2] == [
        "../vitamin-k2-for-directing-calcium-to-bones/", f"../{K2_ROLE_SLUG}/#faq"]  # fmt: skip
    assert linking.xpath("//a[@class='site-name']/@href") == ["../../"]


def test_urls_for_machines_stay_absolute_under_a_sub_path(
    make_settings: Callable[..., Settings], content_dir: Path, tmp_path: Path
) -> None:
    base = "https://news.example.org/blog"
    out = tmp_path / "site"
    Builder(make_settings(base_url=base), out, content_dir=content_dir).build()
    doc = page(out, GUIDE)
    url = f"{base}/articles/vitamin-k2-for-directing-calcium-to-bones/"
    assert doc.xpath("//link[@rel='canonical']/@href") == [url]
    assert doc.xpath("//meta[@property='og:url']/@content") == [url]
    assert doc.xpath("//link[@rel='alternate']/@href") == [f"{base}/feed.xml"]
    ld = json.loads(doc.xpath("//script[@type='application/ld+json']/text()")[0])[0]
    assert ld["mainEntityOfPage"] == url
    assert page(out, "index.html").xpath("//link[@rel='canonical']/@href") == [base + "/"]
    listing = page(out, "category/vitamins-supplements/index.html")
    assert listing.xpath("//link[@rel='canonical']/@href") == [
        f"{base}/category/vitamins-supplements/"]  # fmt: skip
    for path in html_pages(out):
        for _, link in local_links(page(out, str(path.relative_to(out)))):
            assert not link.startswith("/"), (path, link)  # nothing from the host's root

    atom = "{http://www.w3.org/2005/Atom}"
    feed = ElementTree.parse(out / "feed.xml").getroot()
    hrefs = [link.get("href") or "" for link in feed.iter(f"{atom}link")]
    assert hrefs and all(h.startswith(base + "/") for h in hrefs), hrefs
    assert all((e.text or "").startswith(base + "/") for e in feed.iter(f"{atom}id"))
    sitemap = ElementTree.parse(out / "sitemap.xml").getroot()
    locs = [e.text or "" for e in sitemap.iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")]
    assert len(locs) >= 12 and all(loc.startswith(base + "/") for loc in locs), locs
    assert f"Sitemap: {base}/sitemap.xml" in (out / "robots.txt").read_text()


def test_article_json_ld_has_image_date_modified_and_organization_author(
    make_settings: Callable[..., Settings], content_dir: Path, tmp_path: Path
) -> None:
    add_linking_article(content_dir)
    write_article(content_dir, "by-a-person",
                  front("By a person", author="Jane Doe", updated="2026-03-04"))  # fmt: skip
    write_article(content_dir, "by-the-site", front("By the site", author="Letterpress"))

    def article_ld(out: Path, slug: str) -> dict[str, Any]:
        doc = page(out, f"articles/{slug}/index.html")
        blocks = json.loads(doc.xpath("//script[@type='application/ld+json']/text()")[0])
        found: dict[str, Any] = next(b for b in blocks if b["@type"] == "Article")
        return found

    out = tmp_path / "site"
    Builder(make_settings(), out, content_dir=content_dir).build()
    guide = article_ld(out, "vitamin-k2-for-directing-calcium-to-bones")
    assert guide["author"] == {"@type": "Organization", "name": "Editorial Team"}
    assert guide["dateModified"] == guide["datePublished"]  # no updated: in its front matter
    assert "image" not in guide  # no hero
    linking = article_ld(out, "linking")
    assert linking["image"] == "https://news.example.org/images/hero.png"
    assert linking["author"]["@type"] == "Organization"  # default_author: Editorial Team
    person = article_ld(out, "by-a-person")
    assert person["author"] == {"@type": "Person", "name": "Jane Doe"}
    assert person["dateModified"] == "2026-03-04T00:00:00+00:00"
    assert person["datePublished"] == "2026-01-02T00:00:00+00:00"
    assert article_ld(out, "by-the-site")["author"]["@type"] == "Organization"  # site_name
    assert guide["publisher"]["@type"] == "Organization"

    other = tmp_path / "other"
    Builder(
        make_settings(organization_authors=["Jane Doe"]), other, content_dir=content_dir
    ).build()
    assert article_ld(other, "by-a-person")["author"]["@type"] == "Organization"
    assert article_ld(other, "linking")["author"]["@type"] == "Person"


def test_favicon_default_and_configured(
    make_settings: Callable[..., Settings], content_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    out = tmp_path / "site"
    Builder(make_settings(), out, content_dir=content_dir).build()
    shipped = Path(__file__).resolve().parent.parent / "templates" / "web" / "favicon.svg"
    assert (out / "assets" / "favicon.svg").read_bytes() == shipped.read_bytes()
    for path in html_pages(out):
        icons = page(out, str(path.relative_to(out))).xpath("//link[@rel='icon']")
        assert len(icons) == 1, path
        assert icons[0].get("type") == "image/svg+xml"
        assert (path.parent / icons[0].get("href")).resolve() == (out / "assets/favicon.svg")

    monkeypatch.chdir(tmp_path)  # the setting is a path from the working folder
    (tmp_path / "brand").mkdir()
    (tmp_path / "brand" / "icon.PNG").write_bytes(b"\x89PNG\r\n\x1a\nicon")
    report = Builder(make_settings(favicon="brand/icon.PNG"), out, content_dir=content_dir).build()
    assert "assets/favicon.png" in report.written
    assert "assets/favicon.svg" in report.removed
    assert (out / "assets" / "favicon.png").read_bytes() == b"\x89PNG\r\n\x1a\nicon"
    icon = page(out, GUIDE).xpath("//link[@rel='icon']")[0]
    assert (icon.get("href"), icon.get("type")) == ("../../assets/favicon.png", "image/png")

    for wrong, message in (("brand/missing.svg", "cannot read brand/missing.svg"),
                           ("brand/icon.gif", "is not an .svg, .png or .ico file")):  # fmt: skip
        with pytest.raises(ConfigError, match="setting favicon: .*" + re.escape(message)):
            Builder(
                make_settings(favicon=wrong), tmp_path / "never", content_dir=content_dir
            ).build()
        assert not (tmp_path / "never").exists()


def test_directory_urls_and_beacon_settings_rebuild_every_page(
    make_settings: Callable[..., Settings], content_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    first = Builder(make_settings(), out, content_dir=content_dir).build()
    pages = {p for p in first.written if p.endswith(".html")}
    switched = Builder(make_settings(directory_urls=True), out, content_dir=content_dir).build()
    assert pages <= set(switched.written)
    assert "assets/site.css" not in switched.written  # its bytes did not change
    assert page(out, GUIDE).xpath("//a[@class='site-name']/@href") == ["../../"]
    again = Builder(make_settings(directory_urls=True), out, content_dir=content_dir).build()
    assert again.written == []
    off = Builder(make_settings(directory_urls=True, page_view_beacon=False), out,
                  content_dir=content_dir).build()  # fmt: skip
    assert "assets/beacon.js" in off.removed
    assert page(out, GUIDE).xpath("//script/@src") == ["../../assets/replies.js"]


class RecordingPool(SerialPool):
    """Runs the units here, as the serial pool does, and keeps them as a broker would."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def run(self, work: str, units: list[Unit]) -> list[Unit]:
        self.sent.append(json.dumps(units))
        return super().run(work, units)


def test_build_units_carry_no_secret_and_send_settings_rerender_nothing(
    make_settings: Callable[..., Settings], content_dir: Path, tmp_path: Path
) -> None:
    secrets = {
        "database_url": "postgresql://letterpress:db-password-123@db.example/letterpress",
        "secret_key": "a-signing-key-that-must-stay-home",
        "smtp_url": "smtp://user:smtp-password-456@mail.example:587",
        "mailgun_api_key": "key-mailgun-789",
        "admin_token": "admin-token-abc",
    }
    pool = RecordingPool()
    out = tmp_path / "site"
    first = Builder(make_settings(**secrets), out, content_dir=content_dir, pool=pool).build()
    assert first.written and pool.sent
    sent = "".join(pool.sent)
    for name, value in secrets.items():
        assert value not in sent, name
    assert "database_url" not in sent and "send_rate" not in sent
    # A setting of sending changes no page; one of the pages changes them all.
    again = Builder(make_settings(**secrets, send_rate=5.0), out, content_dir=content_dir).build()
    assert again.written == []
    # A new secret key changes the pages whose reply form carries a token signed with it.
    rotated = Builder(
        make_settings(**{**secrets, "secret_key": "another-key-0123456"}),
        out,
        content_dir=content_dir,
    ).build()
    assert set(rotated.written) == {p for p in first.written if p.startswith("articles/")}
    renamed = Builder(
        make_settings(**secrets, site_name="Another Name"), out, content_dir=content_dir
    ).build()
    pages = [p for p in first.written if p.endswith(".html")]
    assert pages and set(pages) <= set(renamed.written)
