"""The packaged caniemail data, and the Gmail/Outlook warnings that ``preview``, ``issue
preview`` and ``issue test`` print.

The packaged ``pipeline/render/emaillint/caniemail.json`` is what ``trim.py`` makes of the
full data in tests/specs/caniemail-features.json, and lints the same; the commands print,
on stderr, one line per feature the email uses that a current Gmail or Outlook platform does
not support, and go on as before.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pipeline.cli.main import main
from pipeline.content.store import FileContentStore
from pipeline.render import emaillint
from pipeline.render.emaillint import (
    DEFAULT_CLIENTS,
    FeatureDB,
    email_warnings,
    lint_html,
    load_features,
    trim,
    warning_lines,
)
from pipeline.render.emaillint import report as lint_report
from pipeline.render.emails import EmailRenderer
from pipeline.settings import Settings
from tests.conftest import ROOT, SEEDS, SPECS

FULL = SPECS / "caniemail-features.json"
PACKAGE = resources.files("pipeline.render.emaillint")

# What the default templates use that Gmail or Outlook cannot show: the progressive
# enhancements (emaillint.ENHANCEMENTS) that the commands accept without a word.
DEFAULT_WARNINGS = [
    "warning: gmail (mobile-webmail) does not support @media [css-at-media] in <style> block",
    "warning: gmail (mobile-webmail) does not support display:none [css-display-none]"
    " in style attribute of <div>",
    "warning: gmail (mobile-webmail) does not support <style> element [html-style]"
    " in <style> element",
    "warning: outlook (windows, windows-mail) does not support @media [css-at-media]"
    " in <style> block",
    "warning: outlook (windows, windows-mail) does not support max-height property"
    " [css-max-height] in style attribute of <div>",
    "warning: outlook (windows, windows-mail) does not support overflow [css-overflow]"
    " in style attribute of <div>",
    "warning: outlook (macos) does not support <body> element [html-body] in <body> element",
    "warning: outlook (windows) does not support HTML5 doctype [html-doctype] in doctype",
    "warning: outlook (windows-mail) does not support role attribute [html-role]"
    " in role attribute of <table>",
]
# What the custom templates below add: a positioned masthead cell and a grid container.
CUSTOM_WARNINGS = [
    "warning: gmail (desktop-webmail, ios, android, mobile-webmail) does not support"
    " position [css-position] in style attribute of <td>",
    "warning: outlook (windows, windows-mail) does not support display:grid"
    " [css-display-grid] in style attribute of <table>",
    "warning: outlook (windows, windows-mail, ios) does not support position [css-position]"
    " in style attribute of <td>",
]


@pytest.fixture(scope="module")
def full_db() -> FeatureDB:
    return load_features(FULL)


def custom_templates(folder: Path, *, more: bool = False) -> Path:
    """A copy of the default templates whose CSS positions the masthead and lays the
    container out as a grid; ``more`` adds flexbox, rounded corners, a background image,
    :hover and a <video>."""
    templates = folder / "templates"
    shutil.copytree(ROOT / "templates", templates)
    css = templates / "email" / "email.css"
    extra = ".masthead { position: relative; }\n.container { display: grid; }\n"
    if more:
        extra += (
            ".card { display: flex; border-radius: 6px; background-image: url(x.png); }\n"
            ".more:hover { color: #000000; }\n"
        )
        page = templates / "email" / "newsletter.html"
        video = '<video src="https://news.example.org/v.mp4"></video>\n</body>'
        page.write_text(page.read_text().replace("</body>", video))
    css.write_text(css.read_text() + extra)
    return templates


def render_seeds(settings: Settings, content_dir: Path) -> str:
    catalog = FileContentStore(content_dir, settings).catalog()
    return EmailRenderer(settings).render(catalog, list(SEEDS)).html


# -- the packaged data ------------------------------------------------------------------


def test_packaged_data_is_what_the_trim_script_makes() -> None:
    made = trim.dumps(trim.trim(json.loads(FULL.read_text(encoding="utf-8"))))
    assert PACKAGE.joinpath("caniemail.json").read_text(encoding="utf-8") == made, (
        "run: python -m pipeline.render.emaillint.trim"
    )
    assert len(made.encode()) < FULL.stat().st_size / 5


def test_packaged_data_indexes_and_judges_as_the_full_data(full_db: FeatureDB) -> None:
    packaged = load_features()
    assert emaillint.packaged_features() is emaillint.packaged_features()
    assert "trimmed" in packaged.source and "6b086a3" in packaged.source
    assert packaged.clients == DEFAULT_CLIENTS == ("gmail", "outlook")
    for index in ("css_properties", "css_property_values", "css_functions", "css_units",
                  "css_value_keywords", "css_at_rules", "css_media_features",
                  "css_pseudo_classes", "css_pseudo_elements", "html_elements",
                  "html_attributes"):  # fmt: skip
        assert getattr(packaged, index) == getattr(full_db, index), index
    assert set(packaged.features) == full_db.detectable()
    for slug, feature in packaged.features.items():
        assert (feature.title, feature.category) == (
            full_db.features[slug].title,
            full_db.features[slug].category,
        )
        for client in DEFAULT_CLIENTS:
            assert packaged.verdict(slug, client) == full_db.verdict(slug, client), slug


def test_trimmed_data_finds_the_same_in_the_seed_issue(
    settings: Settings, content_dir: Path, full_db: FeatureDB
) -> None:
    html = render_seeds(settings, content_dir)
    findings = lint_html(html, full_db)
    assert findings and lint_html(html) == findings == lint_html(html, load_features())


def test_trimmed_data_finds_the_same_in_a_template_with_unsupported_features(
    make_settings: Callable[..., Settings], content_dir: Path, tmp_path: Path, full_db: FeatureDB
) -> None:
    settings = make_settings(templates_dir=custom_templates(tmp_path, more=True))
    html = render_seeds(settings, content_dir)
    findings = lint_html(html, full_db)
    assert lint_html(html) == findings
    unsupported = {(f.slug, f.client) for f in findings if f.level == "unsupported"}
    for slug in ("css-position", "css-display-flex", "css-border-radius", "html-video",
                 "css-background-image"):  # fmt: skip
        assert (slug, "outlook") in unsupported, slug
    assert ("css-pseudo-class-hover", "gmail") in unsupported
    assert email_warnings(html, db=full_db) == email_warnings(html)


def test_notice_and_package_data() -> None:
    notice = PACKAGE.joinpath("NOTICE").read_text(encoding="utf-8")
    for needle in ("https://github.com/hteumeuleu/caniemail", "6b086a3", "MIT License",
                   "Copyright (c) 2019 Rémi Parmentier", "Permission is hereby granted"):  # fmt: skip
        assert needle in notice, needle
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = pyproject["tool"]["setuptools"]["package-data"]["pipeline.render.emaillint"]
    assert set(data) == {"caniemail.json", "NOTICE"}


# -- the warnings -----------------------------------------------------------------------


def test_warnings_name_the_client_family_feature_and_place() -> None:
    html = '<table><tr><td style="display:grid; color:#000">x</td></tr></table>'
    assert email_warnings(html) == [
        "warning: outlook (windows, windows-mail) does not support display:grid"
        " [css-display-grid] in style attribute of <td>"
    ]
    assert email_warnings('<table><tr><td style="color:#000">x</td></tr></table>') == []
    assert email_warnings("") == []


def test_a_check_that_cannot_run_is_one_warning_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert email_warnings("<p>x</p>", clients=("gmial",)) == [
        "warning: email client support not checked (ValueError: unknown client family"
        " 'gmial'; the data has: gmail, outlook)"
    ]

    def broken(*args: object, **kw: object) -> None:
        raise OSError("caniemail.json: no such file")

    monkeypatch.setattr(lint_report, "lint_html", broken)
    assert email_warnings("<p>x</p>") == [
        "warning: email client support not checked (OSError: caniemail.json: no such file)"
    ]


def test_the_stock_enhancements_are_what_the_warnings_leave_out(
    settings: Settings, content_dir: Path
) -> None:
    findings = lint_html(render_seeds(settings, content_dir))
    assert warning_lines(findings, accepted=frozenset()) == DEFAULT_WARNINGS
    assert warning_lines(findings) == []


def _commands(
    tmp_path: Path, content_dir: Path, sqlite_url: str, templates: Path | None
) -> list[Result]:
    """Run preview, issue preview and issue test (through the outbox) on the seeds."""
    from pipeline.sending import issues
    from pipeline.sending.issues import ArticleRef
    from pipeline.sending.parts import SendingParts
    from pipeline.settings import load_settings

    config = tmp_path / "c.toml"
    config.write_text(
        f'base_url = "https://news.example.org"\ndatabase_url = "{sqlite_url}"\n'
        f'content_dir = "{content_dir}"\npostal_address = "1 Test Street"\n'
        f'provider = "outbox"\noutbox_dir = "{tmp_path / "outbox"}"\n'
        + (f'templates_dir = "{templates}"\n' if templates else "")
    )
    rt = SendingParts(load_settings(config))
    issue_id = issues.create(
        rt.engine, subject="K2", articles=[ArticleRef(SEEDS[0], True), ArticleRef(SEEDS[1], False)]
    )
    runs = [
        ["preview", *SEEDS, "--out", str(tmp_path / "preview")],
        ["issue", "preview", str(issue_id), "--out", str(tmp_path / "issue-preview")],
        ["issue", "test", str(issue_id), "--to", "editor@example.org"],
    ]
    results = [CliRunner().invoke(main, ["--config", str(config), *argv]) for argv in runs]
    for argv, result in zip(runs, results, strict=True):
        assert result.exit_code == 0, (argv, result.output)
    assert (tmp_path / "preview" / "message.eml").is_file()
    assert (tmp_path / "issue-preview" / "message.eml").is_file()
    assert "sent a test of issue" in results[2].stdout
    return results


@pytest.fixture
def secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LETTERPRESS_SECRET_KEY", "s" * 40)  # issue test signs its links


@pytest.mark.usefixtures("secret_key")
def test_default_templates_give_no_warnings(
    tmp_path: Path, content_dir: Path, sqlite_url: str
) -> None:
    """The stock templates use only enhancements that degrade gracefully (ENHANCEMENTS)."""
    for result in _commands(tmp_path, content_dir, sqlite_url, None):
        assert result.stderr == ""
        assert "warning:" not in result.stdout


@pytest.mark.usefixtures("secret_key")
def test_custom_templates_with_grid_and_position_are_warned_of(
    tmp_path: Path, content_dir: Path, sqlite_url: str
) -> None:
    templates = custom_templates(tmp_path)
    for result in _commands(tmp_path, content_dir, sqlite_url, templates):
        lines = result.stderr.splitlines()
        assert sorted(lines) == sorted(CUSTOM_WARNINGS), result.stderr


@pytest.mark.usefixtures("secret_key")
def test_the_commands_go_on_when_the_check_cannot_run(
    tmp_path: Path, content_dir: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kw: object) -> None:
        raise ValueError("bad data")

    monkeypatch.setattr(lint_report, "lint_html", broken)
    for result in _commands(tmp_path, content_dir, sqlite_url, None):
        assert result.stderr.splitlines() == [
            "warning: email client support not checked (ValueError: bad data)"
        ]
