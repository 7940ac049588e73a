"""Click tracking and page views: which links an issue holds, and who followed them.

When a send starts, every web link in the email is replaced by a redirect through the
service, ``BASE/r/<token>/<n>``: the token (one merge field per recipient) is signed
and names the subscriber and the issue; ``n`` is the link's place in the issue's list
of links (``issue_links``), so the redirect can only lead where the issue led. A click
is stored, and, when it is a person's, counts for the article the link leads to in the
hot articles ranking. What is not a person's engagement is kept but ranks nothing: a
HEAD request, a known link scanner, a click within ``click_grace_seconds`` of delivery
(the gateway that opens every link as the message arrives).
"""

from __future__ import annotations

import html as html_lib
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.merge import personalise
from pipeline.settings import Settings
from pipeline.store import db

CLICK_FIELD = "%%click_token%%"

# An anchor's href in the renderer's output (lxml and premailer quote attributes with ").
_HREF = re.compile(r'(<a\b[^>]*?\bhref=")([^"]*)(")', re.IGNORECASE)
_ARTICLE_PATH = re.compile(r"^/articles/([a-z0-9][a-z0-9-]*)/?$")


@dataclass(frozen=True)
class Link:
    position: int
    url: str
    slug: str | None


def track_links(html: str, settings: Settings) -> tuple[str, list[Link]]:
    """The email with its web links sent through the redirect, and those links.

    The same URL twice is one link. Merge fields (the unsubscribe link) and anything
    that is not http(s) (mailto:) stay as they are."""
    links: dict[str, Link] = {}

    def swap(match: re.Match[str]) -> str:
        url = html_lib.unescape(match.group(2))
        if not url.startswith(("http://", "https://")) or "%%" in url:
            return match.group(0)
        link = links.get(url)
        if link is None:
            link = links[url] = Link(len(links), url, article_slug(url, settings))
        redirect = f"{settings.base_url}/r/{CLICK_FIELD}/{link.position}"
        return f"{match.group(1)}{redirect}{match.group(3)}"

    return _HREF.sub(swap, html), list(links.values())


def article_slug(url: str, settings: Settings) -> str | None:
    """The slug of the site's article a URL leads to (query and fragment aside)."""
    parts = urlsplit(url)
    if (parts.hostname or "").lower() != settings.site_host.split(":")[0]:
        return None
    base_path = urlsplit(settings.base_url).path.rstrip("/")
    path = parts.path
    if base_path:
        if not path.startswith(base_path + "/"):
            return None
        path = path[len(base_path) :]
    match = _ARTICLE_PATH.match(path)
    return match.group(1) if match else None


def web_variant(email_html: str, settings: Settings) -> str:
    """The email as a public web page: nobody's name, no personal links."""
    public = f"{settings.base_url}/subscribe"
    return personalise(
        email_html,
        {
            "unsubscribe_url": public,
            "preferences_url": public,
            "name": "",
            "name_html": "",
            "click_token": "",
        },
    )


def untracked(conn: sa.Connection, issue_id: int, html: str) -> str:
    """The issue's frozen email with each redirect back to the link it stands for (for a
    preview: a redirect without a recipient's token leads nowhere)."""
    urls = dict(
        conn.execute(
            sa.select(db.issue_links.c.position, db.issue_links.c.url).where(
                db.issue_links.c.issue_id == issue_id
            )
        ).all()
    )
    redirect = re.compile(r'(href=")[^"]*/r/' + re.escape(CLICK_FIELD) + r'/([0-9]+)(")')

    def back(match: re.Match[str]) -> str:
        url = urls.get(int(match.group(2)))
        if url is None:
            return match.group(0)
        return f"{match.group(1)}{html_lib.escape(url)}{match.group(3)}"

    return redirect.sub(back, html)


def save_links(conn: sa.Connection, issue_id: int, links: list[Link]) -> None:
    if links:
        conn.execute(
            sa.insert(db.issue_links),
            [
                {"issue_id": issue_id, "position": k.position, "url": k.url, "slug": k.slug}
                for k in links
            ],
        )


class LinkCache:
    """An issue's links, read once per process: they never change after the send starts."""

    def __init__(self, engine: Engine, size: int = 256) -> None:
        self.engine = engine
        self.size = size
        self._issues: dict[int, dict[int, Link]] = {}
        self._lock = threading.Lock()

    def known(self, issue_id: int) -> bool:
        """Whether ``get`` answers for this issue without reading the database."""
        return issue_id in self._issues

    def get(self, issue_id: int, position: int) -> Link | None:
        links = self._issues.get(issue_id)
        if links is None:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(db.issue_links).where(db.issue_links.c.issue_id == issue_id)
                ).all()
            links = {int(r.position): Link(int(r.position), r.url, r.slug) for r in rows}
            if links:  # an issue not sent yet may still get links: don't remember "none"
                with self._lock:
                    if len(self._issues) >= self.size:
                        self._issues.pop(next(iter(self._issues)))
                    self._issues[issue_id] = links
        return links.get(position)


def is_scanner(user_agent: str, settings: Settings) -> bool:
    agent = user_agent.strip().lower()
    return not agent or any(s in agent for s in settings.scanner_agents)


@dataclass(frozen=True)
class Click:
    issue_id: int
    subscriber_id: int
    position: int
    person: bool  # not a HEAD request, not a known scanner
    slug: str | None = None  # the article the link leads to


def record_clicks(conn: sa.Connection, settings: Settings, clicks: Sequence[Click]) -> list[bool]:
    """Store clicks of people the issue reached (a token for anyone else records
    nothing); for each, whether it counts as engagement. A click sooner than
    ``click_grace_seconds`` after the delivery is a scanner's, whoever it claims to be.
    Two statements for any number of clicks."""
    d = db.deliveries.c
    at = db.now()
    by_issue: dict[int, set[int]] = {}
    for c in clicks:
        by_issue.setdefault(c.issue_id, set()).add(c.subscriber_id)
    delivered: dict[tuple[int, int], datetime] = {}
    for issue_id, ids in by_issue.items():  # one issue at a time: a slice of the key
        found = conn.execute(
            sa.select(d.subscriber_id, d.updated_at).where(
                d.issue_id == issue_id, d.subscriber_id.in_(sorted(ids)), d.status == "sent"
            )
        )
        delivered.update({(issue_id, int(r.subscriber_id)): r.updated_at for r in found})
    grace = at - timedelta(seconds=settings.click_grace_seconds)
    rows: list[dict[str, Any]] = []
    engaged: list[bool] = []
    for click in clicks:
        sent_at = delivered.get((click.issue_id, click.subscriber_id))
        counts = sent_at is not None and click.person and sent_at <= grace
        engaged.append(counts)
        if sent_at is not None:
            rows.append(
                {
                    "issue_id": click.issue_id,
                    "subscriber_id": click.subscriber_id,
                    "position": click.position,
                    "at": at,
                    "engaged": counts,
                }
            )
    if rows:
        conn.execute(sa.insert(db.clicks), rows)
    return engaged
