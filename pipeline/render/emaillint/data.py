"""Reading caniemail's support data into a ``FeatureDB``.

The data is caniemail's front-matter dump: ``{"source": ..., "features": [...]}``, each
feature with its ``slug``, ``title``, ``category``, ``keywords``, ``notes_by_num`` and
``stats`` (client family -> platform -> version -> ``"y"`` / ``"n"`` / ``"a"`` / ``"u"``,
optionally followed by note references such as ``"a #1 #3"``). The package ships a copy
trimmed to what the linter reads (``caniemail.json``, made by ``trim.py``, licence in
``NOTICE``); ``load_features()`` without a path reads that copy.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from pathlib import Path

from pipeline.render.emaillint.index import IndexBuilder
from pipeline.render.emaillint.model import Feature, FeatureDB, Note, PlatformSupport, Support

PACKAGED = "caniemail.json"  # package data, beside this module
_PACKAGE = __name__.rpartition(".")[0]

_SUPPORT: dict[str, Support] = {"y": "y", "n": "n", "a": "a", "u": "u"}
_STATUS_RE = re.compile(r"\s*([ynau])((?:\s*#\d+)*)\s*")
_NOTE_REF_RE = re.compile(r"#(\d+)")

_VERSION_SCHEMES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("year-month", re.compile(r"\d{4}-\d{2}")),
    ("year", re.compile(r"(?:19|20)\d{2}")),
    ("dotted", re.compile(r"\d+(?:\.\d+)+")),
    ("number", re.compile(r"\d+")),
)


def load_features(path: Path | None = None) -> FeatureDB:
    """Parse a caniemail data file into an index; without ``path``, the packaged copy."""
    if path is None:
        text = resources.files(_PACKAGE).joinpath(PACKAGED).read_text(encoding="utf-8")
        return parse_features(json.loads(text), f"{_PACKAGE}/{PACKAGED}")
    return parse_features(json.loads(Path(path).read_text(encoding="utf-8")), str(path))


@functools.cache
def packaged_features() -> FeatureDB:
    """The packaged data, read once per process."""
    return load_features()


def parse_features(data: object, where: str) -> FeatureDB:
    """Index the decoded data (``{"source": ..., "features": [...]}``) read from ``where``."""
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise ValueError(f"{where}: expected an object with a 'features' list")
    source = data.get("source")
    builder = IndexBuilder()
    for i, raw in enumerate(data["features"]):
        feature, keywords = _parse_feature(raw, f"{where}: features[{i}]")
        builder.add(feature, keywords)
    return builder.build(str(source) if source is not None else where)


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
            version = latest_version(list(versions))
            value = _expect_str(versions[version], f"{where}.{family}.{platform}.{version}")
            support, refs = parse_status(value, f"{where}.{family}.{platform}.{version}")
            notes = tuple(Note(n, notes_by_num.get(n, "")) for n in refs)
            platforms.append(PlatformSupport(platform, version, support, notes))
        latest[family] = tuple(platforms)
    feature = Feature(slug=slug, title=title, category=category, latest=latest)
    return feature, keywords if isinstance(keywords, str) else ""


def parse_status(value: str, where: str) -> tuple[Support, tuple[str, ...]]:
    """``"a #1 #3"`` -> ``("a", ("1", "3"))``."""
    m = _STATUS_RE.fullmatch(value)
    if m is None:
        raise ValueError(f"{where}: unexpected support value {value!r}")
    return _SUPPORT[m.group(1)], tuple(dict.fromkeys(_NOTE_REF_RE.findall(m.group(2))))


def _version_scheme(version: str) -> str | None:
    for name, pattern in _VERSION_SCHEMES:
        if pattern.fullmatch(version):
            return name
    return None


def latest_version(versions: list[str]) -> str:
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
