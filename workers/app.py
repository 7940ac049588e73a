"""The Celery app factory. Configuration comes from the settings object, read once."""

from __future__ import annotations

from celery import Celery

from pipeline.errors import ConfigError
from pipeline.settings import Settings


def create_app(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise ConfigError("REDIS_URL is not set: the workers need Redis as their broker")
    app = Celery("letterpress", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        result_expires=3600,
        task_default_queue=f"{settings.redis_prefix}.default",
    )
    from . import tasks

    tasks.register(app)
    return app
