"""Make the packaged ``caniemail.json`` from caniemail's full front-matter dump.

    python -m pipeline.render.emaillint.trim [SOURCE] [OUT]

SOURCE defaults to ``tests/specs/caniemail-features.json`` (hteumeuleu/caniemail
``_features/*.md``, commit 6b086a3, MIT: see ``NOTICE``), OUT to ``caniemail.json`` beside
this file. What is kept is what the linter reads, and nothing else:

- the features it can detect (every slug its indexes lead to, and those found by dedicated
  code): image formats, AMP, BIMI and selector features go;
- per feature: ``slug``, ``title``, ``category``, ``keywords``, ``stats`` and the
  ``notes_by_num`` entries the kept stats refer to (no descriptions, links, test URLs);
- in ``stats``: the client families the product reports (``DEFAULT_CLIENTS``: Gmail and
  Outlook), and per platform only the latest version entry, the one a verdict reads.

The index built from the result is the same as the full data's, and so are the verdicts
for the kept families (tests/test_email_warnings.py holds both to that).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.render.emaillint.data import PACKAGED, latest_version, parse_features, parse_status
from pipeline.render.emaillint.model import DEFAULT_CLIENTS

_KEPT_FIELDS = ("slug", "title", "category", "keywords")
_SOURCE = Path(__file__).resolve().parents[3] / "tests" / "specs" / "caniemail-features.json"
_OUT = Path(__file__).resolve().with_name(PACKAGED)


def trim(data: dict[str, Any], clients: Sequence[str] = DEFAULT_CLIENTS) -> dict[str, Any]:
    """The part of the decoded full data that the linter reads for ``clients``."""
    detectable = parse_features(data, "source").detectable()
    features = [
        _trim_feature(raw, clients)
        for raw in data["features"]
        if isinstance(raw, dict) and raw.get("slug") in detectable
    ]
    source = (
        f"{data.get('source')}; trimmed by pipeline/render/emaillint/trim.py to the features"
        f" the linter detects, the {', '.join(clients)} families and the latest version entry"
        " of each platform"
    )
    return {"source": source, "features": features}


def _trim_feature(raw: dict[str, Any], clients: Sequence[str]) -> dict[str, Any]:
    feature = {field: raw[field] for field in _KEPT_FIELDS if field in raw}
    stats: dict[str, dict[str, dict[str, str]]] = {}
    referenced: set[str] = set()
    for family in clients:
        platforms = raw.get("stats", {}).get(family)
        if platforms is None:
            continue
        stats[family] = {}
        for platform, versions in platforms.items():
            if not versions:
                continue
            version = latest_version(list(versions))
            stats[family][platform] = {version: versions[version]}
            referenced.update(parse_status(versions[version], f"{raw['slug']}.{family}")[1])
    feature["stats"] = stats
    notes = {k: v for k, v in (raw.get("notes_by_num") or {}).items() if str(k) in referenced}
    if notes:
        feature["notes_by_num"] = notes
    return feature


def dumps(trimmed: dict[str, Any]) -> str:
    """JSON with one feature per line (small, and a data update diffs by feature)."""
    lines = [json.dumps(f, ensure_ascii=False, separators=(",", ":")) for f in trimmed["features"]]
    source = json.dumps(trimmed["source"], ensure_ascii=False)
    return '{"source":' + source + ',"features":[\n' + ",\n".join(lines) + "\n]}\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.render.emaillint.trim")
    parser.add_argument("source", nargs="?", type=Path, default=_SOURCE)
    parser.add_argument("out", nargs="?", type=Path, default=_OUT)
    args = parser.parse_args(argv)
    data = json.loads(args.source.read_text(encoding="utf-8"))
    text = dumps(trim(data))
    args.out.write_text(text, encoding="utf-8")
    size = args.source.stat().st_size
    print(f"{args.out}: {len(text.encode()):,} bytes (from {size:,} in {args.source})")


if __name__ == "__main__":
    main()
