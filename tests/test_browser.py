"""The built site and the newsletter email in a real headless Chromium.

One module-scoped build of a copy of the repository's content (plus two articles added
here: one with an Amazon affiliate link, one with images) is served over HTTP on
127.0.0.1 (with ``directory_urls``, as a publisher's server would); a second build of the
same content with the default settings is opened from disk (file://). One Chromium
(Debian's, never a downloaded one) drives every test.
"""

from __future__ import annotations

import base64
import functools
import http.server
import itertools
import json
import re
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from pipeline.content.store import Catalog, FileContentStore
from pipeline.render.affiliate import SPONSORED_REL
from pipeline.render.emails import EmailRenderer
from pipeline.settings import Settings, load_settings
from pipeline.site.build import Builder
from tests.conftest import CONTENT, SEEDS, write_article

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
POSTAL_ADDRESS = "1 Test Street, Testville, TS 12345"

K2_GUIDE = "vitamin-k2-for-directing-calcium-to-bones"
K2_ROLE = "the-role-of-vitamin-k2-in-calcium-distribution"
AFFILIATE_SLUG = "choosing-a-vitamin-k2-supplement"
AFFILIATE_HREF = "https://www.amazon.com/dp/B0TEST?tag=abc-20"
IMAGES_SLUG = "what-natto-looks-like"

# The section headings of the K2 guide, as the seed article shows them (h2, in order).
K2_SECTIONS = [
    "Introduction",
    "What Is Vitamin K2?",
    "Why Vitamin K2 Matters for Bone Health",
    "How Vitamin K2 Works in the Body",
    "Who Needs Vitamin K2?",
    "Signs of Poor Calcium Utilization",
    "What Happens When Calcium Is Misplaced",
    "Natural Food Sources of Vitamin K2",
    "Forms of Vitamin K2 Supplements",
    "Dosage, Timing & Safety",
    "How Long Does Vitamin K2 Take to Work?",
    "Nutrients That Work with Vitamin K2",
    "Vitamin K2 vs Conventional Bone Treatments",
    "Frequently Asked Questions (FAQ)",
    "Final Thoughts",
    "Important Disclaimer",
    "Replies",
    "Leave a Reply",
    "Hot Articles",
]

# The seed's Hot Articles block on the K2 guide: (slug, label, title, subtitle).
K2_HOT_CARDS = [
    (
        "early-warning-signs-you-ignore",
        "Symptom Decoder Series",
        "Early Warning Signs You Ignore",
        "The Subtle Signals Your Body Sends Long Before Disease Appears",
    ),
    (
        "anxiety-without-a-trigger-magnesium-deficiency",
        "Mental & Cognitive Health",
        "Anxiety Without a Trigger: Could It Be a Magnesium…",
        "When Anxiety Appears Out of Nowhere, the Cause Is Often Biochemical — Not Psychological",
    ),
    (
        "burning-feet-at-night-vitamin-deficiencies",
        "Vitamin Deficiency Symptoms",
        "Burning Feet at Night? Check These Vitamin Deficiencies",
        "Burning Feet at Night? Check These Vitamin Deficiencies",
    ),
    (
        "poor-appetite-but-constant-fatigue",
        "Digestive Health & Absorption",
        "Poor Appetite but Constant Fatigue",
        "Poor Appetite but Constant Fatigue",
    ),
]

