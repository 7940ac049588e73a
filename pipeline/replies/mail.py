"""The emails replies cause, ready for a provider, and their sending.

- ``digest``: to the moderators, the replies waiting since the last one (at most one
  per ``reply_digest_minutes``, however many replies come).
- ``notice``: to the author of an approved reply, that an approved reply answers it,
  with a signed link that stops these at once.
- ``confirm``: to an address that asked for notices and is not a confirmed
  subscriber: notices start only once the link in it is followed (double opt-in).

The text of a reply reaches an email escaped (``text.to_html``) in the HTML part and as
it was written in the plain one.
"""

from __future__ import annotations

import html as html_lib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from pipeline.audience.tokens import Signer
from pipeline.render.policy import article_url
from pipeline.render.templating import environment, site_context
from pipeline.replies.moderation import Held, Notice
from pipeline.replies.text import to_html
from pipeline.sending.providers.base import Message, Provider, ProviderError, Recipient
from pipeline.statuses import Role
from pipeline.store import db

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from pipeline.settings import Settings

log = logging.getLogger(__name__)


def moderators(engine: Engine, settings: Settings) -> list[str]:
    """Who is told of waiting replies: ``reply_moderators``, or else the console's
    owners and editors who are not disabled."""
    if settings.reply_moderators:
        return list(settings.reply_moderators)
    u = db.users.c
    with engine.connect() as conn:
        return list(
            conn.scalars(
                sa.select(u.email)
                .where(u.role.in_([Role.OWNER, Role.EDITOR]), u.disabled_at.is_(None))
                .order_by(u.id)
            )
        )


def _message(settings: Settings, kind: str, subject: str, context: dict[str, Any]) -> Message:
    env = environment(settings.templates_dir)
    ctx = {**site_context(settings), "kind": kind, **context}
    return Message(
        subject=subject,
        html=env.get_template("email/reply.html").render(ctx),
        text=env.get_template("email/reply.txt").render(ctx),
        from_name=settings.sender_name,
        from_email=settings.sender_email,
        tag=f"reply-{kind}",
        metadata={"kind": f"reply-{kind}"},  # the outbox files each kind apart
    )


def recipient(email: str, name: str = "", headers: dict[str, str] | None = None) -> Recipient:
    return Recipient(
        subscriber_id=0,
        email=email,
        name=name,
        fields={"name": name, "name_html": html_lib.escape(name)},
        headers=headers or {},
    )


def digest(settings: Settings, waiting: Sequence[Held], total: int) -> Message:
    items = [
        {
            "name": h.name,
            "article": article_url(settings, h.slug),
            "slug": h.slug,
            "text": h.body,
            "html": to_html(h.body),
        }
        for h in waiting
    ]
    count = len(items)
    return _message(
        settings,
        "digest",
        f"{count} {'reply waits' if count == 1 else 'replies wait'} for moderation",
        {"items": items, "total": total, "queue_url": f"{settings.base_url}/admin/replies"},
    )


def notice(settings: Settings, signer: Signer, n: Notice) -> tuple[Message, Recipient]:
    stop = f"{settings.base_url}/replies/stop/{signer.sign('reply-stop', n.answered_id)}"
    url = f"{article_url(settings, n.slug)}#reply-{n.reply_id}"
    message = _message(
        settings,
        "notice",
        f"{n.name} answered your reply",
        {"name": n.name, "text": n.body, "html": to_html(n.body), "url": url, "stop_url": stop},
    )
    # RFC 8058: the mailbox provider's own unsubscribe button stops them too.
    headers = {
        "List-Unsubscribe": f"<{stop}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    return message, recipient(n.to, n.to_name, headers)


def confirm(
    settings: Settings, signer: Signer, reply_id: int, email: str, name: str, slug: str
) -> tuple[Message, Recipient]:
    token = signer.sign_dated("reply-notify", reply_id)
    message = _message(
        settings,
        "confirm",
        f"Confirm: tell you of answers to your reply on {settings.site_name}",
        {
            "confirm_url": f"{settings.base_url}/replies/notify/{token}",
            "confirm_hours": int(settings.confirm_hours),
            "url": article_url(settings, slug),
        },
    )
    return message, recipient(email, name)


def deliver(provider: Provider, message: Message, recipient: Recipient, what: str) -> bool:
    """Send one email; a failure is logged (it is never the reader's page that fails)."""
    key = f"{message.tag}-{time.time_ns()}"
    try:
        result = provider.send(message, [recipient], key)
    except ProviderError as exc:
        log.warning("could not send the %s email: %s", what, exc)
        return False
    except Exception:  # after the answer nothing else can report it: the log does
        log.exception("the %s email failed", what)
        return False
    for reason in result.rejected.values():
        log.warning("the %s email was not sent: %s", what, reason)
        return False
    return True
