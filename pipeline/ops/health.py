"""Is this process fit to serve: the checks behind ``/healthz``, ``/readyz`` and
``letterpress doctor``.

``/healthz`` says the process is alive and answers (an orchestrator restarts it when it
does not); it checks nothing else, so an outage of the database does not restart every
service at once. ``/readyz`` says it can do its work: the database answers and is at the
newest migration, and, when ``REDIS_URL`` is set, Redis answers and Celery's broker
connection opens. A failing check makes ``/readyz`` answer 503 with every check in words.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.settings import Settings
from pipeline.store import db

if TYPE_CHECKING:
    from pipeline.broker import Broker


def database(settings: Settings) -> Engine:
    """The engine of ``settings.database_url``; a ``ConfigError`` that says what to run
    when the database is not migrated."""
    return db.require_current(settings.database_url)


def check_database(engine: Engine) -> None:
    """A round trip to the database; raises when it cannot be reached."""
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


@dataclass(frozen=True)
class Check:
    """One check: its name, whether it passed, and what was found, in words."""

    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


def _timed(name: str, probe: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail = probe()
        ok = True
    except Exception as exc:  # every failure is a finding, said in words
        detail, ok = _reason(exc), False
    return Check(name, ok, detail, time.perf_counter() - started)


def _reason(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    text = str(orig if orig is not None else exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _database(engine: Engine) -> str:
    check_database(engine)
    return f"{engine.dialect.name} answers"


def _migrations(engine: Engine) -> str:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    head = db.head_revision()
    if current != head:
        raise RuntimeError(
            f"at migration {current or 'none'}, not {head}: run `letterpress db upgrade`"
        )
    return f"at migration {head}, the newest"


def _redis(client: Any) -> str:
    client.ping()
    return "answers"


def readiness(
    settings: Settings, engine: Engine, redis_client: Any | None, broker: Broker | None
) -> list[Check]:
    """Every check ``/readyz`` makes, in order; a check that cannot be made because an
    earlier one failed says so."""
    checks = [_timed("database", lambda: _database(engine))]
    if checks[0].ok:
        checks.append(_timed("migrations", lambda: _migrations(engine)))
    else:
        checks.append(Check("migrations", False, "not checked: the database does not answer"))
    if redis_client is None or broker is None:
        none = "not configured (no REDIS_URL): sending runs in the service's own process"
        checks.append(Check("redis", True, none))
        checks.append(Check("broker", True, none))
        return checks
    checks.append(_timed("redis", lambda: _redis(redis_client)))
    checks.append(_timed("broker", lambda: broker.check(timeout=2.0)))
    return checks


def ready(checks: list[Check]) -> bool:
    return all(c.ok for c in checks)
