"""Ways to run independent units of build work: in this process, in local processes,
or (wired by the CLI from ``workers/``) as Celery tasks. Units take and return JSON."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol

from pipeline.site import units
from pipeline.site.units import Unit

Work = Callable[[Unit], Unit]


class Pool(Protocol):
    name: str

    def run(self, work: str, units: list[Unit]) -> list[Unit]:
        """Run ``pipeline.site.units`` work function ``work`` on each unit; results in order."""
        ...


WORK = ("analyse", "render_articles")


def _resolve(work: str) -> Work:
    if work not in WORK:
        raise ValueError(f"unknown unit of work {work!r}: one of {', '.join(WORK)}")

    fn: Work = getattr(units, work)
    return fn


def _call(work: str, unit: Unit) -> Unit:
    return _resolve(work)(unit)


class SerialPool:
    name = "serial"

    def run(self, work: str, units: list[Unit]) -> list[Unit]:
        fn = _resolve(work)
        return [fn(u) for u in units]


class ProcessPool:
    """Local processes; worth it only for large builds (start-up costs ~0.1 s)."""

    name = "processes"

    def __init__(self, processes: int) -> None:
        self.processes = processes

    def run(self, work: str, units: list[Unit]) -> list[Unit]:
        if len(units) <= 1:
            return SerialPool().run(work, units)
        with ProcessPoolExecutor(max_workers=self.processes) as executor:
            return list(executor.map(_call, [work] * len(units), units))
