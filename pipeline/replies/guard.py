"""What stands between the reply form and a bot, before anything is stored.

- The form token: signed (``reply``), naming the article, and carrying the second it
  was issued. The built page carries one issued when the site was built; the page's
  script swaps in a fresh one when the page loads, so that for a reader with
  JavaScript the token dates the page's load.
- A post sooner than ``reply_min_seconds`` after its token was issued is a bot's.
- The honeypot: a field people do not see (``HONEYPOT``); anything in it is a bot's.
- The Origin of the post, when the browser sends one, must be the site's (``null``,
  which a browser sends from a page whose Referrer-Policy is ``no-referrer``, passes:
  such a post still needs the rest).

No third-party captcha: these, the rate limits (``pipeline.web.limits``), the bans and
moderation are the defence.
"""

from __future__ import annotations

import time
import zlib
from urllib.parse import urlsplit

from pipeline.audience.tokens import Signer

HONEYPOT = "url"  # named as a field bots like to fill; people never see it


def slug_check(slug: str) -> int:
    return zlib.crc32(slug.encode("utf-8"))


def form_token(signer: Signer, slug: str, at: float | None = None) -> str:
    """A token for the reply form of article ``slug``, issued now (or ``at``)."""
    return signer.sign("reply", int(time.time() if at is None else at), slug_check(slug))


class Refused(Exception):
    """A post that is not a person's reply; ``reason`` is for the log and the tests,
    ``message`` for the page."""

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message
        self.status = status


STALE = "This page has been open a long time, or was saved: send your reply again from here."


def check_form(
    signer: Signer,
    slug: str,
    token: str,
    honeypot: str,
    min_seconds: float,
    origin: str | None,
    base_url: str,
    now: float | None = None,
) -> None:
    """Raise ``Refused`` unless the post could be a person's."""
    if origin and origin != "null" and _origin(origin) != _origin(base_url):
        raise Refused("foreign origin", "Replies are sent from this site's pages only.", 403)
    if honeypot.strip():
        raise Refused("honeypot", "Your reply could not be accepted.")
    claim = signer.verify("reply", token) if token else None
    if claim is None or claim.ref != slug_check(slug):
        raise Refused("no form token", STALE)
    issued = claim.subscriber_id
    current = time.time() if now is None else now
    if current - issued < min_seconds:
        raise Refused(
            "too fast", "That was quicker than anyone types: wait a moment, then send it again."
        )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
