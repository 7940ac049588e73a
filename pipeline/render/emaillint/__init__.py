"""Lint rendered email HTML against caniemail.com's client-support data.

``load_features(path=None)`` reads caniemail's front-matter dump (per feature, per client
family, platform and version, ``"y"`` / ``"n"`` / ``"a"`` (partial) / ``"u"`` (unknown),
optionally followed by note references such as ``"a #1 #3"``) and indexes it by what can be
seen in an email (``index``): CSS properties, property values (``display:flex``), CSS
functions, units and value keywords, at-rules, media features, pseudo-classes and
pseudo-elements, HTML elements and HTML attributes. Without a path it reads the copy
packaged here, ``caniemail.json``: caniemail's data (hteumeuleu/caniemail, MIT, see
``NOTICE``) trimmed by ``trim.py`` to the features the linter can detect, the fields it
reads, and the Gmail and Outlook families.

``lint_html(html, db=None, clients=("gmail", "outlook"))`` parses the HTML (``html``,
``css``), collects what the email uses and reports, per client family, each used feature
that the family's current platforms do not (or only partly) support (``lint``).
``format_findings`` prints them all; ``email_warnings`` gives the lines the ``preview``,
``issue preview`` and ``issue test`` commands print: what the email uses that Gmail or
Outlook cannot show (``report``).

Not looked at: selector kinds and combinators, image formats, AMP, BIMI, external or
``<link>``-ed style sheets, vendor-prefixed properties, and anything inside HTML comments
(so styles in Outlook conditional comments are not analysed).
"""

from __future__ import annotations

from pipeline.render.emaillint.data import load_features, packaged_features
from pipeline.render.emaillint.lint import lint_html
from pipeline.render.emaillint.model import (
    DEFAULT_CLIENTS,
    ElementRule,
    Feature,
    FeatureDB,
    Finding,
    Level,
    Note,
    PlatformSupport,
    Support,
    Verdict,
)
from pipeline.render.emaillint.report import (
    ENHANCEMENTS,
    email_warnings,
    format_findings,
    warning_lines,
)

__all__ = [
    "DEFAULT_CLIENTS",
    "ENHANCEMENTS",
    "ElementRule",
    "Feature",
    "FeatureDB",
    "Finding",
    "Level",
    "Note",
    "PlatformSupport",
    "Support",
    "Verdict",
    "email_warnings",
    "format_findings",
    "lint_html",
    "load_features",
    "packaged_features",
    "warning_lines",
]
