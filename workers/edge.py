"""The edge: where the Celery side is wired into the CLI and the service.

``letterpress`` (``main``) and the service's application factory
(``service_from_environment``, which uvicorn's worker processes import) hand
``pipeline`` an ``Edge`` whose ``connect`` makes a ``CeleryBroker``
(``workers.broker``). Nothing in ``pipeline`` imports this package; an import-linter
contract keeps it so. This module imports neither Celery nor the CLI's commands: the
``letterpress`` command starts in the time it takes to import click, and each command
imports what it uses when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.broker import Edge

if TYPE_CHECKING:
    from fastapi import FastAPI

    from pipeline.settings import Settings
    from workers.broker import CeleryBroker

SERVICE_APP = "workers.edge:service_from_environment"


def connect(settings: Settings) -> CeleryBroker:
    from workers.broker import CeleryBroker

    return CeleryBroker(settings)


EDGE = Edge(connect=connect, service_app=SERVICE_APP)


def main() -> None:
    """The ``letterpress`` command, with the Celery side wired in."""
    from pipeline.cli.main import main as cli

    cli(obj=EDGE, prog_name="letterpress")


def service_from_environment() -> FastAPI:
    """The subscriber service, with the Celery side wired in (for uvicorn's factory)."""
    from pipeline.web.app import app_from_environment

    return app_from_environment(edge=EDGE)
