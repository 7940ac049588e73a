"""What a reader writes, checked, and how it is shown.

A reply is plain text: no HTML and no Markdown, so nothing a reader types can become
markup. It is shown as paragraphs (blank lines) of lines, and the web addresses in it
become links (linkify-it-py, the link finder of markdown-it) with ``rel="ugc nofollow
noopener"``. ``segments`` is the one reading of a body: the public API sends it as
data (the page's script builds text nodes from it), and ``to_html`` builds the
escaped HTML of the console and the moderators' email from it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from markupsafe import Markup, escape

from pipeline.audience.subscribers import normalise_email

if TYPE_CHECKING:
    from linkify_it import LinkifyIt

    from pipeline.settings import Settings

UGC_REL = "ugc nofollow noopener"
MAX_NAME = 100
MAX_WEBSITE = 300
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")

# One paragraph is a list of lines; one line a list of (text, href or None).
Segment = tuple[str, str | None]
Paragraph = list[list[Segment]]


class ReplyProblem(ValueError):
    """What is wrong with one field of a reply, in words for the reader."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Fields:
    """A reply's fields as they are stored: checked and normalised."""

    name: str
    email: str
    website: str
    body: str


@cache
def _linkify() -> LinkifyIt:
    from linkify_it import LinkifyIt

    # Web addresses with or without a scheme; addresses of mail stay text.
    return LinkifyIt(options={"fuzzy_email": False})


def _line(text: str) -> str:
    return _CONTROL.sub("", unicodedata.normalize("NFC", text)).strip()


def check(settings: Settings, name: str, email: str, website: str, body: str) -> Fields:
    """The fields, checked; raises ``ReplyProblem`` for the first field that is wrong."""
    name = " ".join(_line(name).split())
    if not name:
        raise ReplyProblem("name", "enter your name")
    if len(name) > MAX_NAME:
        raise ReplyProblem("name", f"use at most {MAX_NAME} characters")
    if not email.strip():
        raise ReplyProblem("email", "enter your email address (it is not published)")
    try:
        address = normalise_email(email)
    except ValueError:
        raise ReplyProblem("email", "this is not an email address") from None
    website = _website(website)
    text = unicodedata.normalize("NFC", body.replace("\r\n", "\n").replace("\r", "\n"))
    text = "\n".join(_CONTROL.sub("", line).rstrip() for line in text.split("\n")).strip()
    if not text:
        raise ReplyProblem("comment", "write your reply")
    if len(text) > settings.reply_max_chars:
        raise ReplyProblem(
            "comment", f"use at most {settings.reply_max_chars} characters (this has {len(text)})"
        )
    links = len(_linkify().match(text) or [])
    if links > settings.reply_max_links:
        raise ReplyProblem(
            "comment",
            f"a reply may hold at most {settings.reply_max_links} web addresses (this has {links})",
        )
    return Fields(name, address, website, text)


def _website(raw: str) -> str:
    value = _line(raw)
    if not value:
        return ""
    if "://" not in value:
        value = f"https://{value}"
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "." not in parts.hostname
        or any(c.isspace() for c in value)
        or len(value) > MAX_WEBSITE
    ):
        raise ReplyProblem("website", "enter a web address such as https://example.com, or nothing")
    return value


def blocked_word(settings: Settings, fields: Fields) -> str | None:
    """The first word of ``reply_blocklist`` in the reply (whole words, any case)."""
    if not settings.reply_blocklist:
        return None
    haystack = f"{fields.name}\n{fields.website}\n{fields.body}".casefold()
    for word in settings.reply_blocklist:
        needle = word.strip().casefold()
        if needle and re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack):
            return word
    return None


def segments(body: str) -> list[Paragraph]:
    """The body as paragraphs of lines of (text, link): web addresses as links."""
    paragraphs: list[Paragraph] = []
    for block in _BLANK_LINES.split(body.strip()):
        lines: Paragraph = []
        for line in block.split("\n"):
            found = _linkify().match(line) or []
            out: list[Segment] = []
            at = 0
            for match in found:
                if match.index > at:
                    out.append((line[at : match.index], None))
                href = match.url
                if urlsplit(href).scheme in ("http", "https"):
                    out.append((match.text, href))
                else:
                    out.append((match.text, None))
                at = match.last_index
            if at < len(line):
                out.append((line[at:], None))
            lines.append(out)
        paragraphs.append(lines)
    return paragraphs


def to_html(body: str) -> Markup:
    """The body as escaped HTML paragraphs, its web addresses as ``ugc`` links."""
    return paragraphs_html(segments(body))


def paragraphs_html(paragraphs: list[Paragraph]) -> Markup:
    """``segments`` as escaped HTML."""
    html = []
    for paragraph in paragraphs:
        lines = []
        for line in paragraph:
            lines.append(
                Markup("").join(
                    escape(text)
                    if href is None
                    else Markup('<a href="{}" rel="{}">{}</a>').format(href, UGC_REL, text)
                    for text, href in line
                )
            )
        html.append(Markup("<p>{}</p>").format(Markup("<br>\n").join(lines)))
    return Markup("\n").join(html)
