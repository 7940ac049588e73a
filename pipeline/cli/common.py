"""What every ``letterpress`` command shares: the settings, read once, and errors
turned into a message and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from pipeline.broker import Edge
from pipeline.errors import ContentError, LetterpressError

if TYPE_CHECKING:
    from pipeline.broker import Broker
    from pipeline.settings import Settings

T = TypeVar("T")


class Context:
    """The settings file, and the edge the entry point wired in (``workers.edge``)."""

    def __init__(self, config: Path | None, edge: Edge | None = None) -> None:
        self.config = config
        self.edge = edge or Edge()
        self._settings: Settings | None = None
        self._broker: Broker | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            from pipeline.settings import load_settings  # pydantic: when a command needs it

            self._settings = load_settings(self.config)
        return self._settings

    def broker(self) -> Broker | None:
        """Celery when REDIS_URL is set (made once), else None: batches are sent inline."""
        if self._broker is None:
            self._broker = self.edge.broker(self.settings())
        return self._broker


pass_ctx = click.make_pass_decorator(Context)


def fail(exc: LetterpressError) -> None:
    if isinstance(exc, ContentError):
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s)", err=True)
    else:
        click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


def run_or_exit(fn: Callable[[], T]) -> T:
    """Run ``fn``; a LetterpressError becomes its message on stderr and its exit code."""
    try:
        return fn()
    except LetterpressError as exc:
        fail(exc)
        raise AssertionError("unreachable") from exc
