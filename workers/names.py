"""Every Celery task name and queue name, in one place."""

from __future__ import annotations

from pipeline.settings import Settings

SEND_BATCH = "letterpress.delivery.send_batch"
START_DUE = "letterpress.issues.due"
SWEEP = "letterpress.delivery.sweep"
ANALYSE = "letterpress.site.analyse"
RENDER_ARTICLES = "letterpress.site.render_articles"

#: The build's units of work (``pipeline.site.units``) and the tasks that run them.
BUILD_TASKS = {"analyse": ANALYSE, "render_articles": RENDER_ARTICLES}
#: Tasks on the control queue: beat's ticks never wait behind a million batches.
CONTROL_TASKS = (START_DUE, SWEEP)


def work_queue(settings: Settings) -> str:
    return f"{settings.redis_prefix}.default"


def control_queue(settings: Settings) -> str:
    return f"{settings.redis_prefix}.control"
