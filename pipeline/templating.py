"""The Jinja2 environment for web pages and emails (autoescaped, strict)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from .settings import Settings


@cache
def environment(templates_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "xml"), default_for_string=True
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


def templates_version(templates_dir: Path) -> str:
    """A hash of every template: pages rendered with other templates are rebuilt."""
    digest = hashlib.sha256()
    for path in sorted(templates_dir.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(templates_dir)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def site_context(settings: Settings) -> dict[str, Any]:
    url_path = "/" + settings.base_url.split("://", 1)[1].partition("/")[2]
    return {
        "site": {
            "name": settings.site_name,
            "tagline": settings.site_tagline,
            "language": settings.language,
            "url": settings.base_url,
            "url_path": url_path.rstrip("/"),
            "default_author": settings.default_author,
            "postal_address": settings.postal_address,
        },
        "year": datetime.now(UTC).year,
    }
