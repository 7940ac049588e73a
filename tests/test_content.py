"""The content store and ``letterpress check``: every problem as path:line: message."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.content.check import check
from pipeline.content.frontmatter import parse_article
from pipeline.content.store import FileContentStore
from pipeline.errors import NotFound
from pipeline.settings import Settings
from tests.conftest import front, write_article


def problems_of(raw: bytes, settings: Settings) -> list[str]:
    return [f"{p.line}: {p.message}" for p in parse_article("content/x.md", raw, settings).problems]


def test_the_repository_content_has_no_problems(settings: Settings) -> None:
    catalog, problems = check(settings, Path(__file__).parent.parent / "content")
    assert problems == []
    assert len(catalog.articles) == 6
    guide = catalog.articles["vitamin-k2-for-directing-calcium-to-bones"]
    assert guide.title == "Vitamin K2 for Directing Calcium to Bones"
    assert len(guide.faq) == 4
    assert catalog.articles["the-role-of-vitamin-k2-in-calcium-distribution"].affiliate is True


def test_all_front_matter_fields_are_read(settings: Settings) -> None:
    raw = b"""---
title: Full
slug: full-article
subtitle: Sub
summary: Sum
category: Cat
series: Ser
tags: [a, b]
author: Ann
published: 2026-01-02
updated: 2026-01-05T10:00:00+01:00
status: published
affiliate: auto
disclosure: true
disclaimer: Custom words.
pinned: true
hero:
  src: /img/x.jpg
  alt: An x
faq:
  - question: Q?
    answer: A.
