"""Lint rendered email HTML against caniemail.com's client-support data.

``load_features(path)`` reads the caniemail front-matter dump (``caniemail-features.json``:
per feature, per client family, platform and version, ``"y"`` / ``"n"`` / ``"a"`` (partial) /
``"u"`` (unknown), optionally followed by note references such as ``"a #1 #3"``) and indexes
it by what can be seen in an email: CSS properties, property values (``display:flex``), CSS
functions, units and value keywords, at-rules, media features, pseudo-classes and
pseudo-elements, HTML elements and HTML attributes.

``lint_html(html, db, clients)`` parses the HTML with lxml, collects what the email uses and
reports, per client family, each used feature that the family's current platforms do not (or
only partly) support. A family's verdict for a feature looks at the latest version entry of
each of its platforms (``"windows"``, ``"ios"``, ...): any ``"n"`` makes a finding of level
``"unsupported"`` listing those platforms, any ``"a"`` one of level ``"partial"`` (a feature can
have both); ``"y"`` and ``"u"`` are not reported.

What is looked at: element names (with ``type`` for ``<input>``/``<button>``, ``name`` for
``<meta>``); attributes; inline ``style`` attributes and ``<style>`` elements (declarations,
``!important``, custom properties, functions, units, value keywords; in ``<style>`` also
comments, at-rules, ``@media`` features, pseudo-classes/elements and nesting); an HTML5
doctype; HTML comments; ``#anchor`` and ``mailto:`` links.
Not looked at: selector kinds and combinators, image formats, AMP, BIMI, external or
``<link>``-ed style sheets, vendor-prefixed properties, and anything inside HTML comments
(so styles in Outlook conditional comments are not analysed).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lxml.etree
import lxml.html

__all__ = [
    "DEFAULT_CLIENTS",
    "ElementRule",
    "Feature",
    "FeatureDB",
    "Finding",
    "Level",
    "Note",
    "PlatformSupport",
    "Support",
    "Verdict",
    "format_findings",
    "lint_html",
    "load_features",
]

Support = Literal["y", "n", "a", "u"]
Level = Literal["unsupported", "partial"]

DEFAULT_CLIENTS: tuple[str, ...] = ("gmail", "outlook")

# Features detected by dedicated code rather than through one of the indexes.
_SLUG_IMPORTANT = "css-important"
_SLUG_VARIABLES = "css-variables"
_SLUG_CSS_COMMENTS = "css-comments"
_SLUG_NESTING = "css-nesting"
_SLUG_DOCTYPE = "html-doctype"
_SLUG_HTML_COMMENTS = "html-comments"
_SLUG_ANCHOR_LINKS = "html-anchor-links"
_SLUG_MAILTO_LINKS = "html-mailto-links"

# css-* features that are not CSS properties although their title looks like one (or a list).
_CSS_SPECIAL = {_SLUG_IMPORTANT, _SLUG_VARIABLES, _SLUG_CSS_COMMENTS, _SLUG_NESTING}
_CSS_VALUE_KEYWORD_FEATURES = {"css-sytem-ui", "css-intrinsic-size"}  # titles list keywords
_CSS_ATTRIBUTE_FEATURES = {"css-inert-attribute": "inert"}  # an HTML attribute, filed as css
_CSS_KEYWORD_OVERRIDES = {"css-unit-initial": "initial"}  # "initial unit" is a keyword

# Property-to-feature ranks: a property named alone in a title beats one listed with others,
# which beats one found in the keywords, which beats the alias table below.
_RANK_TITLE, _RANK_TITLE_LIST, _RANK_KEYWORD, _RANK_ALIAS = range(4)

# Longhands the data covers under another feature without listing them (see the features'
# descriptions); used only for properties no feature names.
_PROPERTY_ALIASES: dict[str, str] = {
    **{f"padding-{side}": "css-padding" for side in ("top", "right", "bottom", "left")},
    **{
        f"border-{corner}-radius": "css-border-radius"
        for corner in ("top-left", "top-right", "bottom-left", "bottom-right")
    },
    **{f"scroll-snap-{p}": "css-scroll-snap" for p in ("type", "align", "stop")},
}

# (property, value keyword) pairs that mean the same as a "property:value" feature.
_VALUE_ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("display", "inline-flex"): ("display", "flex"),
    ("display", "inline-grid"): ("display", "grid"),
    ("flex-direction", "column-reverse"): ("flex-direction", "column"),
    ("flex-wrap", "wrap-reverse"): ("flex-wrap", "wrap"),
    ("flex-flow", "column"): ("flex-direction", "column"),
    ("flex-flow", "column-reverse"): ("flex-direction", "column"),
    ("flex-flow", "wrap"): ("flex-wrap", "wrap"),
    ("flex-flow", "wrap-reverse"): ("flex-wrap", "wrap"),
}

# Defaults of enumerated attributes, for element features such as <input type="text">.
_ATTRIBUTE_DEFAULTS: dict[tuple[str, str], str] = {
    ("input", "type"): "text",
    ("button", "type"): "submit",
}

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
_IMPLIED_TAGS = ("html", "head", "body")  # lxml adds these when the source lacks them

_SUPPORT: dict[str, Support] = {"y": "y", "n": "n", "a": "a", "u": "u"}
_STATUS_RE = re.compile(r"\s*([ynau])((?:\s*#\d+)*)\s*")
_NOTE_REF_RE = re.compile(r"#(\d+)")
_IDENT = r"-?[a-z_][a-z0-9_-]*"
_PROPERTY_RE = re.compile(r"-?[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_DECL_NAME_RE = re.compile(r"(?:--[\w-]+|-?[a-z][a-z0-9-]*)", re.IGNORECASE)
_TAG_RE = re.compile(r"<([a-z][a-z0-9]*)(?:\s+([a-z-]+)=\"([^\"]*)\")?\s*>", re.IGNORECASE)
_TAG_RANGE_RE = re.compile(r"<([a-z]+)(\d)>\s+to\s+<\1(\d)>", re.IGNORECASE)
_ATTRIBUTE_TITLE_RE = re.compile(r"(.+?)\s+attributes?", re.IGNORECASE)
_LIST_SPLIT_RE = re.compile(r"\s*(?:,|&|\band\b)\s*")
_KEYWORD_KIND_RE = re.compile(r"([a-z][a-z0-9-]*) (element|attribute)")
_META_TITLE_RE = re.compile(r"([a-z-]+) meta tag", re.IGNORECASE)
_AT_TITLE_RE = re.compile(r"@([a-z-]+)\s*(?:\(\s*(-?[a-z-]+)\s*\))?")
_UNIT_TITLE_RE = re.compile(r"(%|[a-z]+) unit")
_FUNCTION_TITLE_RE = re.compile(r"([a-z][a-z0-9-]*)\(\)")
_PROPERTY_VALUE_TITLE_RE = re.compile(r"([a-z-]+)\s*:\s*([a-z-]+)")
_TITLE_SUFFIXES = (" css property", " property", " shorthand")

_VERSION_SCHEMES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("year-month", re.compile(r"\d{4}-\d{2}")),
    ("year", re.compile(r"(?:19|20)\d{2}")),
    ("dotted", re.compile(r"\d+(?:\.\d+)+")),
    ("number", re.compile(r"\d+")),
)

# CSS scanning.
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
_VENDOR_PREFIX_RE = re.compile(r"^-(?:webkit|moz|ms|o)-")
_MEDIA_FEATURE_RE = re.compile(rf"\(\s*({_IDENT})\s*(?=[:)<>=])")
_HTML_COMMENT_RE = re.compile(r"<!--.*?(?:-->|$)", re.DOTALL)


# --------------------------------------------------------------------------------------------
# Data model


@dataclass(frozen=True)
class Note:
    """A numbered caniemail note (``"#3"`` in a support value)."""

    number: str
    text: str


@dataclass(frozen=True)
class PlatformSupport:
    """The latest version entry of one platform of a client family."""

    platform: str
    version: str
    support: Support
    notes: tuple[Note, ...]


@dataclass(frozen=True)
class Verdict:
    """A feature's support in one client family, over the latest entry of each platform."""

    slug: str
    client: str
    platforms: tuple[PlatformSupport, ...]

    def _where(self, support: Support) -> tuple[str, ...]:
        return tuple(p.platform for p in self.platforms if p.support == support)

    @property
    def supported(self) -> tuple[str, ...]:
        return self._where("y")

    @property
    def unsupported(self) -> tuple[str, ...]:
        return self._where("n")

    @property
    def partial(self) -> tuple[str, ...]:
        return self._where("a")

    @property
    def unknown(self) -> tuple[str, ...]:
        return self._where("u")

    def notes_for(self, level: Level) -> tuple[Note, ...]:
        """Notes referenced by the platforms of ``level``, by number, without repeats."""
        support: Support = "n" if level == "unsupported" else "a"
        notes = {n.number: n for p in self.platforms if p.support == support for n in p.notes}
        return tuple(notes[k] for k in sorted(notes, key=int))

    @property
    def summary(self) -> str:
        """``"supported"``, or e.g. ``"unsupported on windows, windows-mail; partial on ios"``."""
        parts = [
            f"{label} on {', '.join(platforms)}"
            for label, platforms in (("unsupported", self.unsupported), ("partial", self.partial))
            if platforms
        ]
        if not parts:
            if self.supported:
                parts.append("supported")
            elif not self.unknown:
                return "no data"
        if self.unknown:
            parts.append(f"unknown on {', '.join(self.unknown)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Feature:
    slug: str
    title: str
    category: str
    latest: Mapping[str, tuple[PlatformSupport, ...]]  # client family -> latest per platform


@dataclass(frozen=True)
class ElementRule:
    """An element feature: a tag, optionally with an attribute value (``<input type=text>``)."""

    slug: str
    tag: str
    attribute: str | None = None
    value: str | None = None

    def matches(self, tag: str, attributes: Mapping[str, str]) -> bool:
        if tag != self.tag:
            return False
        if self.attribute is None:
            return True
        actual = attributes.get(self.attribute, _ATTRIBUTE_DEFAULTS.get((tag, self.attribute)))
        return actual is not None and actual.strip().lower() == self.value


@dataclass(frozen=True)
class FeatureDB:
    """caniemail features, indexed by what can be recognised in an email."""

    source: str
    clients: tuple[str, ...]  # client families present in the data
    features: Mapping[str, Feature]
    css_properties: Mapping[str, tuple[str, ...]]  # property -> feature slugs
    css_property_values: Mapping[str, Mapping[str, str]]  # property -> keyword -> slug
    css_functions: Mapping[str, str]
    css_units: Mapping[str, str]
    css_value_keywords: Mapping[str, str]
    css_at_rules: Mapping[str, str]
    css_media_features: Mapping[str, str]
    css_pseudo_classes: Mapping[str, str]
    css_pseudo_elements: Mapping[str, str]
    html_elements: Mapping[str, tuple[ElementRule, ...]]  # tag -> rules
    html_attributes: Mapping[str, str]

    def verdict(self, slug: str, client: str) -> Verdict:
        """Support of feature ``slug`` in client family ``client`` (e.g. ``"outlook"``)."""
        if client not in self.clients:
            raise ValueError(
                f"unknown client family {client!r}; the data has: {', '.join(self.clients)}"
            )
        feature = self.features[slug]
        return Verdict(slug, client, feature.latest.get(client, ()))


@dataclass(frozen=True)
class Finding:
    """One feature used in the email that a client family does not (fully) support."""

    slug: str
    title: str
    client: str
    level: Level
    platforms: tuple[str, ...]  # the family's platforms concerned
    locations: tuple[str, ...]  # e.g. "style attribute of <td>", "<style> block"
    count: int  # occurrences in the email, over all locations
    notes: tuple[Note, ...] = ()

    @property
    def where(self) -> str:
        return ", ".join(self.locations)


# --------------------------------------------------------------------------------------------
# Loading


def load_features(path: Path) -> FeatureDB:
    """Parse caniemail-features.json (``{"source": ..., "features": [...]}``) into an index."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise ValueError(f"{path}: expected an object with a 'features' list")
    source = data.get("source")
    builder = _IndexBuilder()
    for i, raw in enumerate(data["features"]):
        builder.add(_parse_feature(raw, f"{path}: features[{i}]"))
    return builder.build(str(source) if source is not None else str(path))


def _expect_dict(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _expect_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _parse_feature(raw: object, where: str) -> tuple[Feature, str]:
    """The feature and its keywords (comma-separated, possibly empty)."""
    obj = _expect_dict(raw, where)
    slug = _expect_str(obj.get("slug"), f"{where}.slug")
    where = f"{where} ({slug})"
    title = _expect_str(obj.get("title"), f"{where}.title").strip()
    category = str(obj.get("category") or "")
    keywords = obj.get("keywords")
    notes_raw = obj.get("notes_by_num")
    notes_by_num = (
        {k: " ".join(str(v).split()) for k, v in _expect_dict(notes_raw, where).items()}
        if notes_raw is not None
        else {}
    )
    latest: dict[str, tuple[PlatformSupport, ...]] = {}
    for family, platforms_raw in _expect_dict(obj.get("stats"), f"{where}.stats").items():
        platforms: list[PlatformSupport] = []
        for platform, versions_raw in _expect_dict(platforms_raw, f"{where}.{family}").items():
            versions = _expect_dict(versions_raw, f"{where}.{family}.{platform}")
            if not versions:
                continue
            version = _latest_version(list(versions))
            value = _expect_str(versions[version], f"{where}.{family}.{platform}.{version}")
            support, refs = _parse_status(value, f"{where}.{family}.{platform}.{version}")
            notes = tuple(Note(n, notes_by_num.get(n, "")) for n in refs)
            platforms.append(PlatformSupport(platform, version, support, notes))
        latest[family] = tuple(platforms)
    feature = Feature(slug=slug, title=title, category=category, latest=latest)
    return feature, keywords if isinstance(keywords, str) else ""


def _parse_status(value: str, where: str) -> tuple[Support, tuple[str, ...]]:
    m = _STATUS_RE.fullmatch(value)
    if m is None:
        raise ValueError(f"{where}: unexpected support value {value!r}")
    return _SUPPORT[m.group(1)], tuple(dict.fromkeys(_NOTE_REF_RE.findall(m.group(2))))


def _version_scheme(version: str) -> str | None:
    for name, pattern in _VERSION_SCHEMES:
        if pattern.fullmatch(version):
            return name
    return None


def _latest_version(versions: list[str]) -> str:
    """The latest of a platform's version labels, listed oldest first.

    caniemail lists versions chronologically, but labels of different kinds are not
    comparable (Outlook for Mac: "2016", "2019-02", "16.80"), so the last listed decides the
    kind and the highest label of that kind wins (which mends a few dates listed out of order).
    """
    last = versions[-1]
    scheme = _version_scheme(last)
    if scheme is None:
        return last
    same = [(i, v) for i, v in enumerate(versions) if _version_scheme(v) == scheme]
    _, best = max(same, key=lambda iv: (tuple(int(p) for p in re.split(r"[.-]", iv[1])), iv[0]))
    return best


def _split_list(text: str) -> list[str]:
    return [p for p in _LIST_SPLIT_RE.split(text.strip()) if p]


def _media_feature_variants(name: str) -> list[str]:
    if name.endswith("device-pixel-ratio"):
        m = _VENDOR_PREFIX_RE.match(name)
        prefix = m.group(0) if m else ""
        bare = name[len(prefix) :]
        return [name, f"{prefix}min-{bare}", f"{prefix}max-{bare}"]
    return [name]


class _IndexBuilder:
    def __init__(self) -> None:
        self.features: dict[str, Feature] = {}
        self.clients: dict[str, None] = {}
        self.properties: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.property_values: dict[str, dict[str, str]] = defaultdict(dict)
        self.functions: dict[str, str] = {}
        self.units: dict[str, str] = {}
        self.value_keywords: dict[str, str] = {}
        self.at_rules: dict[str, str] = {}
        self.media_features: dict[str, str] = {}
        self.pseudo_classes: dict[str, str] = {}
        self.pseudo_elements: dict[str, str] = {}
        self.elements: dict[str, list[ElementRule]] = defaultdict(list)
        self.attributes: dict[str, str] = {}

    def add(self, parsed: tuple[Feature, str]) -> None:
        feature, keywords = parsed
        if feature.slug.startswith("_"):  # the template entry
            return
        if feature.slug in self.features:
            raise ValueError(f"duplicate feature slug {feature.slug!r}")
        self.features[feature.slug] = feature
        self.clients.update(dict.fromkeys(feature.latest))
        keyword_list = [k.strip().lower() for k in keywords.split(",") if k.strip()]
        if feature.slug.startswith("css-"):
            self._add_css(feature.slug, feature.title.lower(), keyword_list)
        elif feature.slug.startswith("html-"):
            self._add_html(feature.slug, feature.title, keyword_list)

    def _add_property(self, name: str, slug: str, rank: int) -> None:
        if slug not in self.properties[name][rank]:
            self.properties[name][rank].append(slug)

    def _add_css(self, slug: str, title: str, keywords: list[str]) -> None:
        if slug in _CSS_SPECIAL or slug.startswith("css-selector-"):
            return
        if slug in _CSS_ATTRIBUTE_FEATURES:
            self.attributes[_CSS_ATTRIBUTE_FEATURES[slug]] = slug
        elif slug in _CSS_KEYWORD_OVERRIDES:
            self.value_keywords[_CSS_KEYWORD_OVERRIDES[slug]] = slug
        elif slug in _CSS_VALUE_KEYWORD_FEATURES:
            for keyword in _split_list(title):
                self.value_keywords[keyword] = slug
        elif slug.startswith("css-at-"):
            for part in title.split(","):
                m = _AT_TITLE_RE.fullmatch(part.strip())
                if m is None:
                    continue
                if m.group(2):
                    for name in _media_feature_variants(m.group(2)):
                        self.media_features[name] = slug
                else:
                    self.at_rules[m.group(1)] = slug
        elif slug.startswith(("css-pseudo-class-", "css-pseudo-element-")):
            name = title.lstrip(":").removesuffix("()").strip()
            index = self.pseudo_classes if "-class-" in slug else self.pseudo_elements
            index[name] = slug
        elif functions := _FUNCTION_TITLE_RE.findall(title):
            for name in functions:
                self.functions[name] = slug
        elif m := _UNIT_TITLE_RE.fullmatch(title):
            self.units[m.group(1)] = slug
        elif m := _PROPERTY_VALUE_TITLE_RE.fullmatch(title):
            self.property_values[m.group(1)][m.group(2)] = slug
        else:
            self._add_css_properties(slug, title, keywords)

    def _add_css_properties(self, slug: str, title: str, keywords: list[str]) -> None:
        for suffix in _TITLE_SUFFIXES:
            title = title.removesuffix(suffix)
        names = _split_list(title)
        if names and all(_PROPERTY_RE.fullmatch(n) for n in names):
            rank = _RANK_TITLE if len(names) == 1 else _RANK_TITLE_LIST
            for name in names:
                self._add_property(name, slug, rank)
            # Longhands listed in the keywords ("border" -> "border-top-width", ...).
            for keyword in keywords:
                if any(keyword.startswith(f"{name}-") for name in names):
                    self._add_property(keyword, slug, _RANK_KEYWORD)
        else:
            # A group named in prose ("css column properties"): its keywords list the members.
            for keyword in keywords:
                if _PROPERTY_RE.fullmatch(keyword):
                    self._add_property(keyword, slug, _RANK_KEYWORD)

    def _add_html(self, slug: str, title: str, keywords: list[str]) -> None:
        if slug == "html-semantics":  # "HTML5 semantics": the keywords are the elements
            for tag in keywords:
                self.elements[tag].append(ElementRule(slug, tag))
            return
        if m := _META_TITLE_RE.fullmatch(title):
            self.elements["meta"].append(ElementRule(slug, "meta", "name", m.group(1).lower()))
            return
        if m := _TAG_RANGE_RE.search(title):
            for n in range(int(m.group(2)), int(m.group(3)) + 1):
                tag = f"{m.group(1).lower()}{n}"
                self.elements[tag].append(ElementRule(slug, tag))
            return
        if tags := _TAG_RE.findall(title):
            for tag, attribute, value in tags:
                tag = tag.lower()
                rule = (
                    ElementRule(slug, tag, attribute.lower(), value.lower())
                    if attribute
                    else ElementRule(slug, tag)
                )
                self.elements[tag].append(rule)
            return
        if m := _ATTRIBUTE_TITLE_RE.fullmatch(title):
            names = _split_list(m.group(1).lower())
            if all(_PROPERTY_RE.fullmatch(n) for n in names):
                for name in names:
                    self.attributes[name] = slug
                return
        kinds = [m for k in keywords if (m := _KEYWORD_KIND_RE.fullmatch(k))]
        for m in kinds:  # "map element", "usemap attribute"
            if m.group(2) == "element":
                self.elements[m.group(1)].append(ElementRule(slug, m.group(1)))
            else:
                self.attributes[m.group(1)] = slug
        if not kinds and title.lower() == slug.removeprefix("html-"):  # "address"
            self.elements[title.lower()].append(ElementRule(slug, title.lower()))

    def build(self, source: str) -> FeatureDB:
        properties: dict[str, tuple[str, ...]] = {}
        for name, by_rank in self.properties.items():
            properties[name] = tuple(by_rank[min(by_rank)])
        for name, slug in _PROPERTY_ALIASES.items():
            if name not in properties and slug in self.features:
                properties[name] = (slug,)
        property_values = {p: dict(v) for p, v in self.property_values.items()}
        for (prop, keyword), (target_prop, target_keyword) in _VALUE_ALIASES.items():
            target = property_values.get(target_prop, {}).get(target_keyword)
            if target is not None:
                property_values.setdefault(prop, {}).setdefault(keyword, target)
        return FeatureDB(
            source=source,
            clients=tuple(sorted(self.clients)),
            features=self.features,
            css_properties=properties,
            css_property_values=property_values,
            css_functions=self.functions,
            css_units=self.units,
            css_value_keywords=self.value_keywords,
            css_at_rules=self.at_rules,
            css_media_features=self.media_features,
            css_pseudo_classes=self.pseudo_classes,
            css_pseudo_elements=self.pseudo_elements,
            html_elements={tag: tuple(rules) for tag, rules in self.elements.items()},
            html_attributes=self.attributes,
        )


# --------------------------------------------------------------------------------------------
# CSS scanning (comments, strings, parentheses and nested blocks respected)


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


class _Collector:
    """Occurrences of features in one email: slug -> location -> count."""

    def __init__(self, db: FeatureDB) -> None:
        self.db = db
        self.usage: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, slug: str | None, location: str, count: int = 1) -> None:
        if slug is not None and slug in self.db.features and count > 0:
            self.usage[slug][location] += count

    # ---- CSS

    def inline_style(self, css: str, location: str) -> None:
        text, comments = _strip_comments(css)
        self.add(_SLUG_CSS_COMMENTS, location, comments)
        self.declarations(text, location, nested_rules=False)

    def style_sheet(self, css: str, location: str) -> None:
        text, comments = _strip_comments(css)
        self.add(_SLUG_CSS_COMMENTS, location, comments)
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
        name = _VENDOR_PREFIX_RE.sub("", m.group(1).lower())
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
                self.add(_SLUG_NESTING, location)
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
            found.add(_SLUG_IMPORTANT)
            value = _IMPORTANT_RE.sub("", value)
        if name.startswith("--"):
            found.add(_SLUG_VARIABLES)
        clean = _clean_value(value)
        identifiers = set(_IDENT_RE.findall(clean))
        specific = self.db.css_property_values.get(name, {})
        by_value = {specific[k] for k in identifiers if k in specific}
        found |= by_value
        if not by_value:  # "display:flex" is reported as such, not also as "display"
            found.update(self.db.css_properties.get(name, ()))
        for function in _FUNCTION_RE.findall(clean):
            found.add(
                _SLUG_VARIABLES if function == "var" else self.db.css_functions.get(function, "")
            )
        for unit in _DIMENSION_RE.findall(clean):
            found.add(self.db.css_units.get(unit, ""))
        for identifier in identifiers:
            found.add(self.db.css_value_keywords.get(identifier, ""))
        for slug in found:
            self.add(slug or None, location)

    # ---- HTML

    def document(self, html: str) -> None:
        parser = lxml.html.HTMLParser(encoding="utf-8")
        root = lxml.html.document_fromstring(html.encode("utf-8"), parser=parser)
        # (lxml-stubs lacks DocInfo.doctype; lxml makes up an HTML 4 one when there is none)
        doctype = str(getattr(root.getroottree().docinfo, "doctype", "") or "")
        if " ".join(doctype.lower().split()) == "<!doctype html>":
            self.add(_SLUG_DOCTYPE, "doctype")
        source = _HTML_COMMENT_RE.sub("", html)
        implied = {
            tag for tag in _IMPLIED_TAGS if not re.search(rf"<{tag}[\s/>]", source, re.IGNORECASE)
        }
        for node in root.iter():
            if isinstance(node, lxml.etree._Comment):
                self.add(_SLUG_HTML_COMMENTS, "HTML comment")
                continue
            if not isinstance(node.tag, str):  # processing instructions, entities
                continue
            tag = node.tag.lower()
            if tag in implied:
                continue
            attributes = {str(k).lower(): str(v) for k, v in node.attrib.items()}
            self.element(tag, attributes)
            if tag == "style":
                self.style_sheet(node.text or "", "<style> block")

    def element(self, tag: str, attributes: Mapping[str, str]) -> None:
        for rule in self.db.html_elements.get(tag, ()):
            if rule.matches(tag, attributes):
                self.add(rule.slug, f"<{tag}> element")
        for name, value in attributes.items():
            self.add(self.db.html_attributes.get(name), f"{name} attribute of <{tag}>")
            if name == "style":
                self.inline_style(value, f"style attribute of <{tag}>")
        href = attributes.get("href", "").strip()
        if tag == "a" and len(href) > 1 and href.startswith("#"):
            self.add(_SLUG_ANCHOR_LINKS, "href attribute of <a>")
        if tag == "a" and href.lower().startswith("mailto:"):
            self.add(_SLUG_MAILTO_LINKS, "href attribute of <a>")


# --------------------------------------------------------------------------------------------
# Linting


_LEVEL_ORDER: dict[str, int] = {"unsupported": 0, "partial": 1}


def _finding_key(finding: Finding) -> tuple[str, int, str, tuple[str, ...]]:
    return (finding.client, _LEVEL_ORDER[finding.level], finding.slug, finding.platforms)


def lint_html(html: str, db: FeatureDB, clients: Sequence[str] = DEFAULT_CLIENTS) -> list[Finding]:
    """Features used by ``html`` that ``clients`` (client families) do not fully support.

    One finding per (feature, client, level), sorted by client, level (unsupported first) and
    feature slug; ``count`` adds up the occurrences over all ``locations``.
    """
    families = [clients] if isinstance(clients, str) else list(dict.fromkeys(clients))
    unknown = [c for c in families if c not in db.clients]
    if unknown:
        raise ValueError(
            f"unknown client famil{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}; the data has: {', '.join(db.clients)}"
        )
    collector = _Collector(db)
    if html.strip():
        collector.document(html)
    findings: list[Finding] = []
    for client in families:
        for slug, locations in collector.usage.items():
            verdict = db.verdict(slug, client)
            levels: tuple[tuple[Level, tuple[str, ...]], ...] = (
                ("unsupported", verdict.unsupported),
                ("partial", verdict.partial),
            )
            for level, platforms in levels:
                if platforms:
                    findings.append(
                        Finding(
                            slug=slug,
                            title=db.features[slug].title,
                            client=client,
                            level=level,
                            platforms=platforms,
                            locations=tuple(sorted(locations)),
                            count=sum(locations.values()),
                            notes=verdict.notes_for(level),
                        )
                    )
    return sorted(findings, key=_finding_key)


def format_findings(findings: Iterable[Finding]) -> str:
    """One line per finding, in a stable order (client, level, feature), no trailing newline."""
    lines = []
    for f in sorted(findings, key=_finding_key):
        uses = "1 use" if f.count == 1 else f"{f.count} uses"
        line = (
            f"{f.client}: {f.level} on {', '.join(f.platforms)}: {f.title} [{f.slug}]"
            f" ({uses} in {f.where})"
        )
        if f.notes:
            line += " notes: " + " ".join(f"#{n.number} {n.text}".rstrip() for n in f.notes)
        lines.append(line)
    return "\n".join(lines)
