"""What the linter knows and reports: caniemail features, verdicts and findings."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Support = Literal["y", "n", "a", "u"]
Level = Literal["unsupported", "partial"]

DEFAULT_CLIENTS: tuple[str, ...] = ("gmail", "outlook")

# Features detected by dedicated code rather than through one of the indexes.
SLUG_IMPORTANT = "css-important"
SLUG_VARIABLES = "css-variables"
SLUG_CSS_COMMENTS = "css-comments"
SLUG_NESTING = "css-nesting"
SLUG_DOCTYPE = "html-doctype"
SLUG_HTML_COMMENTS = "html-comments"
SLUG_ANCHOR_LINKS = "html-anchor-links"
SLUG_MAILTO_LINKS = "html-mailto-links"
DEDICATED_SLUGS = frozenset(
    {
        SLUG_IMPORTANT,
        SLUG_VARIABLES,
        SLUG_CSS_COMMENTS,
        SLUG_NESTING,
        SLUG_DOCTYPE,
        SLUG_HTML_COMMENTS,
        SLUG_ANCHOR_LINKS,
        SLUG_MAILTO_LINKS,
    }
)

VENDOR_PREFIX_RE = re.compile(r"^-(?:webkit|moz|ms|o)-")

# Defaults of enumerated attributes, for element features such as <input type="text">.
_ATTRIBUTE_DEFAULTS: dict[tuple[str, str], str] = {
    ("input", "type"): "text",
    ("button", "type"): "submit",
}


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

    def detectable(self) -> frozenset[str]:
        """Slugs of the features an email can be found to use: every slug an index leads
        to, and those found by dedicated code (``!important``, comments, doctype, ...)."""
        singles = (
            self.css_functions,
            self.css_units,
            self.css_value_keywords,
            self.css_at_rules,
            self.css_media_features,
            self.css_pseudo_classes,
            self.css_pseudo_elements,
            self.html_attributes,
        )
        slugs = {slug for index in singles for slug in index.values()}
        slugs.update(s for group in self.css_properties.values() for s in group)
        slugs.update(s for values in self.css_property_values.values() for s in values.values())
        slugs.update(r.slug for rules in self.html_elements.values() for r in rules)
        slugs.update(DEDICATED_SLUGS)
        return frozenset(s for s in slugs if s in self.features)


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


class Usage:
    """Occurrences of features in one email: slug -> location -> count."""

    def __init__(self, db: FeatureDB) -> None:
        self.db = db
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)

    def add(self, slug: str | None, location: str, count: int = 1) -> None:
        if slug is not None and slug in self.db.features and count > 0:
            self.counts[slug][location] += count
