"""Finding caniemail features in CSS: inline ``style`` attributes and ``<style>`` blocks.

The scanner splits style sheets and declaration blocks by hand, respecting comments,
strings, parentheses, escapes and nested blocks, and records in a ``Usage`` each feature
seen: declarations, ``!important``, custom properties, functions, units, value keywords; in
``<style>`` also comments, at-rules, ``@media`` features, pseudo-classes/elements and
nesting. Vendor-prefixed properties, selector kinds and combinators are not looked at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.render.emaillint.model import (
    SLUG_CSS_COMMENTS,
    SLUG_IMPORTANT,
    SLUG_NESTING,
    SLUG_VARIABLES,
    VENDOR_PREFIX_RE,
    Usage,
)

# At-rules whose block holds descriptors, not style declarations.
_DESCRIPTOR_AT_RULES = {
    "font-face",
    "property",
    "counter-style",
    "font-palette-values",
    "font-feature-values",
    "page",
    "color-profile",
    "viewport",
}
_LEGACY_PSEUDO_ELEMENTS = {"before", "after", "first-line", "first-letter"}

_IDENT = r"-?[a-z_][a-z0-9_-]*"
_DECL_NAME_RE = re.compile(r"(?:--[\w-]+|-?[a-z][a-z0-9-]*)", re.IGNORECASE)
_CSS_SPECIAL_CHARS = re.compile(r"[\"'\\()\[\]{};]")
_CSS_BRACE_CHARS = re.compile(r"[\"'\\{}]")
_COMMENT_OR_STRING = re.compile(r"/\*|<!--|-->|[\"'\\]")
_STRING_RE = re.compile(r"\"(?:[^\"\\\n]|\\.)*\"?|'(?:[^'\\\n]|\\.)*'?", re.DOTALL)
_URL_RE = re.compile(r"\burl\(\s*[^)]*\)", re.IGNORECASE)
_ESCAPE_RE = re.compile(r"\\.", re.DOTALL)
_ATTRIBUTE_SELECTOR_RE = re.compile(r"\[[^\]]*\]")
_IMPORTANT_RE = re.compile(r"!\s*important\s*$", re.IGNORECASE)
_FUNCTION_RE = re.compile(rf"(?<![\w-])({_IDENT})\(")
_IDENT_RE = re.compile(rf"(?<![\w#-]){_IDENT}")
_DIMENSION_RE = re.compile(r"(?<![\w#.])[+-]?(?:\d+\.?\d*|\.\d+)(%|[a-z]+)(?![\w-])")
_PSEUDO_RE = re.compile(rf"(::?)({_IDENT})")
_AT_RULE_RE = re.compile(rf"@({_IDENT})", re.IGNORECASE)
_MEDIA_FEATURE_RE = re.compile(rf"\(\s*({_IDENT})\s*(?=[:)<>=])")


@dataclass(frozen=True)
class _Block:
    prelude: str
    body: str


def _skip_string(text: str, start: int) -> int:
    """Index just after the string starting at ``start`` (ends at its quote or a newline)."""
    quote = text[start]
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == quote:
            return i + 1
        elif c == "\n":
            return i
        else:
            i += 1
    return n


def _strip_comments(css: str) -> tuple[str, int]:
    """``css`` with comments (and ``<!--``/``-->`` tokens) blanked, and the comment count."""
    out: list[str] = []
    count = 0
    i = 0
    while (m := _COMMENT_OR_STRING.search(css, i)) is not None:
        j = m.start()
        token = m.group(0)
        if token in ('"', "'"):
            end = _skip_string(css, j)
            out.append(css[i:end])
            i = end
        elif token == "\\":
            out.append(css[i : j + 2])
            i = j + 2
        elif token == "/*":
            out.append(css[i:j])
            out.append(" ")
            end = css.find("*/", j + 2)
            i = len(css) if end < 0 else end + 2
            count += 1
        else:  # "<!--" or "-->"
            out.append(css[i:j])
            out.append(" ")
            i = j + len(token)
    out.append(css[i:])
    return "".join(out), count


def _matching_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start`` (``len(text)`` if unclosed)."""
    depth = 0
    i = start
    while (m := _CSS_BRACE_CHARS.search(text, i)) is not None:
        j = m.start()
        c = text[j]
        if c == "\\":
            i = j + 2
            continue
        if c in "\"'":
            i = _skip_string(text, j)
            continue
        depth += 1 if c == "{" else -1
        if depth == 0:
            return j
        i = j + 1
    return len(text)


def _split_items(text: str) -> list[str | _Block]:
    """Split a rule list or declaration block into ``;``-terminated items and ``{}`` blocks."""
    items: list[str | _Block] = []
    start = i = depth = 0
    while (m := _CSS_SPECIAL_CHARS.search(text, i)) is not None:
        j = m.start()
        c = text[j]
        i = j + 1
        if c == "\\":
            i = j + 2
        elif c in "\"'":
            i = _skip_string(text, j)
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and c in ";}":  # a stray "}" ends an item too
            items.append(text[start:j])
            start = i
        elif depth == 0 and c == "{":
            end = _matching_brace(text, j)
            items.append(_Block(text[start:j].strip(), text[j + 1 : end]))
            start = i = end + 1
    items.append(text[start:])
    return [item for item in items if isinstance(item, _Block) or item.strip()]