---
Body.
"""
    parsed = parse_article("content/full-article.md", raw, settings)
    assert parsed.problems == []
    a = parsed.article
    assert a is not None
    assert (a.slug, a.subtitle, a.summary, a.series, a.tags, a.author) == (
        "full-article", "Sub", "Sum", "Ser", ("a", "b"), "Ann"
    )  # fmt: skip
    assert a.published == datetime(2026, 1, 2, tzinfo=UTC)
    assert a.updated == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert a.disclaimer == "Custom words." and a.pinned and a.hero and a.hero.alt == "An x"
    assert a.faq[0].question == "Q?" and a.body_line == 24


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"---\ntitle: ''\ncategory: c\n---\nb\n", "2: title is empty"),
        (b"---\ncategory: c\n---\nb\n", "title is missing"),
        (b"---\ntitle: t\ncategory: c\ncolour: red\n---\nb\n", "4: unknown field 'colour'"),
        (b"---\ntitle: t\ncategory: c\nsumary: x\n---\nb\n", "did you mean 'summary'?"),
        (
            b"---\ntitle: t\ncategory: c\npublished: 2026-02-30\n---\nb\n",
            "4: impossible date '2026-02-30'",
        ),
        (b"---\ntitle: t\ncategory: c\nupdated: 2026-13-01\n---\nb\n", "4: impossible date"),
        (
            b"---\ntitle: t\ncategory: c\npublished: soon\n---\nb\n",
            "4: published 'soon' is not a date",
        ),
        (
            b"---\ntitle: t\nslug: ../etc/passwd\ncategory: c\n---\nb\n",
            "3: unsafe slug '../etc/passwd'",
        ),
        (b"---\ntitle: t\nslug: Big Slug\ncategory: c\n---\nb\n", "3: unsafe slug"),
        (b"---\ntitle: [unclosed\ncategory: c\n---\nb\n", "invalid YAML"),
        (b"---\ntitle: t\n\tcategory: c\n---\nb\n", "3: tab character in front matter"),
        (b"---\ntitle: t\ncategory: c\n---\n\n  \n", "5: body is empty"),
        (b"", "1: file is empty"),
        (b"   \n\n", "1: file is empty"),
        (b"no front matter here\n", "1: no front matter"),
        (b"---\ntitle: t\ncategory: c\nbody\n", "1: front matter is not closed"),
        (
            b"---\ntitle: t\ncategory: c\nhero:\n  src: /a.jpg\n---\nb\n",
            "4: image without alt text",
        ),
        (b"---\ntitle: t\ncategory: c\ntitle: u\n---\nb\n", "4: field 'title' given twice"),
        (b"---\ntitle: t\ncategory: c\nstatus: live\n---\nb\n", "status 'live' is not draft"),
        (b"---\ntitle: t\ncategory: c\nstatus: published\n---\nb\n", "needs a published date"),
        (b"---\ntitle: t\ncategory: c\naffiliate: maybe\n---\nb\n", "affiliate must be true"),
        (b"---\ntitle: t\ncategory: c\nfaq: [1, 2]\n---\nb\n", "faq must be a list"),
        (b"---\ntitle: t\ncategory: c\n---\nA\n\n<!-- faq -->\n", "7: <!-- faq --> marks where"),
        (b"---\n- a\n- b\n---\nb\n", "2: front matter must be 'field: value'"),
        (
            b"---\ntitle: t\ncategory: c\npublished: 2026-02-01\nupdated: 2026-01-01\n---\nb\n",
            "5: updated is before published",
        ),
    ],
)
def test_each_problem_is_reported_with_its_line(
    raw: bytes, expected: str, settings: Settings
) -> None:
    found = problems_of(raw, settings)
    assert any(expected in p for p in found), found


def test_non_utf8_names_the_line_of_the_bad_byte(settings: Settings) -> None:
    raw = b"---\ntitle: t\ncategory: c\n---\nfine\ncaf\xe9\n"
    assert problems_of(raw, settings) == ["6: not UTF-8 (byte 0xe9): save the file as UTF-8"]


def test_bom_and_crlf_are_accepted(settings: Settings) -> None:
    raw = "\ufeff---\r\ntitle: Windows\r\ncategory: c\r\n---\r\nLine one\r\n".encode()
    parsed = parse_article("content/windows.md", raw, settings)
    assert parsed.problems == []
    assert parsed.article is not None and parsed.article.title == "Windows"
    assert "\r" not in parsed.article.body


def test_a_ten_megabyte_article_is_refused_quickly(settings: Settings) -> None:
    raw = b"---\ntitle: Huge\ncategory: c\n---\n" + b"word " * 2_000_000
    started = time.perf_counter()
    found = problems_of(raw, settings)
    assert time.perf_counter() - started < 1.0
    assert found == ["1: file is 10.0 MB, over the 2.0 MB limit (max_article_bytes): "
                     "split the article or raise the limit"]  # fmt: skip


def test_one_broken_file_never_stops_the_others(content_dir: Path, settings: Settings) -> None:
    (content_dir / "broken.md").write_bytes(b"---\ntitle: [\n---\nx")
    (content_dir / "latin1.md").write_bytes(b"---\ntitle: caf\xe9\n---\nx")
    catalog, problems = check(settings, content_dir)
    assert len(catalog.articles) == 6
    assert {Path(p.path).name for p in problems} == {"broken.md", "latin1.md"}


def test_duplicate_slug_names_both_files(content_dir: Path, settings: Settings) -> None:
    write_article(content_dir, "one", front(slug="same"))
    write_article(content_dir, "two", front(slug="same"))
    _, problems = check(settings, content_dir)
    texts = sorted(str(p) for p in problems)
    assert len(texts) == 2
    assert texts[0].endswith(
        "one.md:6: duplicate slug 'same' (also in " + texts[1].split(":")[0] + ":6)"
    )
    assert "two.md:6: duplicate slug 'same' (also in" in texts[1] and "one.md:6" in texts[1]


def test_internal_link_to_unknown_slug_and_image_without_alt(
    content_dir: Path, settings: Settings
) -> None:
    body = "Intro.\n\nSee [this](/articles/no-such-article/) and\n![](/img/pic.png)\n"
    write_article(content_dir, "linker", front(), body)
    _, problems = check(settings, content_dir)
    texts = [str(p) for p in problems]
    assert any(t.endswith("linker.md:9: link to unknown article 'no-such-article' "
                          "(/articles/no-such-article/): check the slug") for t in texts), texts  # fmt: skip
    assert any("linker.md:10: image without alt text (/img/pic.png)" in t for t in texts), texts


def test_absolute_links_to_the_site_are_checked_too(content_dir: Path, make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(base_url="https://news.example.org")
    write_article(content_dir, "abs", front(), "[x](https://news.example.org/articles/gone/)\n")
    _, problems = check(settings, content_dir)
    assert [p.message.split(" (")[0] for p in problems] == ["link to unknown article 'gone'"]


def test_store_list_get_and_a_changed_article(content_dir: Path, settings: Settings) -> None:
    store = FileContentStore(content_dir, settings)
    assert len(store.list()) == 6
    assert (
        store.get("poor-appetite-but-constant-fatigue").category == "Digestive Health & Absorption"
    )
    with pytest.raises(NotFound, match="did you mean 'poor-appetite-but-constant-fatigue'"):
        store.get("poor-appetite-but-constant-fatige")
    # A change is seen as the site build sees it: by the article's source hash.
    before = {a.slug: a.source_hash for a in store.list()}
    path = content_dir / "early-warning-signs-you-ignore.md"
    path.write_text(path.read_text() + "\nOne more line.\n")
    changed = [a.slug for a in store.list() if a.source_hash != before[a.slug]]
    assert changed == ["early-warning-signs-you-ignore"]


def test_check_command_output_and_exit_codes(content_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    config = tmp_path / "empty.toml"
    config.write_text("")
    ok = runner.invoke(main, ["--config", str(config), "check", "--content", str(content_dir)])
    assert ok.exit_code == 0, ok.output
    assert "6 article(s) OK" in ok.output
    write_article(content_dir, "bad", "title: ''\ncategory: c\nfoo: 1")
    bad = runner.invoke(main, ["--config", str(config), "check", "--content", str(content_dir)])
    assert bad.exit_code == 1
    lines = [line for line in bad.stdout.splitlines() if line]
    assert lines == [f"{content_dir / 'bad.md'}:2: title is empty",
                     f"{content_dir / 'bad.md'}:4: unknown field 'foo'"]  # fmt: skip


def test_an_article_travels_as_json_and_comes_back_the_same(settings: Settings) -> None:
    """Units of build work (local processes, Celery) carry articles as JSON."""
    import json

    from pipeline.content.article import Article

    fields = {
        "tags": "[k2, bones]", "updated": "2026-02-03T10:00:00+01:00", "affiliate": "true",
        "disclaimer": "'Ask your doctor.'", "hero": "{src: /images/k2.jpg, alt: Natto}",
        "faq": "[{question: Why?, answer: '*Because*'}]", "series": "Vitamins", "pinned": "true",
    }  # fmt: skip
    raw = f"---\n{front(**fields)}\n---\nBody [x](https://e.example)\n".encode()
    article = parse_article("content/t.md", raw, settings).article
    assert article is not None and article.hero and article.faq and article.updated
    again = Article.from_json(json.loads(json.dumps(article.to_json())))
    assert again == article
    assert again.field_lines == article.field_lines
