"""The database a long-running process (the subscriber service) works on: opened once it
is known to be migrated, and checked alive for ``/healthz``."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.settings import Settings
from pipeline.store import db


def database(settings: Settings) -> Engine:
    """The engine of ``settings.database_url``; a ``ConfigError`` that says what to run
    when the database is not migrated."""
    return db.require_current(settings.database_url)


def check_database(engine: Engine) -> None:
    """A round trip to the database; raises when it cannot be reached."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
