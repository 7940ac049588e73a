"""Tasks: JSON in, one ``pipeline`` call, JSON out. Nothing else lives here.

Each worker process builds one ``pipeline.sending.parts.SendingParts`` on its first
task (after the fork, so no database connection or socket is shared between processes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import process as mp_process
from typing import Any

from celery import Celery, Task

from pipeline.audience import importjobs
from pipeline.replies import digest
from pipeline.sending.parts import SendingParts
from pipeline.settings import Settings
from pipeline.site import units
from workers import names
from workers.dispatch import CeleryDispatcher, queue_empty


@contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a prefork pool process start processes of its own for the length of a task.

    The import validates a large file in spawned processes (``imports.PARALLEL_BYTES``).
    Celery's pool process is a billiard process, which ``multiprocessing`` takes for its
    own current process: a daemonic one (and a daemonic process may not start others),
    whose authentication key refuses to be pickled for a spawned child. For the task it
    is neither; the import shuts its processes down before it returns, so none outlives
    the task.
    """
    config: dict[str, Any] = mp_process.current_process()._config  # type: ignore[attr-defined]
    saved = dict(config)
    config["daemon"] = False
    config["authkey"] = mp_process.AuthenticationString(bytes(config["authkey"]))  # type: ignore[attr-defined]
    try:
        yield
    finally:
        config.clear()
        config.update(saved)


def register(app: Celery, settings: Settings) -> None:
    made: dict[str, SendingParts] = {}

    def parts() -> SendingParts:
        if "parts" not in made:
            made["parts"] = SendingParts(settings)
        return made["parts"]

    dispatcher = CeleryDispatcher(app)

    @app.task(name=names.ANALYSE, shared=False)  # type: ignore[untyped-decorator]
    def analyse(unit: dict[str, Any]) -> dict[str, Any]:
        return units.analyse(unit)

    @app.task(name=names.RENDER_ARTICLES, shared=False)  # type: ignore[untyped-decorator]
    def render_articles(unit: dict[str, Any]) -> dict[str, Any]:
        return units.render_articles(unit)

    @app.task(name=names.SEND_BATCH, shared=False, ignore_result=True, bind=True)  # type: ignore[untyped-decorator]
    def send_batch(self: Task, batch_id: int) -> dict[str, Any]:
        # The worker's name (celery@host) goes with the lease, for operators to see.
        outcome = parts().send_batch(int(batch_id), str(self.request.hostname or ""))
        return {"batch": outcome.batch_id, "status": outcome.status, "sent": outcome.sent}

    @app.task(name=names.IMPORT_SUBSCRIBERS, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def import_subscribers(job_id: int) -> str | None:
        with _children_allowed():
            ended = importjobs.run(settings, int(job_id))
        return None if ended is None else str(ended)

    @app.task(name=names.START_DUE, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def due() -> list[int]:
        return parts().start_due(dispatcher)

    @app.task(name=names.TEND_REPLIES, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def tend_replies() -> dict[str, int]:
        tended = digest.tend(parts().engine, settings, parts().provider)
        return {"told": tended.told, "purged": tended.purged}

    @app.task(name=names.SWEEP, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def sweep() -> dict[str, list[int]]:
        found = parts().sweep(dispatcher, queue_empty=queue_empty(app, settings))
        return {"requeued": found.requeue, "ambiguous": found.ambiguous}
