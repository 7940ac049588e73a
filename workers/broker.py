"""``pipeline.broker.Broker`` on Celery: what the CLI and the service ask the workers.

Imported only when a broker is made (``workers.edge.connect``), so that commands that
never reach Redis (``build --pool serial``, ``check``, ``preview``, ``--help``) do not
pay for importing Celery and kombu.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from celery import Celery

from pipeline.broker import WorkerInfo
from pipeline.settings import Settings
from workers import names
from workers.app import create_app
from workers.dispatch import CeleryDispatcher
from workers.pool import CeleryPool


class CeleryBroker:
    """``pipeline.broker.Broker`` on Celery: one app per broker, made once."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.app = app or create_app(settings)

    def dispatcher(self) -> CeleryDispatcher:
        return CeleryDispatcher(self.app)

    def start_due_now(self) -> None:
        self.app.send_task(names.START_DUE)

    def sweep_now(self) -> None:
        self.app.send_task(names.SWEEP)

    def workers_online(self, timeout: float = 1.0) -> list[str] | None:
        try:
            replies = self.app.control.ping(timeout=timeout) or []
        except Exception:  # broker down: nobody to ask
            return None
        return [name for reply in replies for name in reply]

    def workers(self, timeout: float = 1.0) -> list[WorkerInfo] | None:
        control = self.app.control
        try:
            names_online = [name for reply in control.ping(timeout=timeout) or [] for name in reply]
            if not names_online:
                return []
            # Every worker that answered the ping is waited for, and no longer.
            inspect = control.inspect(
                destination=names_online, timeout=timeout, limit=len(names_online)
            )
            stats = inspect.stats() or {}
            active = inspect.active() or {}
            queues = inspect.active_queues() or {}
        except Exception:  # broker down: nobody to ask
            return None
        return [
            WorkerInfo(
                name=name,
                concurrency=int(stats.get(name, {}).get("pool", {}).get("max-concurrency", 0)),
                queues=tuple(sorted(q.get("name", "") for q in queues.get(name, []))),
                running=tuple(_running(task) for task in active.get(name, [])),
                processed=sum(stats.get(name, {}).get("total", {}).values()),
            )
            for name in sorted(names_online)
        ]

    def check(self, timeout: float) -> str:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)  # once, no retry
            return f"{conn.transport_cls} transport answers"

    def import_now(self, job_id: int) -> None:
        self.app.send_task(names.IMPORT_SUBSCRIBERS, args=[int(job_id)])

    def build_pool(self) -> CeleryPool | None:
        return CeleryPool(self.app) if self.workers_online() else None

    def run_worker(self, args: Sequence[str]) -> None:
        self.app.worker_main(["worker", *args])

    def run_beat(self, args: Sequence[str]) -> None:
        schedule = Path(tempfile.gettempdir()) / f"letterpress-beat-{self.settings.redis_prefix}"
        self.app.start(["beat", "--schedule", str(schedule), *args])


# What a task the dashboard shows is doing: its arguments are ids, never secrets.
_LABELS = {names.SEND_BATCH: "send batch {0}"}


def _running(task: dict[str, Any]) -> str:
    name = str(task.get("name", "?"))
    args = task.get("args") or []
    label = _LABELS.get(name)
    if label is not None and args:
        return label.format(*args)
    return name.rsplit(".", 1)[-1].replace("_", " ")
