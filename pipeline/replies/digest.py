"""The periodic work on replies: one email to the moderators with the replies that came
since the last one, and the purge of old spam. Celery beat runs ``tend`` every
``reply_digest_minutes`` (``workers/app.py``); ``letterpress replies tend`` runs it by
hand or from cron where there are no workers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.replies import mail, moderation
from pipeline.statuses import ReplyStatus

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from pipeline.sending.providers.base import Provider
    from pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tended:
    told: int  # replies in the digest (0: none was sent)
    moderators: int
    purged: int  # spam replies deleted


def tend(engine: Engine, settings: Settings, provider: Provider) -> Tended:
    purged = moderation.purge_spam(engine, settings)
    if purged:
        log.info("purged %d spam replies older than %d days", purged, settings.reply_spam_days)
    to = mail.moderators(engine, settings)
    if not to:
        return Tended(0, 0, purged)
    waiting = moderation.take_digest(engine)
    if not waiting:
        return Tended(0, len(to), purged)
    total = moderation.status_counts(engine)[ReplyStatus.PENDING]
    message = mail.digest(settings, waiting, total)
    sent = [
        mail.deliver(provider, message, mail.recipient(address), "moderators' digest")
        for address in to
    ]
    if not any(sent):  # nobody was told: they go in the next one
        moderation.untake_digest(engine, [h.id for h in waiting])
        return Tended(0, len(to), purged)
    return Tended(len(waiting), len(to), purged)
