"""A build pool that fans units of work out as Celery tasks and waits for them."""

from __future__ import annotations

from celery import Celery, group

from pipeline.site.units import Unit
from workers import names


class CeleryPool:
    name = "celery"

    def __init__(self, app: Celery, timeout: float = 600.0) -> None:
        self.app = app
        self.timeout = timeout

    def run(self, work: str, units: list[Unit]) -> list[Unit]:
        if not units:
            return []
        task = self.app.signature(names.BUILD_TASKS[work])
        result = group(task.clone(args=(unit,)) for unit in units).apply_async()
        try:
            values: list[Unit] = result.get(timeout=self.timeout, disable_sync_subtasks=False)
        finally:
            result.forget()
        return values
