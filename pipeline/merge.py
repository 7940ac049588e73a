"""Merge fields: the placeholders a rendered email carries for what differs per
recipient (``%%name%%``), filled in by the provider adapters or by the provider.

Rendering (``pipeline.render``) writes them and the adapters
(``pipeline.sending.providers``) fill them; this module is all the two share.
"""

from __future__ import annotations

import re

MERGE = {
    "unsubscribe_url": "%%unsubscribe_url%%",
    "preferences_url": "%%preferences_url%%",
    "name": "%%name%%",
}
MERGE_FIELD = re.compile(r"%%([a-z_]+)%%")


def personalise(template: str, fields: dict[str, str]) -> str:
    """Fill merge fields; unknown ones are left for the next step to see."""
    return MERGE_FIELD.sub(lambda m: fields.get(m.group(1), m.group(0)), template)


def merge_names(*texts: str) -> list[str]:
    """The merge fields used in ``texts``, in order of first use."""
    names: dict[str, None] = {}
    for text in texts:
        for match in MERGE_FIELD.finditer(text):
            names.setdefault(match.group(1), None)
    return list(names)
