"""Merge fields: the placeholders a rendered email carries for what differs per
recipient (``%%name%%``), filled in by the provider adapters or by the provider.

Rendering (``pipeline.render``) writes them and the adapters
(``pipeline.sending.providers``) fill them; this module is all the two share.
"""

from __future__ import annotations

import re
from functools import lru_cache

MERGE = {
    "unsubscribe_url": "%%unsubscribe_url%%",
    "preferences_url": "%%preferences_url%%",
    "name": "%%name%%",
}
MERGE_FIELD = re.compile(r"%%([a-z_]+)%%")


def personalise(template: str, fields: dict[str, str]) -> str:
    """Fill merge fields; unknown ones are left for the next step to see."""
    if "%%" not in template:  # most headers: filled already
        return template
    pieces = _pieces(template)
    out = [pieces[0]]
    for i in range(1, len(pieces), 2):
        name = pieces[i]
        out.append(fields.get(name, f"%%{name}%%"))
        out.append(pieces[i + 1])
    return "".join(out)


@lru_cache(maxsize=64)
def _pieces(template: str) -> tuple[str, ...]:
    """Text and field names by turns (``re.split`` keeps the captured names): a template
    is cut once per batch, not once per recipient."""
    return tuple(MERGE_FIELD.split(template))


def merge_names(*texts: str) -> list[str]:
    """The merge fields used in ``texts``, in order of first use."""
    names: dict[str, None] = {}
    for text in texts:
        for match in MERGE_FIELD.finditer(text):
            names.setdefault(match.group(1), None)
    return list(names)
