"""The rendered email uses nothing Gmail or Outlook cannot show, by caniemail's data,
except the progressive enhancements chosen on purpose (listed below)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.content.store import FileContentStore
from pipeline.render.emaillint import ENHANCEMENTS, lint_html, load_features
from pipeline.render.emails import EmailRenderer
from pipeline.settings import Settings
from tests.conftest import SEEDS, SPECS

# Degrade gracefully where unsupported: phones without media queries get the 600 px
# layout, the hidden preheader may show as a line of text, and role is an ARIA hint.
ACCEPTED = {
    "css-at-media", "css-display-none", "html-style", "css-max-height", "css-overflow",
    "html-body", "html-doctype", "html-role",
}  # fmt: skip


def test_seed_email_has_no_unexpected_unsupported_features(
    settings: Settings, content_dir: Path
) -> None:
    data = SPECS / "caniemail-features.json"
    if not data.exists():
        pytest.fail(f"{data} is missing (see tests/specs/README.md)")
    catalog = FileContentStore(content_dir, settings).catalog()
    html = EmailRenderer(settings).render(catalog, list(SEEDS)).html
    findings = lint_html(html, load_features(data))
    unsupported = {f.slug for f in findings if f.level == "unsupported"}
    assert unsupported - ACCEPTED == set(), sorted(unsupported - ACCEPTED)
    # and the preview commands stay quiet about exactly these
    assert ENHANCEMENTS == ACCEPTED
    assert "mso-line-height-rule:exactly" in html.replace(" ", "")


def test_the_check_would_catch_flexbox(settings: Settings) -> None:
    data = SPECS / "caniemail-features.json"
    html = '<table><tr><td style="display:flex;border-radius:4px">x</td></tr></table>'
    slugs = {f.slug for f in lint_html(html, load_features(data)) if f.level == "unsupported"}
    assert "css-display-flex" in slugs
