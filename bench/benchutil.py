"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import socket
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def clean_env() -> dict[str, str]:
    """The environment without REDIS_URL or LETTERPRESS_*: Letterpress's embedded defaults."""
    env = {
        k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("LETTERPRESS_")
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # let every tool use its .pyc files
    return env


def code_version() -> str:
    """The commit measured, and whether the working tree differs from it."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.rstrip("\n")  # keep the leading blank of porcelain lines

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [
        line[3:]
        for line in git("status", "--porcelain", "--", "pipeline", "templates").splitlines()
    ]
    if not changed:
        return f"letterpress at {head} (clean)"
    return f"letterpress at {head} + uncommitted changes in {', '.join(sorted(changed))}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def machine(postgres: str | None) -> str:
    """CPUs, Python, SQLite and, given a URL on the server, PostgreSQL's version (asked of
    the server's ``postgres`` database: the benchmark's own may not exist yet)."""
    parts = [f"{os.cpu_count()} CPUs", f"Python {sys.version.split()[0]}"]
    parts.append(f"SQLite {sqlite3.sqlite_version}")
    if postgres:
        import sqlalchemy as sa

        from pipeline.store import db

        server = sa.make_url(db.normalise_url(postgres)).set(database="postgres")
        probe = sa.create_engine(server, poolclass=sa.pool.NullPool)
        try:
            with probe.connect() as conn:
                parts.append(f"PostgreSQL {conn.scalar(sa.text('SHOW server_version'))}")
        except sa.exc.OperationalError as exc:
            sys.exit(f"PostgreSQL is not reachable at {postgres}: {exc.orig}")
        finally:
            probe.dispose()
    return ", ".join(parts)
