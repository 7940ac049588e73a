"""One file's bytes to an ``Article``, or to a list of ``Problem``s, each with the line a
person should open: YAML front matter (with line numbers) and a Markdown body."""

from __future__ import annotations

import difflib
import hashlib
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from pipeline.content.article import (
    FAQ_MARKER,
    FIELDS,
    MAX_SLUG,
    SLUG_RE,
    AffiliateMode,
    Article,
    FAQItem,
    Hero,
    Parsed,
)
from pipeline.errors import Problem
from pipeline.settings import Settings

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe YAML (libyaml when present) that keeps dates as text, so an impossible date
    is reported as a problem instead of crashing the parser."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def content_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def parse_article(
    display_path: str, raw: bytes, settings: Settings, modified: datetime | None = None
) -> Parsed:
    """Parse one article file. Never raises for bad input: returns the problems."""
    where = display_path
    modified = modified or datetime.now(UTC)
    if len(raw) > settings.max_article_bytes:
        return _fail(
            where, 1,
            f"file is {len(raw) / 1e6:.1f} MB, over the {settings.max_article_bytes / 1e6:.1f} MB"
            " limit (max_article_bytes): split the article or raise the limit",
        )  # fmt: skip
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return _fail(
            where, line, f"not UTF-8 (byte 0x{raw[exc.start]:02x}): save the file as UTF-8"
        )
    text = _normalise(text)
    if not text.strip():
        return _fail(where, 1, "file is empty: write front matter and a body")
    lines = text.split("\n")
    if lines[0].rstrip() != "---":
        return _fail(where, 1, "no front matter: start the file with a line '---'")
    end = _front_matter_end(lines)
    if end is None:
        return _fail(where, 1, "front matter is not closed: add a line '---' after it")
    front = "\n".join(lines[1:end])
    body = "\n".join(lines[end + 1 :])
    body_line = end + 2
    tabs = [i + 2 for i, line in enumerate(lines[1:end]) if "\t" in line]
    if tabs:
        return Parsed(
            None,
            [Problem(where, n, "tab character in front matter: YAML needs spaces") for n in tabs],
        )
    fields, problems = _read_front_matter(where, front)
    if fields is None:
        return Parsed(None, problems)
    built = _build(where, fields, body, body_line, content_hash(raw), modified, problems)
    if not body.strip():
        problems.append(Problem(where, body_line, "body is empty: write the article below '---'"))
    return Parsed(None if problems else built, problems)


def body_of(raw: bytes) -> str:
    """The Markdown body of a file ``parse_article`` accepted (the same bytes): what a
    build needs besides the front matter it kept from the last build."""
    lines = _normalise(raw.decode("utf-8")).split("\n")
    end = _front_matter_end(lines)
    if end is None:
        raise ValueError("no front matter")
    return "\n".join(lines[end + 1 :])


def _normalise(text: str) -> str:
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _front_matter_end(lines: list[str]) -> int | None:
    return next((i for i in range(1, len(lines)) if lines[i].rstrip() in ("---", "...")), None)


def _fail(where: str, line: int, message: str) -> Parsed:
    return Parsed(None, [Problem(where, line, message)])


def _read_front_matter(
    where: str, front: str
) -> tuple[dict[str, tuple[Any, int]] | None, list[Problem]]:
    problems: list[Problem] = []
    loader = _Loader(front)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, [Problem(where, 2, "front matter is empty: add at least a title")]
        if not isinstance(node, yaml.MappingNode):
            return None, [
                Problem(
                    where, node.start_mark.line + 2, "front matter must be 'field: value' lines"
                )
            ]
        fields: dict[str, tuple[Any, int]] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 2
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                problems.append(Problem(where, line, "field names must be plain words"))
                continue
            if key in fields:
                problems.append(
                    Problem(
                        where, line, f"field '{key}' given twice (first on line {fields[key][1]})"
                    )
                )
                continue
            if key not in FIELDS:
                hint = difflib.get_close_matches(key, FIELDS, n=1)
                tip = f" (did you mean '{hint[0]}'?)" if hint else ""
                problems.append(Problem(where, line, f"unknown field '{key}'{tip}"))
                continue
            fields[key] = (loader.construct_object(value_node, deep=True), line)
        return fields, problems
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 2 if mark is not None else 2
        reason = getattr(exc, "problem", None) or str(exc)
        return None, [Problem(where, line, f"invalid YAML: {reason}")]
    finally:
        loader.dispose()


class _Fields:
    """Typed access to front-matter values that records problems instead of raising."""

    def __init__(self, where: str, values: dict[str, tuple[Any, int]], problems: list[Problem]):
        self.where = where
        self.values = values
        self.problems = problems

    def line(self, name: str) -> int:
        return self.values.get(name, (None, 1))[1]

    def problem(self, name: str, message: str) -> None:
        self.problems.append(Problem(self.where, self.line(name), message))

    def text(self, name: str, required: bool = False) -> str:
        if name not in self.values or self.values[name][0] is None:
            if required:
                self.problem(name, f"{name} is missing: add '{name}: ...' to the front matter")
            return ""
        value = self.values[name][0]
        if isinstance(value, bool | list | dict):
            self.problem(name, f"{name} must be text")
            return ""
        result = str(value).strip()
        if required and not result:
            self.problem(name, f"{name} is empty")
        return result

    def flag(self, name: str, default: bool) -> bool:
        value = self.values.get(name, (default, 0))[0]
        if not isinstance(value, bool):
            self.problem(name, f"{name} must be true or false")
            return default
        return value

    def when(self, name: str) -> datetime | None:
        if name not in self.values or self.values[name][0] in (None, ""):
            return None
        value = self.values[name][0]
        raw = str(value).strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
                d = date.fromisoformat(raw)
                return datetime(d.year, d.month, d.day, tzinfo=UTC)
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ].+", raw):
                parsed = datetime.fromisoformat(raw)
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError as exc:
            self.problem(name, f"impossible date '{raw}': {exc}")
            return None
        self.problem(name, f"{name} '{raw}' is not a date: write YYYY-MM-DD")
        return None


