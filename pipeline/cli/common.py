"""What every ``letterpress`` command shares: the settings, read once, and errors
turned into a message and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from pipeline.errors import ContentError, LetterpressError
from pipeline.settings import Settings, load_settings

T = TypeVar("T")


class Context:
    def __init__(self, config: Path | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings


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
