"""Tasks: JSON in, one ``pipeline`` call, JSON out. Nothing else lives here."""

from __future__ import annotations

from typing import Any

from celery import Celery

from pipeline import site


def register(app: Celery) -> None:
    @app.task(name="letterpress.site.analyse", shared=False)  # type: ignore[untyped-decorator]
    def analyse(unit: dict[str, Any]) -> dict[str, Any]:
        return site.analyse(unit)

    @app.task(name="letterpress.site.render_articles", shared=False)  # type: ignore[untyped-decorator]
    def render_articles(unit: dict[str, Any]) -> dict[str, Any]:
        return site.render_articles(unit)