# Both added articles are older than every seed, so they never enter the seeds' hot blocks.
AFFILIATE_FRONT = f"""
title: "Choosing a Vitamin K2 Supplement"
slug: {AFFILIATE_SLUG}
subtitle: "MK-7, MK-4 and Combined Formulas Compared"
summary: "What to look for on the label of a vitamin K2 supplement."
category: "Vitamins & Supplements"
tags: [vitamin k2, supplements]
author: Editorial Team
published: 2025-12-01
status: published
affiliate: auto
disclaimer: true
"""
AFFILIATE_BODY = f"""
Vitamin K2 supplements come in two main forms, MK-4 and MK-7, and the label does not
always make clear which one a product contains or how much of it.

MK-7 stays active in the body for longer, so a smaller daily dose is enough; MK-4 is
cleared within hours and is usually taken several times a day.

One product we have used is [an MK-7 softgel]({AFFILIATE_HREF}), taken with a meal that
contains some fat.

## Reading the label

Look for the form (MK-7 or MK-4) and the amount in micrograms per serving.
"""
IMAGES_FRONT = f"""
title: "What Natto Looks Like"
slug: {IMAGES_SLUG}
summary: "Natto, the richest food source of vitamin K2, in pictures."
category: "Vitamins & Supplements"
published: 2025-11-01
status: published
hero:
  src: /images/natto-hero.png
  alt: A bowl of natto, sticky fermented soybeans, on a wooden table
"""
IMAGES_BODY = """
Natto is made of soybeans fermented with *Bacillus subtilis*.

![Natto beans pulled up on chopsticks, showing their sticky threads](/images/natto-bowl.png)

It is eaten for breakfast in Japan, usually over rice.
"""


@dataclass(frozen=True)
class Site:
    base_url: str
    settings: Settings
    catalog: Catalog
    content_dir: Path
    tmp: Path

    def url(self, slug: str) -> str:
        return f"{self.base_url}/articles/{slug}/"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        # An article's replies, as the subscriber service answers them when there are none
        # (tests/test_browser_replies.py runs the pages against the real service).
        if self.path.startswith("/api/replies/"):
            body = b'{"open": true, "token": "", "replies": []}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def do_POST(self) -> None:  # the page-view beacon, as the subscriber service answers it
        self.send_response(204 if self.path.startswith("/v/") else 404)
        self.send_header("content-length", "0")
        self.end_headers()


