"""The work queue, as the domain sees it: an interface that ``workers/`` implements.

``pipeline`` never imports ``workers``. The Celery side (``workers/edge.py``) implements
``Broker``, and the edge — the ``letterpress`` entry point and the service's application
factory, both in ``workers/edge.py`` — hands the CLI and the service an ``Edge`` that
says how to connect to it. ``dispatcher_for`` is the one place that chooses where
batches go: to the workers through the broker when ``REDIS_URL`` is set, or sent in the
process that made them (the embedded default) when it is not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.sending.batches import Dispatcher, Outcome
    from pipeline.sending.parts import SendingParts
    from pipeline.settings import Settings
    from pipeline.site.pool import Pool


class Broker(Protocol):
    """Celery on Redis, seen from the domain."""

    def dispatcher(self) -> Dispatcher:
        """Puts batches on the work queue for the workers."""
        ...

    def start_due_now(self) -> None:
        """Asks the workers to start the due issues now, not at the next beat."""
        ...

    def sweep_now(self) -> None:
        """Asks the workers to sweep stalled and lost batches now."""
        ...

    def workers_online(self, timeout: float = 1.0) -> list[str] | None:
        """The workers that answer a ping; None when the broker cannot be reached."""
        ...

    def workers(self, timeout: float = 1.0) -> list[WorkerInfo] | None:
        """What each worker that answers runs; None when the broker cannot be reached."""
        ...

    def check(self, timeout: float) -> str:
        """Opens a connection to the broker; raises when it cannot. Says what answered."""
        ...

    def import_now(self, job_id: int) -> None:
        """Asks a worker to run a console import (``pipeline.audience.importjobs.run``)."""
        ...

    def build_pool(self) -> Pool | None:
        """A build pool that runs units of work as tasks; None when no worker answers."""
        ...

    def run_worker(self, args: Sequence[str]) -> None: ...

    def run_beat(self, args: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as it answers Celery's inspect: its node name, how many tasks it runs at
    once, the queues it takes from, what it runs now and how many it has run."""

    name: str
    concurrency: int
    queues: tuple[str, ...]
    running: tuple[str, ...]  # e.g. "send batch 12" for each task it runs now
    processed: int


Connect = Callable[["Settings"], "Broker"]
SERVICE_APP = "pipeline.web.app:app_from_environment"


@dataclass(frozen=True)
class Edge:
    """What the entry point wires in: how to reach the broker, and the service's
    application factory (a ``module:function`` string, as uvicorn's workers import it)."""

    connect: Connect | None = None
    service_app: str = SERVICE_APP

    def broker(self, settings: Settings) -> Broker | None:
        """The broker when ``REDIS_URL`` is set; None without it."""
        if not settings.redis_url:
            return None
        if self.connect is None:
            raise ConfigError(
                "REDIS_URL is set, but this process was started without the Celery side:"
                " run the `letterpress` command (workers.edge:main), not pipeline's CLI alone"
            )
        return self.connect(settings)


def dispatcher_for(
    parts: SendingParts,
    broker: Broker | None,
    progress: Callable[[Outcome], None] | None = None,
) -> Dispatcher:
    """Where batches go: the workers' queue, or this process when there is no broker."""
    if broker is not None:
        return broker.dispatcher()
    from pipeline.sending.batches import InlineDispatcher

    # SendingParts.send_batch, not the bare sender: settings that cannot send pause the
    # issue with the reason, as they do on a worker.
    return InlineDispatcher(parts, progress)
