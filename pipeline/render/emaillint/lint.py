"""From what an email uses to findings: per client family, what it does not (fully) support.

A family's verdict for a feature looks at the latest version entry of each of its platforms
(``"windows"``, ``"ios"``, ...): any ``"n"`` makes a finding of level ``"unsupported"``
listing those platforms, any ``"a"`` one of level ``"partial"`` (a feature can have both);
``"y"`` and ``"u"`` are not reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pipeline.render.emaillint.data import packaged_features
from pipeline.render.emaillint.html import scan
from pipeline.render.emaillint.model import DEFAULT_CLIENTS, FeatureDB, Finding, Level

_LEVEL_ORDER: dict[str, int] = {"unsupported": 0, "partial": 1}


def finding_key(finding: Finding) -> tuple[str, int, str, tuple[str, ...]]:
    """The order of findings: client, level (unsupported first), feature slug."""
    return (finding.client, _LEVEL_ORDER[finding.level], finding.slug, finding.platforms)


def lint_html(
    html: str, db: FeatureDB | None = None, clients: Sequence[str] = DEFAULT_CLIENTS
) -> list[Finding]:
    """Features used by ``html`` that ``clients`` (client families) do not fully support.

    ``db`` defaults to the packaged data (``packaged_features()``). One finding per
    (feature, client, level), sorted by ``finding_key``; ``count`` adds up the occurrences
    over all ``locations``.
    """
    db = packaged_features() if db is None else db
    families = [clients] if isinstance(clients, str) else list(dict.fromkeys(clients))
    unknown = [c for c in families if c not in db.clients]
    if unknown:
        raise ValueError(
            f"unknown client famil{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}; the data has: {', '.join(db.clients)}"
        )
    usage = scan(html, db)
    findings = [
        finding
        for client in families
        for slug, locations in usage.counts.items()
        for finding in _findings(db, slug, client, locations)
    ]
    return sorted(findings, key=finding_key)


def _findings(db: FeatureDB, slug: str, client: str, locations: Counter[str]) -> list[Finding]:
    verdict = db.verdict(slug, client)
    levels: tuple[tuple[Level, tuple[str, ...]], ...] = (
        ("unsupported", verdict.unsupported),
        ("partial", verdict.partial),
    )
    return [
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
        for level, platforms in levels
        if platforms
    ]
