"""Finding caniemail features in an email's HTML.

Looked at: element names (with ``type`` for ``<input>``/``<button>``, ``name`` for
``<meta>``), attributes, inline ``style`` attributes and ``<style>`` elements (through
``css.CssScanner``), an HTML5 doctype, HTML comments, ``#anchor`` and ``mailto:`` links.
Not looked at: image formats, AMP, BIMI, external or ``<link>``-ed style sheets, and anything
inside HTML comments (so styles in Outlook conditional comments are not analysed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import lxml.etree
import lxml.html

from pipeline.render.emaillint.css import CssScanner
from pipeline.render.emaillint.model import (
    SLUG_ANCHOR_LINKS,
    SLUG_DOCTYPE,
    SLUG_HTML_COMMENTS,
    SLUG_MAILTO_LINKS,
    FeatureDB,
    Usage,
)

_IMPLIED_TAGS = ("html", "head", "body")  # lxml adds these when the source lacks them
_HTML_COMMENT_RE = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)


def scan(html: str, db: FeatureDB) -> Usage:
    """Where ``html`` uses each feature ``db`` knows, and how often."""
    usage = Usage(db)
    if html.strip():
        _Document(usage).read(html)
    return usage


class _Document:
    def __init__(self, usage: Usage) -> None:
        self.db = usage.db
        self.add = usage.add
        self.css = CssScanner(usage)

    def read(self, html: str) -> None:
        parser = lxml.html.HTMLParser(encoding="utf-8")
        root = lxml.html.document_fromstring(html.encode("utf-8"), parser=parser)
        # (lxml-stubs lacks DocInfo.doctype; lxml makes up an HTML 4 one when there is none)
        doctype = str(getattr(root.getroottree().docinfo, "doctype", "") or "")
        if " ".join(doctype.lower().split()) == "<!doctype html>":
            self.add(SLUG_DOCTYPE, "doctype")
        source = _HTML_COMMENT_RE.sub("", html)
        implied = {
            tag for tag in _IMPLIED_TAGS if not re.search(rf"<{tag}[\s/>]", source, re.IGNORECASE)
        }
        for node in root.iter():
            if isinstance(node, lxml.etree._Comment):
                self.add(SLUG_HTML_COMMENTS, "HTML comment")
                continue
            if not isinstance(node.tag, str):  # processing instructions, entities
                continue
            tag = node.tag.lower()
            if tag in implied:
                continue
            attributes = {str(k).lower(): str(v) for k, v in node.attrib.items()}
            self.element(tag, attributes)
            if tag == "style":
                self.css.style_sheet(node.text or "", "<style> block")

    def element(self, tag: str, attributes: Mapping[str, str]) -> None:
        for rule in self.db.html_elements.get(tag, ()):
            if rule.matches(tag, attributes):
                self.add(rule.slug, f"<{tag}> element")
        for name, value in attributes.items():
            self.add(self.db.html_attributes.get(name), f"{name} attribute of <{tag}>")
            if name == "style":
                self.css.inline_style(value, f"style attribute of <{tag}>")
        href = attributes.get("href", "").strip()
        if tag == "a" and len(href) > 1 and href.startswith("#"):
            self.add(SLUG_ANCHOR_LINKS, "href attribute of <a>")
        if tag == "a" and href.lower().startswith("mailto:"):
            self.add(SLUG_MAILTO_LINKS, "href attribute of <a>")
