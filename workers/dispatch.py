"""Putting batches on the Celery queue, and asking the broker how full it is."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from pipeline.ops.status import queue_depths
from pipeline.settings import Settings
from workers import names


class CeleryDispatcher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def enqueue(self, batch_ids: Sequence[int]) -> None:
        with self.app.producer_or_acquire() as producer:
            for batch_id in batch_ids:
                self.app.send_task(names.SEND_BATCH, args=[int(batch_id)], producer=producer)


def queue_empty(app: Celery, settings: Settings) -> bool:
    """True when no send task waits in the broker (so pending batches lost theirs)."""
    import redis

    client = redis.Redis.from_url(str(settings.redis_url), socket_timeout=5)
    try:
        depths = queue_depths(client, settings)
    finally:
        client.close()
    return depths.waiting(names.work_queue(settings)) == 0
