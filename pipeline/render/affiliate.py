"""Which links are affiliate links, and where the disclosure goes.

The US FTC's Endorsement Guides (16 CFR 255, revised 2023) want a material connection
disclosed clearly and conspicuously, close to the claim and before the reader meets
the link. Letterpress therefore puts the disclosure at the top of any article or email
that carries an affiliate link, and refuses to render one whose disclosure is off.

Rules are written ``host`` (every link to that host or its sub-domains) or
``host?param`` (a link to that host carrying that query parameter); ``*`` in a host
stands for one or more labels, and a host of ``*`` alone means any host. Links
through a URL shortener count as affiliate links, since nobody can see where they
lead; so does a link the author marked with ``{.affiliate}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from pipeline.errors import DisclosureError, Problem

MARKER_CLASS = "affiliate"
SPONSORED_REL = "sponsored nofollow noopener"


@dataclass(frozen=True)
class Rule:
    text: str
    host: re.Pattern[str] | None  # None: any host
    param: str | None

    @classmethod
    def parse(cls, text: str) -> Rule:
        host, _, param = text.strip().lower().partition("?")
        if host in ("", "*"):
            pattern = None
        else:
            labels = [
                r"[a-z0-9-]+(?:\.[a-z0-9-]+)*" if label == "*" else re.escape(label)
                for label in host.split(".")
            ]
            pattern = re.compile(r"^(?:.+\.)?" + r"\.".join(labels) + "$")
        if pattern is None and not param:
            raise ValueError(f"affiliate rule {text!r} matches every link")
        return cls(text, pattern, param or None)

    def matches(self, host: str, params: set[str]) -> bool:
        if self.host is not None and not self.host.match(host):
            return False
        return self.param is None or self.param in params


class AffiliateRules:
    def __init__(self, rules: list[str], shorteners: list[str]) -> None:
        self.rules = [Rule.parse(r) for r in rules]
        self.shorteners = [Rule.parse(s) for s in shorteners]

    def reason(self, href: str, classes: str = "") -> str | None:
        """Why this link is an affiliate link, or None if it is not one."""
        if MARKER_CLASS in classes.split():
            return "marked {.affiliate} by the author"
        try:
            parts = urlsplit(href.strip())
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        host = parts.hostname.lower().rstrip(".")
        params = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
        for rule in self.rules:
            if rule.matches(host, params):
                return f"affiliate rule '{rule.text}'"
        for rule in self.shorteners:
            if rule.matches(host, params):
                return f"short link through {rule.text} (its destination cannot be seen)"
        return None


def disclosure_problems(
    path: str,
    line: int,
    *,
    mode: bool | str,
    affiliate_lines: list[tuple[int, str, str]],
    disclosure_on: bool,
    disclosure_text: str,
) -> list[Problem]:
    """Contradictions between an article's front matter, its links and the settings.

    ``affiliate_lines`` holds (line, href, reason) for each affiliate link found.
    """
    problems = []
    if mode is False:
        for link_line, href, reason in affiliate_lines:
            problems.append(
                Problem(
                    path,
                    link_line,
                    f"affiliate: false, but {href} is an affiliate link ({reason}): "
                    "set affiliate: auto or remove the link",
                )
            )
    has_affiliate = mode is True or bool(affiliate_lines)
    if has_affiliate and not disclosure_on:
        problems.append(
            Problem(
                path,
                line,
                "the article has affiliate links but its disclosure is switched off: "
                "remove 'disclosure: false' (the FTC requires a clear disclosure)",
            )
        )
    if has_affiliate and not disclosure_text.strip():
        problems.append(
            Problem(
                path,
                line,
                "the article has affiliate links but affiliate_disclosure is empty: "
                "set LETTERPRESS_AFFILIATE_DISCLOSURE",
            )
        )
    return problems


def require_disclosure(problems: list[Problem]) -> None:
    if problems:
        raise DisclosureError("\n".join(str(p) for p in problems))
