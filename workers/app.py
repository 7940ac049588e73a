"""The Celery app factory. Configuration comes from the settings object, read once."""

from __future__ import annotations

from celery import Celery
from kombu import Queue  # type: ignore[attr-defined]

from pipeline.errors import ConfigError
from pipeline.settings import Settings
from workers import names


def create_app(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise ConfigError("REDIS_URL is not set: the workers need Redis as their broker")
    work, control = names.work_queue(settings), names.control_queue(settings)
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
        broker_connection_max_retries=None,
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout},
        result_expires=3600,
        task_default_queue=work,
        task_queues=(Queue(work), Queue(control)),  # type: ignore[no-untyped-call]
        task_routes={task: {"queue": control} for task in names.CONTROL_TASKS},
        beat_schedule={
            "due-issues": {
                "task": names.START_DUE,
                "schedule": settings.beat_seconds,
                "options": {"expires": settings.beat_seconds * 4},
            },
            "sweep": {
                "task": names.SWEEP,
                "schedule": settings.sweep_seconds,
                "options": {"expires": settings.sweep_seconds * 4},
            },
            "replies": {
                "task": names.TEND_REPLIES,
                "schedule": settings.reply_digest_minutes * 60,
                "options": {"expires": settings.reply_digest_minutes * 60},
            },
        },
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    from workers import tasks  # the tasks call into pipeline; the app is made first

    tasks.register(app, settings)
    return app