def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid one-colour RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    raw = (b"\x00" + bytes(rgb) * width) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def png_dimensions(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def add_images(out: Path) -> None:
    """The images the site serves (the build copies no images)."""
    (out / "images").mkdir()
    (out / "images" / "natto-hero.png").write_bytes(solid_png(64, 40, (140, 98, 57)))
    (out / "images" / "natto-bowl.png").write_bytes(solid_png(48, 48, (201, 160, 80)))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("browser")
    out = tmp / "site"
    out.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(out))
    # Binding port 0 picks a free port before the site (whose URLs carry it) is built.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread: threading.Thread | None = None
    try:
        base_url = f"http://127.0.0.1:{server.server_address[1]}"
        empty = tmp / "empty.toml"
        empty.write_text("")
        settings = load_settings(
            empty, base_url=base_url, postal_address=POSTAL_ADDRESS, directory_urls=True
        )
        content_dir = tmp / "content"
        shutil.copytree(CONTENT, content_dir)
        write_article(content_dir, AFFILIATE_SLUG, AFFILIATE_FRONT, AFFILIATE_BODY)
        write_article(content_dir, IMAGES_SLUG, IMAGES_FRONT, IMAGES_BODY)

        report = Builder(settings, out, content_dir=content_dir).build()
        assert report.ok, report.problems
        assert report.articles == 8
        add_images(out)
        catalog = FileContentStore(content_dir, settings).catalog()
        assert not catalog.problems, catalog.problems

        thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                with urlopen(base_url + "/", timeout=2) as response:
                    assert response.status == 200
                    break
            except (URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield Site(base_url, settings, catalog, content_dir, tmp)
    finally:
        if thread is not None:
            server.shutdown()
            thread.join(timeout=10)
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def open_page(browser: Browser, width: int = 1280, height: int = 800) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with open_page(browser) as p:
        yield p


@pytest.fixture(scope="module")
def email_html(site: Site) -> str:
    return EmailRenderer(site.settings).render(site.catalog, SEEDS).html


def text(page: Page, selector: str) -> str:
    """The DOM text (not innerText: .label is text-transform: uppercase)."""
    return (page.locator(selector).text_content() or "").strip()


HEADING_LEVELS_JS = """() => Array.from(document.querySelectorAll('h1, h2, h3, h4, h5, h6'))
    .map(h => Number(h.tagName.substring(1)))"""


# --- 1. structure of the K2 guide ----------------------------------------------------------


def test_k2_guide_structure_headings_and_hot_articles(site: Site, page: Page) -> None:
    guide = site.catalog.articles[K2_GUIDE]
    page.goto(site.url(K2_GUIDE))

    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").count() == 1
    assert text(page, "h1") == guide.title == "Vitamin K2 for Directing Calcium to Bones"

    for url in (site.url(K2_GUIDE), site.url(K2_ROLE), site.base_url + "/"):
        if page.url != url:
            page.goto(url)
        levels: list[int] = page.evaluate(HEADING_LEVELS_JS)
        assert levels[0] == 1, url
        skips = [(a, b) for a, b in itertools.pairwise(levels) if b > a + 1]
        assert not skips, f"{url}: heading levels skip {skips} in {levels}"
    page.goto(site.url(K2_GUIDE))

    h2s = [t.strip() for t in page.locator("h2").all_text_contents()]
    assert h2s == K2_SECTIONS

    cards = page.locator(".hot .card")
    assert cards.count() == 4
    shown = []
    for i in range(4):
        card = cards.nth(i)
        href = card.locator("h3 a").get_attribute("href") or ""
        assert href.startswith("../") and href.endswith("/"), href  # relative, directory URL
        slug = href.rstrip("/").rsplit("/", 1)[-1]
        shown.append(
            (
                slug,
                (card.locator(".label").text_content() or "").strip(),
                (card.locator("h3").text_content() or "").strip(),
                (card.locator(".subtitle").text_content() or "").strip(),
            )
        )
        more = card.locator("a.more")
        assert (more.text_content() or "").strip() == "Read More →"
        assert more.is_visible()
        assert more.get_attribute("href") == href
    assert shown == K2_HOT_CARDS

    for slug, _label, title, _subtitle in K2_HOT_CARDS:
        full_title = site.catalog.articles[slug].title
        if title.endswith("…"):
            assert title != full_title and full_title.startswith(title[:-1])
        else:
            assert title == full_title
        page.goto(site.url(K2_GUIDE))
        link = page.locator(".hot .card").filter(has_text=title).locator("a.more")
        link.click()
        page.wait_for_url(site.url(slug))
        assert text(page, "h1") == full_title


# --- 2. metadata ---------------------------------------------------------------------------


def test_k2_guide_json_ld_canonical_and_open_graph(site: Site, page: Page) -> None:
    guide = site.catalog.articles[K2_GUIDE]
    url = site.url(K2_GUIDE)
    page.goto(url)

    items: list[dict[str, Any]] = []
    scripts = page.locator('script[type="application/ld+json"]').all_text_contents()
    assert scripts
    for raw in scripts:
        data = json.loads(raw)
        for item in data if isinstance(data, list) else data.get("@graph", [data]):
            items.append(item)
    faq_pages = [item for item in items if item.get("@type") == "FAQPage"]
    assert len(faq_pages) == 1
    questions = faq_pages[0]["mainEntity"]
    assert len(questions) == len(guide.faq) == 4
    assert [q["@type"] for q in questions] == ["Question"] * 4
    assert [q["name"] for q in questions] == [f.question for f in guide.faq]
    assert [q["acceptedAnswer"]["text"] for q in questions] == [f.answer for f in guide.faq]
    assert questions[0]["name"] == "Why is vitamin K2 important when taking calcium?"
    articles = [item for item in items if item.get("@type") == "Article"]
    assert len(articles) == 1
    assert articles[0]["headline"] == guide.title
    assert articles[0]["mainEntityOfPage"] == url

    assert page.locator('link[rel="canonical"]').get_attribute("href") == url
    assert page.locator('meta[property="og:url"]').get_attribute("content") == url
    og_title = page.locator('meta[property="og:title"]')
    assert og_title.count() == 1
    assert og_title.get_attribute("content") == guide.title


# --- 3. affiliate disclosure ---------------------------------------------------------------

DISCLOSURE_FIRST_JS = """() => {
    const disclosure = document.querySelector('.disclosure');
    const body = document.querySelector('.article .body');
    return Boolean(disclosure.compareDocumentPosition(body) & Node.DOCUMENT_POSITION_FOLLOWING);
}"""


def test_affiliate_disclosure_is_above_the_fold_and_before_the_links(
    site: Site, page: Page
) -> None:
    page.goto(site.url(K2_ROLE))
    disclosure = page.locator(".disclosure")
    assert disclosure.count() == 1
    shown = (disclosure.text_content() or "").strip()
    assert shown == site.settings.affiliate_disclosure
    assert shown.startswith("Affiliate disclosure: This post may contain affiliate links")
    assert disclosure.is_visible()
    assert page.evaluate("window.scrollY") == 0
    box = disclosure.bounding_box()
    assert box is not None
    assert box["y"] >= 0 and box["y"] + box["height"] <= 800, box
    centre = page.evaluate(
        "([x, y]) => document.elementFromPoint(x, y).closest('.disclosure') !== null",
        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
    )
    assert centre, "something covers the disclosure"
    assert page.evaluate(DISCLOSURE_FIRST_JS)

    page.goto(site.url(AFFILIATE_SLUG))
    disclosure = page.locator(".disclosure")
    assert (disclosure.text_content() or "").strip() == site.settings.affiliate_disclosure
    link = page.locator(".body > p").nth(2).locator(f'a[href="{AFFILIATE_HREF}"]')
    assert link.count() == 1
    assert link.get_attribute("rel") == SPONSORED_REL == "sponsored nofollow noopener"
    assert page.locator(f'a[href="{AFFILIATE_HREF}"]').count() == 1
    disclosure_box, link_box = disclosure.bounding_box(), link.bounding_box()
    assert disclosure_box is not None and link_box is not None
    assert disclosure_box["y"] < link_box["y"]
    assert page.evaluate(DISCLOSURE_FIRST_JS)


# --- 4. contrast ---------------------------------------------------------------------------

CONTRAST_JS = """(selectors) => {
    const parse = (value) => {
        const m = /^rgba?\\(([^)]*)\\)$/.exec(value.trim());
        if (!m) return null;
        const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
        return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    };
    const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3]));
    const background = (el) => {
        const layers = [];
        for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
            const bg = parse(getComputedStyle(node).backgroundColor);
            if (bg === null) return null;
            if (bg[3] > 0) layers.push(bg);
            if (bg[3] >= 1) break;
        }
        let colour = [255, 255, 255];
        for (const layer of layers.reverse()) colour = over(layer, colour);
        return colour;
    };
    const luminance = (rgb) => {
        const c = rgb.map(v => {
            const s = v / 255;
            return s <= 0.04045 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
        });
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    };
    const results = [];
    for (const full of selectors) {
        const [selector, pseudo] = full.split('::');
        for (const el of document.querySelectorAll(selector)) {
            if (el.getClientRects().length === 0) continue;
            const style = getComputedStyle(el, pseudo ? '::' + pseudo : null);
            const label = pseudo ? style.content : el.textContent;
            if (!label || !label.replace(/["\\s]/g, '')) continue;
            const fg = parse(style.color);
            const bg = background(el);
            let ratio = 0;
            if (fg !== null && bg !== null) {
                const a = luminance(over(fg, bg)), b = luminance(bg);
                ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
            }
            results.push({selector: full, text: label.trim().slice(0, 50), color: style.color,
                          background: bg && 'rgb(' + bg.map(Math.round).join(', ') + ')',
                          ratio: Math.round(ratio * 100) / 100});
        }
    }
    return results;
}"""

CONTRAST_PAGES = {
    f"/articles/{K2_GUIDE}/": [
        ".body p", ".body li", ".article .label", ".article .label a", ".article .subtitle",
        ".meta", ".faq p", ".disclaimer p", ".hot .label", ".hot .subtitle", ".hot h3 a",
        ".hot a.more", "a", ".site-footer p",
    ],
    f"/articles/{K2_ROLE}/": [".disclosure p", ".body p", ".meta", "a", ".site-footer p"],
    f"/articles/{AFFILIATE_SLUG}/": [".disclosure p", "a.affiliate", "a.affiliate::after"],
    "/": [".page-title", ".label", ".subtitle", ".meta", "a", ".site-footer p"],
}  # fmt: skip


def test_text_contrast_is_at_least_aa(site: Site, page: Page) -> None:
    failures = []
    for path, selectors in CONTRAST_PAGES.items():
        page.goto(site.base_url + path)
        results: list[dict[str, Any]] = page.evaluate(CONTRAST_JS, selectors)
        found = {r["selector"] for r in results}
        assert set(selectors) <= found, f"{path}: nothing to check for {set(selectors) - found}"
        failures += [(path, r) for r in results if r["ratio"] < 4.5]
    assert not failures, "\n".join(f"{path}: {r}" for path, r in failures)


# --- 5. images -----------------------------------------------------------------------------

IMAGES_JS = """() => Array.from(document.images).map(img => ({
    src: img.getAttribute('src'), alt: img.getAttribute('alt'),
    loaded: img.complete && img.naturalWidth > 0}))"""


def test_every_image_has_alt_text(site: Site, page: Page) -> None:
    page.goto(site.url(IMAGES_SLUG))
    images: list[dict[str, Any]] = page.evaluate(IMAGES_JS)
    assert [i["src"] for i in images] == [
        "../../images/natto-hero.png",
        "../../images/natto-bowl.png",
    ]
    assert all(i["loaded"] for i in images), images
    assert [i for i in images if not (i["alt"] or "").strip()] == []
    assert images[1]["alt"] == "Natto beans pulled up on chopsticks, showing their sticky threads"
    assert page.locator("img:not([alt]), img[alt='']").count() == 0
    for url in (site.base_url + "/", site.url(K2_GUIDE), site.url(AFFILIATE_SLUG)):
        page.goto(url)
        assert page.locator("img:not([alt]), img[alt='']").count() == 0, url


# --- 6. small screens ----------------------------------------------------------------------

CARD_BOXES_JS = """() => Array.from(document.querySelectorAll('.hot .card')).map(card => {
    const r = card.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right};
})"""


def test_phone_width_has_no_horizontal_scroll_and_cards_stack(site: Site, browser: Browser) -> None:
    with open_page(browser, 375, 800) as page:
        for url in (site.url(K2_GUIDE), site.url(AFFILIATE_SLUG), site.base_url + "/"):
            page.goto(url)
            assert page.evaluate("window.innerWidth") == 375
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"{url}: scrollWidth {width}"
            boxes: list[dict[str, float]] = page.evaluate(CARD_BOXES_JS)
            assert len(boxes) == 4, url
            assert len({round(b["left"], 1) for b in boxes}) == 1, f"{url}: {boxes}"
            tops = [b["top"] for b in boxes]
            assert tops == sorted(tops) and len(set(tops)) == 4, f"{url}: {boxes}"
            assert all(b["right"] <= 375 for b in boxes), f"{url}: {boxes}"


# --- 7. screenshots ------------------------------------------------------------------------

COLOURS_JS = """async (src) => {
    const img = new Image();
    img.src = src;
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const counts = new Map();
    for (let i = 0; i < data.length; i += 4 * 3) {
        const key = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
        counts.set(key, (counts.get(key) || 0) + 1);
    }
    const top = Math.max(...counts.values());
    return {distinct: counts.size, dominantShare: top / (data.length / 12)};
}"""


def check_screenshot(page: Page, png: bytes, width: int) -> None:
    assert len(png) > 20_000, f"screenshot is only {len(png)} bytes"
    shot_width, shot_height = png_dimensions(png)
    assert shot_width == width
    assert shot_height == page.evaluate("document.documentElement.scrollHeight")
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    page.goto("about:blank")
    colours: dict[str, float] = page.evaluate(COLOURS_JS, source)
    assert colours["distinct"] >= 50, colours  # text, antialiasing, tints: not one colour
    assert colours["dominantShare"] < 0.98, colours


def test_full_page_screenshots_of_article_and_email(
    site: Site, browser: Browser, email_html: str
) -> None:
    email_file = site.tmp / "email.html"
    email_file.write_text(email_html, encoding="utf-8")
    with open_page(browser, 1280, 800) as page:
        page.goto(site.url(K2_GUIDE))
        shot = page.screenshot(full_page=True)
        assert png_dimensions(shot)[1] > 2000  # the whole long article, not the viewport
        check_screenshot(page, shot, 1280)
    with open_page(browser, 700, 900) as page:
        page.goto(email_file.as_uri())
        assert text(page, "h1") == site.catalog.articles[SEEDS[0]].title
        check_screenshot(page, page.screenshot(full_page=True), 700)


# --- 8. the email where a client strips <style> -------------------------------------------

EMAIL_BOX_JS = """() => ({
    container: document.querySelector('table.container').getBoundingClientRect().width,
    h1: parseFloat(getComputedStyle(document.querySelector('h1')).fontSize),
    styles: document.querySelectorAll('style').length,
    scrollWidth: document.documentElement.scrollWidth,
})"""


def test_email_without_style_block_keeps_its_layout(
    site: Site, browser: Browser, email_html: str
) -> None:
    assert re.search(r"<style\b", email_html, re.IGNORECASE), "the email has a <style> block"
    stripped = re.sub(r"<style\b[^>]*>.*?</style\s*>", "", email_html, flags=re.I | re.S)
    assert not re.search(r"<style\b", stripped, re.IGNORECASE)
    stripped_file = site.tmp / "email-no-style.html"
    stripped_file.write_text(stripped, encoding="utf-8")
    full_file = site.tmp / "email-with-style.html"
    full_file.write_text(email_html, encoding="utf-8")

    with open_page(browser, 800, 900) as page:
        page.goto(stripped_file.as_uri())
        box: dict[str, float] = page.evaluate(EMAIL_BOX_JS)
        assert box["styles"] == 0
        assert abs(box["container"] - 600) <= 2, box
        assert box["h1"] >= 20, box
        unsubscribe = page.get_by_role("link", name="Unsubscribe", exact=True)
        assert unsubscribe.count() == 1
        assert unsubscribe.get_attribute("href") == "%%unsubscribe_url%%"
        assert unsubscribe.is_visible()
        footer = page.locator("td.footer")
        assert POSTAL_ADDRESS in (footer.text_content() or "")
        assert footer.get_by_text(POSTAL_ADDRESS).is_visible()

    with open_page(browser, 375, 800) as page:
        page.goto(full_file.as_uri())
        box = page.evaluate(EMAIL_BOX_JS)
        assert box["styles"] == 1
        assert box["container"] <= 375, box
        assert box["scrollWidth"] <= 375, box


# --- 9. the site opened from disk, and no errors in the console -----------------------------


@contextmanager
def watched(page: Page) -> Iterator[list[str]]:
    """Console errors, uncaught exceptions, failed requests and 4xx/5xx answers."""
    errors: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text} ({message.location})")

    def on_response(response: Any) -> None:
        if response.status >= 400:
            errors.append(f"{response.status}: {response.request.method} {response.url}")

    def on_failed(request: Any) -> None:
        # Leaving a page cancels what it still loads (the icon, late): not a missing file.
        if request.failure != "net::ERR_ABORTED":
            errors.append(f"failed: {request.url} ({request.failure})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    yield errors


STYLE_JS = """() => {
    const body = getComputedStyle(document.body);
    const header = document.querySelector('.site-header');
    return {margin: body.marginTop, font: body.fontFamily,
            rule: header ? getComputedStyle(header).borderBottomStyle : null,
            sheets: document.styleSheets.length};
}"""

FAVICON_JS = """async () => {
    const link = document.querySelector('link[rel="icon"]');
    const img = new Image();
    img.src = link.href;
    await img.decode();
    return {href: link.getAttribute('href'), width: img.naturalWidth};
}"""


def check_styled(page: Page) -> None:
    style: dict[str, Any] = page.evaluate(STYLE_JS)
    # Without site.css Chromium's body has an 8px margin and a Times font, no rules.
    assert style["sheets"] == 1, style
    assert style["margin"] == "0px" and "Georgia" in style["font"], style
    assert style["rule"] == "solid", style


@pytest.fixture(scope="module")
def disk_site(site: Site) -> Path:
    """The same content built with the default settings (directory_urls off)."""
    out = site.tmp / "disk" / "site"
    settings = site.settings.model_copy(update={"directory_urls": False})
    report = Builder(settings, out, content_dir=site.content_dir).build()
    assert report.ok, report.problems
    add_images(out)
    return out


def test_the_site_opened_from_disk_is_styled_and_its_links_work(
    disk_site: Path, site: Site, page: Page
) -> None:
    guide = site.catalog.articles[K2_GUIDE]
    with watched(page) as errors:
        page.goto((disk_site / "index.html").as_uri())
        assert page.url.startswith("file://")
        check_styled(page)
        assert page.evaluate(FAVICON_JS) == {"href": "assets/favicon.svg", "width": 32}

        link = page.locator("main a", has_text=guide.title).first
        assert link.get_attribute("href") == f"articles/{K2_GUIDE}/index.html"
        link.click()
        page.wait_for_url((disk_site / "articles" / K2_GUIDE / "index.html").as_uri())
        assert text(page, "h1") == guide.title
        check_styled(page)
        assert page.evaluate(FAVICON_JS)["href"] == "../../assets/favicon.svg"

        # An article-to-article link inside a body, the hot cards, the category, home.
        page.goto((disk_site / "articles" / AFFILIATE_SLUG / "index.html").as_uri())
        page.locator(".article .label a").first.click()
        page.wait_for_url((disk_site / "category" / "vitamins-supplements" / "index.html").as_uri())
        assert text(page, "h1") == "Vitamins & Supplements"
        check_styled(page)
        page.locator(".site-name").click()
        page.wait_for_url((disk_site / "index.html").as_uri())

        anxiety = "anxiety-without-a-trigger-magnesium-deficiency"
        page.goto((disk_site / "articles" / anxiety / "index.html").as_uri())
        page.locator(".body a", has_text="vitamin K2 for directing calcium to bones").click()
        page.wait_for_url((disk_site / "articles" / K2_GUIDE / "index.html").as_uri())
        page.locator(".hot a.more").first.click()
        page.wait_for_url(re.compile(r"^file://.*/articles/[a-z0-9-]+/index\.html$"))
        check_styled(page)

        page.goto((disk_site / "articles" / IMAGES_SLUG / "index.html").as_uri())
        images: list[dict[str, Any]] = page.evaluate(IMAGES_JS)
        assert len(images) == 2 and all(i["loaded"] for i in images), images
        page.goto((disk_site / "index.html").as_uri())
        feed = page.locator(".site-footer a", has_text="Atom feed")
        assert feed.get_attribute("href") == "feed.xml"
    assert errors == []


def test_served_pages_log_no_errors_and_no_404(site: Site, page: Page) -> None:
    with watched(page) as errors:
        for url in (site.base_url + "/", site.url(IMAGES_SLUG),
                    f"{site.base_url}/category/vitamins-supplements/"):  # fmt: skip
            page.goto(url)
            check_styled(page)
            assert page.evaluate(FAVICON_JS)["width"] == 32
        # The page-view beacon, from its own script file, to the absolute base_url.
        with page.expect_request(lambda r: r.method == "POST") as beacon:
            page.goto(site.url(K2_GUIDE))
        assert beacon.value.url == f"{site.base_url}/v/{K2_GUIDE}"
        assert beacon.value.response() is not None
    assert errors == []