def _clean_value(value: str) -> str:
    """Lower-cased value with strings and ``url()`` contents removed."""
    return _URL_RE.sub("url()", _STRING_RE.sub('""', value)).lower()


def _split_selectors(prelude: str) -> list[str]:
    parts: list[str] = []
    depth = start = 0
    for i, c in enumerate(prelude):
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            parts.append(prelude[start:i])
            start = i + 1
    parts.append(prelude[start:])
    return [p for p in parts if p.strip()]


class CssScanner:
    """Records in ``usage`` the features used by the CSS it is given."""

    def __init__(self, usage: Usage) -> None:
        self.db = usage.db
        self.add = usage.add

    def inline_style(self, css: str, location: str) -> None:
        text, comments = _strip_comments(css)
        self.add(SLUG_CSS_COMMENTS, location, comments)
        self.declarations(text, location, nested_rules=False)

    def style_sheet(self, css: str, location: str) -> None:
        text, comments = _strip_comments(css)
        self.add(SLUG_CSS_COMMENTS, location, comments)
        self.rules(text, location)

    def rules(self, text: str, location: str) -> None:
        for item in _split_items(text):
            if isinstance(item, _Block):
                if item.prelude.startswith("@"):
                    self.at_rule(item.prelude, item.body, location, in_style_rule=False)
                else:
                    self.selectors(item.prelude, location)
                    self.declarations(item.body, location, nested_rules=True)
            elif item.strip().startswith("@"):  # @import, @charset, ...
                self.at_rule(item.strip(), None, location, in_style_rule=False)

    def at_rule(
        self, prelude: str, body: str | None, location: str, *, in_style_rule: bool
    ) -> None:
        m = _AT_RULE_RE.match(prelude)
        if m is None:
            return
        name = VENDOR_PREFIX_RE.sub("", m.group(1).lower())
        self.add(self.db.css_at_rules.get(name), location)
        if name == "media":
            condition = prelude[m.end() :].lower()
            for feature in dict.fromkeys(_MEDIA_FEATURE_RE.findall(condition)):
                self.add(self.db.css_media_features.get(feature), location)
        if body is None or name in _DESCRIPTOR_AT_RULES:
            return
        if name == "keyframes":
            for item in _split_items(body):
                if isinstance(item, _Block):  # "from", "50%": not selectors
                    self.declarations(item.body, location, nested_rules=False)
        elif in_style_rule:
            self.declarations(body, location, nested_rules=True)
        else:
            self.rules(body, location)

    def selectors(self, prelude: str, location: str) -> None:
        text = _ATTRIBUTE_SELECTOR_RE.sub("[]", _ESCAPE_RE.sub("_", _STRING_RE.sub('""', prelude)))
        for selector in _split_selectors(text.lower()):
            found: set[str] = set()
            for colons, name in _PSEUDO_RE.findall(selector):
                slug: str | None
                if colons == "::" or name in _LEGACY_PSEUDO_ELEMENTS:
                    slug = self.db.css_pseudo_elements.get(name)
                else:
                    slug = self.db.css_pseudo_classes.get(name)
                if slug is not None:
                    found.add(slug)
            for slug in found:
                self.add(slug, location)

    def declarations(self, text: str, location: str, *, nested_rules: bool) -> None:
        for item in _split_items(text):
            if isinstance(item, _Block):
                if not nested_rules:
                    continue
                self.add(SLUG_NESTING, location)
                if item.prelude.startswith("@"):
                    self.at_rule(item.prelude, item.body, location, in_style_rule=True)
                else:
                    self.selectors(item.prelude, location)
                    self.declarations(item.body, location, nested_rules=True)
            else:
                self.declaration(item, location)

    def declaration(self, text: str, location: str) -> None:
        name, colon, value = text.partition(":")
        name = name.strip()
        if not colon or not _DECL_NAME_RE.fullmatch(name):
            return
        name = name.lower()
        value = value.strip()
        found: set[str] = set()
        if _IMPORTANT_RE.search(value):
            found.add(SLUG_IMPORTANT)
            value = _IMPORTANT_RE.sub("", value)
        if name.startswith("--"):
            found.add(SLUG_VARIABLES)
        clean = _clean_value(value)
        identifiers = set(_IDENT_RE.findall(clean))
        specific = self.db.css_property_values.get(name, {})
        by_value = {specific[k] for k in identifiers if k in specific}
        found |= by_value
        if not by_value:  # "display:flex" is reported as such, not also as "display"
            found.update(self.db.css_properties.get(name, ()))
        for function in _FUNCTION_RE.findall(clean):
            found.add(
                SLUG_VARIABLES if function == "var" else self.db.css_functions.get(function, "")
            )
        for unit in _DIMENSION_RE.findall(clean):
            found.add(self.db.css_units.get(unit, ""))
        for identifier in identifiers:
            found.add(self.db.css_value_keywords.get(identifier, ""))
        for slug in found:
            self.add(slug or None, location)
