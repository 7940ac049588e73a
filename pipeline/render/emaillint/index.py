"""From caniemail's feature titles and keywords to what can be seen in an email.

caniemail names its features in prose ("display:flex", "gap, column-gap, row-gap",
"<input type=\"text\"> element", "@media (prefers-color-scheme)"); ``IndexBuilder`` reads
those titles (and, for property groups and longhands, the keywords) into the indexes of a
``FeatureDB``: CSS properties, property values, functions, units, value keywords, at-rules,
media features, pseudo-classes and pseudo-elements, HTML elements and HTML attributes.
"""

from __future__ import annotations

import re
from collections import defaultdict

from pipeline.render.emaillint.model import (
    SLUG_CSS_COMMENTS,
    SLUG_IMPORTANT,
    SLUG_NESTING,
    SLUG_VARIABLES,
    VENDOR_PREFIX_RE,
    ElementRule,
    Feature,
    FeatureDB,
)

# css-* features that are not CSS properties although their title looks like one (or a list).
_CSS_SPECIAL = {SLUG_IMPORTANT, SLUG_VARIABLES, SLUG_CSS_COMMENTS, SLUG_NESTING}
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

PROPERTY_RE = re.compile(r"-?[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
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


def _split_list(text: str) -> list[str]:
    return [p for p in _LIST_SPLIT_RE.split(text.strip()) if p]


def _media_feature_variants(name: str) -> list[str]:
    if name.endswith("device-pixel-ratio"):
        m = VENDOR_PREFIX_RE.match(name)
        prefix = m.group(0) if m else ""
        bare = name[len(prefix) :]
        return [name, f"{prefix}min-{bare}", f"{prefix}max-{bare}"]
    return [name]


class IndexBuilder:
    """Collects features one by one (``add``), then makes the ``FeatureDB`` (``build``)."""

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

    def add(self, feature: Feature, keywords: str) -> None:
        """Index ``feature``; ``keywords`` is its comma-separated keyword list."""
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
            self._add_at_rule(slug, title)
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

    def _add_at_rule(self, slug: str, title: str) -> None:
        for part in title.split(","):
            m = _AT_TITLE_RE.fullmatch(part.strip())
            if m is None:
                continue
            if m.group(2):
                for name in _media_feature_variants(m.group(2)):
                    self.media_features[name] = slug
            else:
                self.at_rules[m.group(1)] = slug

    def _add_css_properties(self, slug: str, title: str, keywords: list[str]) -> None:
        for suffix in _TITLE_SUFFIXES:
            title = title.removesuffix(suffix)
        names = _split_list(title)
        if names and all(PROPERTY_RE.fullmatch(n) for n in names):
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
                if PROPERTY_RE.fullmatch(keyword):
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
            if all(PROPERTY_RE.fullmatch(n) for n in names):
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