def _build(
    where: str,
    values: dict[str, tuple[Any, int]],
    body: str,
    body_line: int,
    source_hash: str,
    modified: datetime,
    problems: list[Problem],
) -> Article | None:
    f = _Fields(where, values, problems)
    title = f.text("title", required=True)
    slug = _slug(f, Path(where).stem)
    category = f.text("category", required=True)
    status, published, updated = _status_and_dates(f)
    tags, affiliate, disclaimer = _tags(f), _affiliate(f), _disclaimer(f)
    hero, faq = _hero(f), _faq(f)
    if FAQ_MARKER in body and not faq:
        problems.append(
            Problem(where, body_line + body[: body.index(FAQ_MARKER)].count("\n"),
                    f"{FAQ_MARKER} marks where the FAQ goes, but there is no faq: field")
        )  # fmt: skip
    if problems:
        return None
    return Article(
        path=where,
        slug=slug,
        title=title,
        category=category,
        body=body,
        body_line=body_line,
        source_hash=source_hash,
        modified=modified,
        subtitle=f.text("subtitle"),
        summary=f.text("summary"),
        series=f.text("series"),
        tags=tags,
        author=f.text("author"),
        published=published,
        updated=updated,
        status="published" if status == "published" else "draft",
        affiliate=affiliate,
        disclosure=f.flag("disclosure", True),
        disclaimer=disclaimer,
        pinned=f.flag("pinned", False),
        replies=f.flag("replies", False) if "replies" in values else None,
        hero=hero,
        faq=tuple(faq),
        field_lines={name: line for name, (_, line) in values.items()},
    )


def _slug(f: _Fields, stem: str) -> str:
    slug = f.text("slug") or stem
    if not SLUG_RE.match(slug) or len(slug) > MAX_SLUG:
        origin = "slug" if "slug" in f.values else "file name"
        f.problem(
            "slug",
            f"unsafe {origin} {slug!r}: use lowercase letters, digits and single hyphens"
            f" (at most {MAX_SLUG})",
        )
    return slug


def _status_and_dates(f: _Fields) -> tuple[str, datetime | None, datetime | None]:
    status = f.text("status") or "draft"
    if status not in ("draft", "published"):
        f.problem("status", f"status {status!r} is not draft or published")
        status = "draft"
    published = f.when("published")
    updated = f.when("updated")
    if status == "published" and published is None and "published" not in f.values:
        f.problem(
            "status", "a published article needs a published date: add 'published: YYYY-MM-DD'"
        )
    if published and updated and updated < published:
        f.problem("updated", "updated is before published")
    return status, published, updated


def _tags(f: _Fields) -> tuple[str, ...]:
    if "tags" not in f.values or f.values["tags"][0] is None:
        return ()
    raw_tags = f.values["tags"][0]
    if isinstance(raw_tags, str):
        raw_tags = [t.strip() for t in raw_tags.split(",")]
    if not isinstance(raw_tags, list) or not all(isinstance(t, str | int) for t in raw_tags):
        f.problem("tags", "tags must be a list of words, e.g. [calcium, bone health]")
        return ()
    return tuple(str(t).strip() for t in raw_tags if str(t).strip())


def _affiliate(f: _Fields) -> AffiliateMode:
    if "affiliate" not in f.values:
        return "auto"
    value = f.values["affiliate"][0]
    if value is True or value is False or value == "auto":
        mode: AffiliateMode = value
        return mode
    f.problem("affiliate", "affiliate must be true, false or auto")
    return "auto"


def _disclaimer(f: _Fields) -> bool | str | None:
    if "disclaimer" not in f.values:
        return None
    value = f.values["disclaimer"][0]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        return value.strip()
    f.problem("disclaimer", "disclaimer must be true, false or the text to show")
    return None


def _hero(f: _Fields) -> Hero | None:
    if "hero" not in f.values or f.values["hero"][0] is None:
        return None
    value = f.values["hero"][0]
    if not isinstance(value, dict) or not isinstance(value.get("src"), str):
        f.problem("hero", "hero must have src: and alt:")
    elif set(value) - {"src", "alt"}:
        f.problem(
            "hero", f"unknown hero field(s): {', '.join(sorted(set(value) - {'src', 'alt'}))}"
        )
    elif not str(value.get("alt") or "").strip():
        f.problem("hero", "image without alt text: add hero.alt describing the image")
    else:
        return Hero(src=value["src"].strip(), alt=str(value["alt"]).strip())
    return None


def _faq(f: _Fields) -> list[FAQItem]:
    if "faq" not in f.values or f.values["faq"][0] is None:
        return []
    value = f.values["faq"][0]
    ok = isinstance(value, list) and all(
        isinstance(item, dict)
        and set(item) == {"question", "answer"}
        and all(isinstance(item[k], str) and item[k].strip() for k in ("question", "answer"))
        for item in value
    )
    if not ok:
        f.problem("faq", "faq must be a list of items with a question: and an answer:")
        return []
    return [FAQItem(i["question"].strip(), i["answer"].strip()) for i in value]
