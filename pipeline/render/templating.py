"""The Jinja2 environment for web pages and emails (autoescaped, strict)."""

from __future__ import annotations

import hashlib
import re
import textwrap
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from pipeline.settings import Settings

WIDTH = 78  # plain-text email lines (RFC 5322 recommends at most 78)


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
        # Compiled templates are kept (in a private folder of the temporary directory,
        # keyed by each template's source) so that a command does not compile them again.
        bytecode_cache=jinja2.FileSystemBytecodeCache(),
    )
    env.filters["wrap"] = wrap_text
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


def wrap_text(text: str, width: int = WIDTH) -> str:
    """Wrap each line at ``width``, keeping list indentation; URLs are never broken."""
    out = []
    for line in text.splitlines():
        if len(line) <= width:
            out.append(line.rstrip())
            continue
        match = re.match(r"^(\s*(?:[*+\-•]|\d+\.|\[\d+\])?\s*)", line)
        indent = " " * len(match.group(1)) if match else ""
        out.extend(
            textwrap.wrap(
                line,
                width=width,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(out)
