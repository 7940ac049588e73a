"""Every Celery task name, in one place, and the queues (whose names, being Redis keys,
are built in ``pipeline.store.keys``)."""

from __future__ import annotations

from pipeline.settings import Settings
from pipeline.store.keys import Keys

SEND_BATCH = "letterpress.delivery.send_batch"
START_DUE = "letterpress.issues.due"
SWEEP = "letterpress.delivery.sweep"
ANALYSE = "letterpress.site.analyse"
RENDER_ARTICLES = "letterpress.site.render_articles"
IMPORT_SUBSCRIBERS = "letterpress.audience.import_csv"  # a console import, by job id
TEND_REPLIES = "letterpress.replies.tend"  # the moderators' digest, the purge of spam

#: The build's units of work (``pipeline.site.units``) and the tasks that run them.
BUILD_TASKS = {"analyse": ANALYSE, "render_articles": RENDER_ARTICLES}
#: Tasks on the control queue: beat's ticks never wait behind a million batches.
CONTROL_TASKS = (START_DUE, SWEEP, TEND_REPLIES)


def work_queue(settings: Settings) -> str:
    return Keys(settings.redis_prefix).work_queue  # the queues are Redis keys: named there


def control_queue(settings: Settings) -> str:
    return Keys(settings.redis_prefix).control_queue
