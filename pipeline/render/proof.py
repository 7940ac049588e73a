"""A proof of an email before it is saved or sent: what the console shows beside a draft.

``proof`` renders the articles picked (each full or a teaser) with the subject,
preheader and intro as typed, the way ``prepare`` will, with the preview's merge fields
(``preview_fields``) filled in, and says what an editor checks before sending:

- the inbox line: who it is from, the subject and the preheader as a list of mail shows
  them (the preheader cut where an inbox cuts it);
- the size of the HTML against Gmail's clip (``email_clip_bytes``): past it, Gmail hides
  the rest behind "View entire message", footer and unsubscribe link included;
- where the affiliate disclosure and each medical disclaimer land in the HTML, and
  whether that is above the clip;
- the email-client support warnings (``emaillint.email_warnings``).

Nothing is saved. A draft that cannot render (a broken article, a missing disclosure,
an email over the clip) is a proof with ``errors`` and no email.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.content.store import Catalog
from pipeline.errors import ContentError, EmailTooLarge, LetterpressError
from pipeline.merge import personalise
from pipeline.render.emaillint import email_warnings
from pipeline.render.emails import EmailRenderer, preview_fields
from pipeline.render.policy import disclaimer_for
from pipeline.settings import Settings
from pipeline.store.keys import Keys

PROOF_SECONDS = 900  # how long a proof's frames can be loaded
PROOFS_KEPT = 200  # in one process, without Redis
PROOFS_PER_USER = 6  # a user's newest proofs; older ones go (a preview is made per edit)
INBOX_PREHEADER = 100  # about what a wide inbox list shows after the subject


@dataclass(frozen=True)
class Placement:
    """Where one notice lands in the HTML."""

    what: str  # "Affiliate disclosure", "Disclaimer of <title>"
    where: str  # in words: "before the first article", "after <title>"
    offset: int  # bytes into the HTML
    share: float  # of the whole HTML, 0..1
    above_clip: bool


@dataclass
class Proof:
    sender_name: str
    sender_email: str
    subject: str
    preheader: str
    html: str = ""
    text: str = ""
    size: int = 0
    clip: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    placements: list[Placement] = field(default_factory=list)

    @property
    def inbox_preheader(self) -> str:
        text = " ".join(self.preheader.split())
        return text if len(text) <= INBOX_PREHEADER else text[: INBOX_PREHEADER - 1] + "…"

    @property
    def share(self) -> float:
        return self.size / self.clip if self.clip else 0.0

    @property
    def clipped(self) -> bool:
        return self.size > self.clip


def _offsets(html: bytes, marker: bytes) -> list[int]:
    found, at = [], html.find(marker)
    while at >= 0:
        found.append(at)
        at = html.find(marker, at + 1)
    return found


def _placements(
    settings: Settings, catalog: Catalog, html: str, full: Sequence[str]
) -> list[Placement]:
    raw = html.encode("utf-8")
    size = max(len(raw), 1)
    clip = settings.email_clip_bytes

    def placed(what: str, where: str, offset: int) -> Placement:
        return Placement(what, where, offset, offset / size, offset < clip)

    notices = [
        placed("Affiliate disclosure", "at the top, before the first article", at)
        for at in _offsets(raw, b'class="disclosure"')
    ]
    carrying = [
        catalog.articles[s].title for s in full if disclaimer_for(settings, catalog.articles[s])
    ]
    for n, at in enumerate(_offsets(raw, b'class="disclaimer"')):
        title = carrying[n] if n < len(carrying) else "an article"
        notices.append(placed(f"Disclaimer of “{title}”", f"right after “{title}”", at))
    return notices


def proof(
    settings: Settings,
    catalog: Catalog,
    slugs: Sequence[str],
    full: Sequence[str],
    *,
    subject: str,
    preheader: str = "",
    intro: str = "",
    scores: dict[str, float] | None = None,
    view_url: str | None = None,
) -> Proof:
    """The proof of an email of ``slugs`` (those in ``full`` in full, the rest teasers)."""
    result = Proof(
        settings.sender_name,
        settings.sender_email,
        subject.strip(),
        preheader,
        clip=settings.email_clip_bytes,
    )
    if not slugs:
        result.errors.append("Pick at least one article.")
        return result
    try:
        email = EmailRenderer(settings).render(
            catalog,
            list(slugs),
            subject=subject.strip() or None,
            preheader=preheader or None,
            intro=intro,
            campaign="preview",
            scores=scores,
            full_slugs=list(full),
            view_url=view_url,
        )
    except EmailTooLarge as exc:
        result.size = exc.size
        result.errors.append(str(exc))
        return result
    except ContentError as exc:
        result.errors += [str(p) for p in exc.problems]
        return result
    except LetterpressError as exc:  # a missing disclosure, an unknown article, settings
        result.errors.append(str(exc))
        return result
    fields = preview_fields(settings)
    result.subject = email.subject
    result.preheader = email.preheader
    result.html = personalise(email.html, fields)
    result.text = personalise(email.text, fields)
    result.size = email.size
    result.warnings = email_warnings(email.html)
    result.placements = _placements(settings, catalog, email.html, full)
    return result


class Proofs:
    """Proofs' HTML kept for a few minutes, for the preview's frames to load by token:
    in Redis when there is one (every server process sees them), else in this process
    (``letterpress serve`` then runs only one). A token belongs to the user who made it."""

    def __init__(self, client: Any | None, prefix: str, seconds: int = PROOF_SECONDS) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.seconds = seconds
        self._here: OrderedDict[str, tuple[float, int, str]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, user_id: int, html: str) -> str:
        token = secrets.token_urlsafe(18)
        if self.client is not None:
            value = f"{user_id}\n{html}".encode()
            newest = self.keys.console_proofs_of(user_id)
            pipe = self.client.pipeline()
            pipe.set(self.keys.console_proof(token), value, ex=self.seconds)
            pipe.lpush(newest, token)
            pipe.lrange(newest, PROOFS_PER_USER, -1)
            pipe.ltrim(newest, 0, PROOFS_PER_USER - 1)
            pipe.expire(newest, self.seconds)
            older = pipe.execute()[2]
            if older:
                self.client.delete(*(self.keys.console_proof(bytes(t).decode()) for t in older))
            return token
        with self._lock:
            self._here[token] = (time.monotonic() + self.seconds, user_id, html)
            while len(self._here) > PROOFS_KEPT:
                self._here.popitem(last=False)
        return token

    def get(self, user_id: int, token: str) -> str | None:
        if self.client is not None:
            raw = self.client.get(self.keys.console_proof(token))
            if raw is None:
                return None
            owner, _, html = bytes(raw).decode().partition("\n")
            return html if owner == str(user_id) else None
        with self._lock:
            found = self._here.get(token)
        if found is None or found[0] < time.monotonic() or found[1] != user_id:
            return None
        return found[2]
