"""pipeline.render.emaillint against the real caniemail data (hteumeuleu/caniemail, commit 6b086a3).

The expected verdicts below were read from tests/specs/caniemail-features.json, e.g.
css-display-flex / css-border-radius / css-background-image: Outlook "windows" (2007-2019)
and "windows-mail" are "n"; css-font-size, css-background-color, css-padding: "y" on all four
Gmail platforms; css-at-media: Gmail "a" on desktop-webmail/ios/android, "n" on mobile-webmail.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pipeline.render.emaillint import FeatureDB, Finding, format_findings, lint_html, load_features

DATA = Path(__file__).resolve().parent / "specs" / "caniemail-features.json"


@pytest.fixture(scope="module")
def db() -> FeatureDB:
    if not DATA.is_file():
        pytest.fail(
            f"caniemail data file missing: expected {DATA} "
            "(front matter of hteumeuleu/caniemail _features, see tests/specs/README.md)"
        )
    return load_features(DATA)


def by_key(findings: list[Finding]) -> dict[tuple[str, str, str], Finding]:
    keyed: dict[tuple[str, str, str], Finding] = {(f.slug, f.client, f.level): f for f in findings}
    assert len(keyed) == len(findings), "one finding per (feature, client, level)"
    return keyed


def test_index_maps_titles_to_properties_elements_and_attributes(db: FeatureDB) -> None:
    assert db.css_properties["border-radius"] == ("css-border-radius",)
    assert db.css_properties["column-gap"] == ("css-gap",)  # "gap, column-gap, row-gap"
    assert db.css_properties["top"] == ("css-left-right-top-bottom",)
    assert db.css_properties["border-top-width"] == ("css-border",)  # listed in keywords
    assert db.css_properties["inline-size"] == ("css-inline-size",)  # own page beats a list
    assert db.css_property_values["display"]["flex"] == "css-display-flex"
    assert db.css_at_rules["media"] == "css-at-media"
    assert db.css_media_features["prefers-color-scheme"] == "css-at-media-prefers-color-scheme"
    assert db.css_pseudo_classes["hover"] == "css-pseudo-class-hover"
    assert db.html_attributes["inert"] == "css-inert-attribute"  # filed as css, an attribute
    assert "inert" not in db.css_properties
    assert "system-ui" not in db.css_properties  # a font-family keyword, not a property
    assert {r.slug for r in db.html_elements["video"]} == {"html-video"}
    assert {"gmail", "outlook"} <= set(db.clients)


def test_verdict_uses_latest_version_per_platform(db: FeatureDB) -> None:
    # display:grid was "n" on Gmail desktop in 2019-02 but "y" since 2026-03.
    grid = db.verdict("css-display-grid", "gmail")
    assert grid.unsupported == ()
    assert grid.supported == ("desktop-webmail", "mobile-webmail")
    assert grid.partial == ("ios", "android")
    assert [n.number for n in grid.notes_for("partial")] == ["1"]
    # outlook-com lists "2024-04" before "2024-01": the later date is the latest entry.
    comments = {p.platform: p.version for p in db.verdict("css-comments", "outlook").platforms}
    assert comments["outlook-com"] == "2024-04"
    assert db.verdict("css-font-size", "gmail").summary == "supported"
    assert db.verdict("css-display-flex", "outlook").summary == (
        "unsupported on windows, windows-mail"
    )


def test_outlook_windows_unsupported_properties_are_reported(db: FeatureDB) -> None:
    html = (
        '<table><tr><td style="display:flex; border-radius: 6px; '
        "background-image: url('https://example.com/a;b.png')\">x</td></tr></table>"
    )
    found = by_key(lint_html(html, db))
    for slug in ("css-display-flex", "css-border-radius", "css-background-image"):
        finding = found[(slug, "outlook", "unsupported")]
        assert finding.platforms == ("windows", "windows-mail"), slug
        assert finding.locations == ("style attribute of <td>",)
        assert finding.count == 1
    # Outlook's VML hint is note 5 of background-image.
    notes = found[("css-background-image", "outlook", "unsupported")].notes
    assert [n.number for n in notes] == ["5"]
    assert "VML" in notes[0].text
    # "display:flex" is reported as such, not also as the generic display property.
    assert not any(f.slug == "css-display" for f in found.values())


def test_property_supported_everywhere_in_gmail_is_not_reported(db: FeatureDB) -> None:
    html = '<p style="font-size:16px; background-color:#ffffff; padding:4px 8px">Hi</p>'
    findings = lint_html(html, db)
    gmail = [f for f in findings if f.client == "gmail"]
    assert not [f for f in gmail if f.slug.startswith("css-")], gmail
    # The properties were seen: Outlook on Windows supports font-size and padding partly.
    outlook = by_key(findings)
    assert outlook[("css-font-size", "outlook", "partial")].platforms == ("windows", "windows-mail")
    assert ("css-padding", "outlook", "partial") in outlook
    assert not any(f.slug == "css-background-color" for f in findings)


def test_media_query_in_style_block_follows_the_data(db: FeatureDB) -> None:
    html = """<html><head><style>
      .col { width: 50% }
      @media screen and (max-width: 600px) { .col { width: 100% !important } }
      @media (prefers-color-scheme: dark) { body { background: #000 } }
    </style></head><body><p class="col">x</p></body></html>"""
    found = by_key(lint_html(html, db))
    media_gmail_n = found[("css-at-media", "gmail", "unsupported")]
    assert media_gmail_n.platforms == ("mobile-webmail",)
    assert media_gmail_n.locations == ("<style> block",)
    assert media_gmail_n.count == 2
    media_gmail_a = found[("css-at-media", "gmail", "partial")]
    assert media_gmail_a.platforms == ("desktop-webmail", "ios", "android")
    assert [n.number for n in media_gmail_a.notes] == ["6", "7"]
    assert found[("css-at-media", "outlook", "unsupported")].platforms == (
        "windows",
        "windows-mail",
    )
    assert found[("css-at-media", "outlook", "partial")].platforms == (
        "macos",
        "outlook-com",
        "ios",
        "android",
    )
    dark = found[("css-at-media-prefers-color-scheme", "gmail", "unsupported")]
    assert dark.platforms == ("desktop-webmail", "ios", "android", "mobile-webmail")
    assert ("css-at-media-prefers-color-scheme", "outlook", "partial") not in found
    # Every finding agrees with the aggregated verdict it came from.
    for f in found.values():
        verdict = db.verdict(f.slug, f.client)
        assert f.platforms == (verdict.unsupported if f.level == "unsupported" else verdict.partial)


def test_same_property_three_times_gives_one_finding_with_count_3(db: FeatureDB) -> None:
    html = """<html><head><style>.b { border-radius: 4px }</style></head><body>
      <table><tr><td style="border-radius:4px">a</td></tr></table>
      <div style="color:red;BORDER-RADIUS: 50%">b</div>
    </body></html>"""
    radius = [f for f in lint_html(html, db, clients=("outlook",)) if f.slug == "css-border-radius"]
    assert len(radius) == 1
    assert radius[0].count == 3
    assert radius[0].level == "unsupported"
    assert radius[0].locations == (
        "<style> block",
        "style attribute of <div>",
        "style attribute of <td>",
    )


def test_declarations_split_respecting_quotes_parentheses_and_comments(db: FeatureDB) -> None:
    html = (
        "<div style=\"font-family:'a;border-radius:1px'; "
        'background:url(data:image/png;base64,AAAA;border-radius:2px)">x</div>'
        "<style>/* p { border-radius: 3px } */ a[title='x:hover'] { content: ';{' }"
        " .sm\\:hover\\:underline { color: red }</style>"
    )
    slugs = {f.slug for f in lint_html(html, db)}
    assert "css-border-radius" not in slugs
    assert "css-pseudo-class-hover" not in slugs
    assert "css-background" in slugs  # Outlook on Windows: background colours only


def test_pseudo_classes_elements_and_fragments(db: FeatureDB) -> None:
    html = (
        '<style>a:hover, a:HOVER { color: red } p::before { content: "" }</style>'
        "<video src=x.mp4></video><input name=q>"
    )
    found = by_key(lint_html(html, db))
    hover = found[("css-pseudo-class-hover", "gmail", "unsupported")]
    assert (hover.platforms, hover.count) == (("ios", "mobile-webmail"), 2)
    assert ("css-pseudo-element-before", "outlook", "unsupported") in found
    video = found[("html-video", "gmail", "unsupported")]
    assert video.locations == ("<video> element",)
    assert video.platforms == ("desktop-webmail", "ios", "android", "mobile-webmail")
    # <input> without a type is a text input.
    assert found[("html-input-text", "outlook", "unsupported")].platforms[:2] == (
        "windows",
        "windows-mail",
    )
    # lxml wraps a fragment in <html><body>: that body is not the email's.
    assert not any(f.slug == "html-body" for f in found.values())


def test_format_findings_is_stable(db: FeatureDB) -> None:
    html = '<div style="display:flex">x</div><div style="display:flex">y</div>'
    findings = lint_html(html, db)
    expected = (
        "gmail: partial on ios, android: display:flex [css-display-flex]"
        " (2 uses in style attribute of <div>) notes: #1 Not supported with non Google accounts.\n"
        "outlook: unsupported on windows, windows-mail: display:flex [css-display-flex]"
        " (2 uses in style attribute of <div>)"
    )
    assert format_findings(findings) == expected
    shuffled = list(findings)
    random.Random(7).shuffle(shuffled)
    assert format_findings(reversed(findings)) == expected
    assert format_findings(shuffled) == expected
    assert lint_html(html, db, clients=("outlook", "gmail")) == findings
    assert format_findings([]) == ""


def test_unknown_client_family_is_an_error(db: FeatureDB) -> None:
    with pytest.raises(ValueError, match="gmial"):
        lint_html("<p>x</p>", db, clients=("gmial",))
