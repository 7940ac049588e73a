"""Markdown to HTML: sanitising, anchors, affiliate links and their disclosure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lxml.html
import pytest

from pipeline.content.frontmatter import parse_article
from pipeline.render.affiliate import AffiliateRules
from pipeline.render.markup import Body, Renderer
from pipeline.settings import DEFAULT_AFFILIATE_RULES, DEFAULT_SHORTENERS, Settings
from tests.conftest import front


def render(settings: Settings, body: str, **fields: str) -> Body:
    raw = f"---\n{front(**fields)}\n---\n{body}".encode()
    parsed = parse_article("content/t.md", raw, settings)
    assert parsed.article is not None, parsed.problems
    return Renderer(settings).body(parsed.article)


@pytest.mark.parametrize(
    "evil",
    [
        "<script>alert(1)</script>",
        "<style>body{display:none}</style>",
        '<img src="x.png" alt="x" onerror="alert(1)">',
        '<a href="javascript:alert(1)">x</a>',
        '<a href="JaVaScRiPt:alert(1)">x</a>',
        '<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>',
        '<img src="data:image/svg+xml;base64,PHN2Zz4=" alt="x">',
        '<iframe src="https://evil.example/"></iframe>',
        '<div onclick="alert(1)">x</div>',
        "<svg><script>alert(1)</script></svg>",
        "[x](javascript:alert(1))",
        '<object data="x.swf"></object>',
        '<form action="https://evil.example"><input name="q"></form>',
    ],
)
def test_raw_html_is_sanitised(settings: Settings, evil: str) -> None:
    html = render(settings, f"Before.\n\n{evil}\n\nAfter.\n").html
    root = lxml.html.fragment_fromstring(html, create_parent="div")
    tags = {el.tag for el in root.iter()}
    assert not tags & {"script", "style", "iframe", "object", "form", "input", "svg"}, html
    for el in root.iter():
        for name, value in el.attrib.items():
            assert not name.lower().startswith("on"), html
            assert not value.strip().lower().startswith(("javascript:", "data:")), html
            assert "evil.example" not in value, html
    assert "Before." in html and "After." in html


def test_iframes_are_kept_only_from_allowed_hosts(settings: Settings) -> None:
    good = '<iframe src="https://www.youtube-nocookie.com/embed/abc" title="Video"></iframe>'
    html = render(
        settings, f"{good}\n\n<iframe src='http://www.youtube-nocookie.com/x'></iframe>\n"
    ).html
    assert 'src="https://www.youtube-nocookie.com/embed/abc"' in html
    assert html.count("<iframe") == 1  # plain http is refused too


def test_headings_get_stable_unique_anchors(settings: Settings) -> None:
    body = "## What Is Vitamin K2?\n\ntext\n\n## Dosage, Timing & Safety\n\n## Dosage, Timing & Safety\n"
    first = render(settings, body)
    again = render(settings, body)
    assert [h[1] for h in first.headings] == [
        "what-is-vitamin-k2", "dosage-timing-safety", "dosage-timing-safety-1"
    ]  # fmt: skip
    assert first.html == again.html
    assert '<h2 id="what-is-vitamin-k2">What Is Vitamin K2?</h2>' in first.html


def test_a_given_heading_id_is_kept_and_never_generated_twice(settings: Settings) -> None:
    body = render(settings, '## Dosage\n\n<h2 id="dosage">Raw</h2>\n\n## Dosage\n')
    assert [h[1] for h in body.headings] == ["dosage-1", "dosage", "dosage-2"]


def test_tables_strikethrough_and_what_is_not_strikethrough(settings: Settings) -> None:
    html = render(settings, "| a | b |\n|--:|---|\n| 1 | ~~gone~~ ~kept~ |\n").html
    assert '<th align="right">a</th>' in html and '<td align="right">1</td>' in html
    assert "<del>gone</del> ~kept~" in html  # one tilde is text, as in CommonMark


def test_the_affiliate_marker_works_on_every_kind_of_link(settings: Settings) -> None:
    body = render(
        settings,
        "[a](https://shop.example/1){.affiliate}, [b][ref]{.affiliate} and"
        " <https://shop.example/3>{.affiliate}; `[c](https://x.example){.affiliate}`\n\n"
        "[ref]: https://shop.example/2\n",
    )
    assert [link.href for link in body.affiliate_links] == [
        "https://shop.example/1", "https://shop.example/2", "https://shop.example/3"
    ]  # fmt: skip
    assert body.html.count("{.affiliate}") == 1  # only the one inside code stays text
    assert body.problems == ()


def test_another_attribute_list_after_a_link_is_reported_where_it_is(settings: Settings) -> None:
    body = render(settings, "Intro\n\n[a](https://x.example){.sponsored} ![p](p.png){width=300}\n")
    assert [(p.line, p.message.split(" is shown")[0]) for p in body.problems] == [
        (9, "'{width=300}' after an image"),
        (9, "'{.sponsored}' after a link"),
    ]


def test_level_one_headings_in_the_body_are_a_problem(settings: Settings) -> None:
    body = render(settings, "Intro\n\n# Second title\n")
    assert [p.message.split(":")[0] for p in body.problems] == [
        "heading 'Second title' is a level-1 heading"
    ]
    assert body.problems[0].line == 9


AFFILIATE = [
    "https://www.amazon.com/dp/B000?tag=site-20",
    "https://smile.amazon.co.uk/gp/product/B1?ref=x&tag=abc-21",
    "https://amzn.to/3xYz",
    "https://www.awin1.com/cread.php?awinmid=1&awinaffid=2",
    "https://shop.example/?awc=123_456",
    "https://www.shareasale.com/r.cfm?b=1&u=2",
    "https://www.anrdoezrs.net/click-1-2",
    "https://partner.sjv.io/c/1/2/3",
    "https://brand.example/p?irclickid=abc",
    "https://click.linksynergy.com/deeplink?id=x",
    "https://go.skimresources.com/?id=1&url=x",
    "https://prf.hn/click/camref:1",
    "https://bit.ly/3abc",
    "https://tinyurl.com/xyz",
]
ORDINARY = [
    "https://www.amazon.com/dp/B000",  # no tag: not an affiliate link
    "https://en.wikipedia.org/wiki/Vitamin_K2",
    "https://pubmed.ncbi.nlm.nih.gov/123/",
    "/articles/other/",
    "mailto:editor@example.org",
    "https://notamazon.example/?tagx=1",
]


@pytest.mark.parametrize("url", AFFILIATE)
def test_affiliate_networks_and_short_links_are_detected(url: str) -> None:
    rules = AffiliateRules(DEFAULT_AFFILIATE_RULES, DEFAULT_SHORTENERS)
    assert rules.reason(url) is not None


@pytest.mark.parametrize("url", ORDINARY)
def test_ordinary_links_are_not_affiliate_links(url: str) -> None:
    rules = AffiliateRules(DEFAULT_AFFILIATE_RULES, DEFAULT_SHORTENERS)
    assert rules.reason(url) is None


def test_affiliate_links_get_rel_sponsored_and_ordinary_links_do_not(settings: Settings) -> None:
    body = render(
        settings,
        "Buy [here](https://www.amazon.com/dp/B0?tag=x-20) or read "
        "[this](https://en.wikipedia.org/wiki/K) or [shop](https://shop.example/k2){.affiliate}.\n",
    )
    assert body.html.count('rel="sponsored nofollow noopener"') == 2
    assert '<a href="https://en.wikipedia.org/wiki/K">this</a>' in body.html
    assert [bool(link.affiliate) for link in body.links] == [True, False, True]
    assert body.problems == ()


def test_rules_are_configurable(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(affiliate_rules=["partner.example", "*?via"], affiliate_shorteners=[])
    body = render(settings, "[a](https://x.partner.example/p) [b](https://a.org/?via=me) "
                            "[c](https://amzn.to/x)\n")  # fmt: skip
    assert [bool(link.affiliate) for link in body.links] == [True, True, False]


def test_affiliate_false_with_an_affiliate_link_is_an_error(settings: Settings) -> None:
    body = render(settings, "[a](https://amzn.to/abc)\n", affiliate="false")
    assert len(body.problems) == 1
    assert (
        "affiliate: false, but https://amzn.to/abc is an affiliate link" in body.problems[0].message
    )


def test_switching_the_disclosure_off_is_an_error(
    settings: Settings, make_settings: Callable[..., Settings]
) -> None:
    body = render(settings, "[a](https://amzn.to/abc)\n", disclosure="false")
    assert "disclosure is switched off" in body.problems[0].message
    cloaked = render(settings, "No visible links.\n", affiliate="true", disclosure="false")
    assert "disclosure is switched off" in cloaked.problems[0].message
    empty = make_settings(affiliate_disclosure="  ")
    assert (
        "affiliate_disclosure is empty"
        in render(empty, "[a](https://amzn.to/x)\n").problems[0].message
    )
    assert render(settings, "No links.\n", disclosure="false").problems == ()


def test_faq_marker_splits_the_body(settings: Settings, tmp_path: Path) -> None:
    raw = (
        b"---\ntitle: T\ncategory: c\nfaq:\n  - question: Why?\n    answer: '**Because.**'\n---\n"
        b"Before\n\n<!-- faq -->\n\nAfter\n"
    )
    parsed = parse_article("content/t.md", raw, settings)
    assert parsed.article is not None
    body = Renderer(settings).body(parsed.article)
    assert [p.strip() for p in body.parts] == ["<p>Before</p>", "<p>After</p>"]
    assert body.faq == (("Why?", "<p><strong>Because.</strong></p>\n"),)
