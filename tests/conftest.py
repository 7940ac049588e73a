"""Shared fixtures: real Redis (a private database, flushed per test), settings that
ignore the developer's own letterpress.toml, and a copy of the content store."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
CONTENT = ROOT / "content"
SPECS = Path(__file__).resolve().parent / "specs"  # see specs/README.md
SEEDS = (
    "vitamin-k2-for-directing-calcium-to-bones",
    "the-role-of-vitamin-k2-in-calcium-distribution",
)


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("LETTERPRESS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is needed at {url} ({exc}): scripts/test starts one")
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings from defaults plus overrides, never from the working directory's file."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")

    def make(**overrides: Any) -> Settings:
        overrides.setdefault("postal_address", "1 Test Street, Testville")
        overrides.setdefault("base_url", "https://news.example.org")
        return load_settings(empty, **overrides)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    """A private copy of the repository's content store."""
    target = tmp_path / "content"
    shutil.copytree(CONTENT, target)
    return target


def write_article(folder: Path, slug: str, front: str, body: str = "Body text.\n") -> Path:
    """Write ``folder/slug.md`` with the given front matter lines (without the ---)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug}.md"
    path.write_text(f"---\n{front.strip()}\n---\n{body}", encoding="utf-8")
    return path


def front(title: str = "A title", **fields: str) -> str:
    lines = [f"title: {title}", "category: Testing", "status: published", "published: 2026-01-02"]
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return "\n".join(lines)


# The PostgreSQL server the tests make their databases on: a URL of any database there
# that the user can connect to and create databases from. Each run makes its own database
# and drops it afterwards; nothing else on the server is touched.
POSTGRES_SERVER = os.environ.get(
    "LETTERPRESS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@functools.cache
def _postgres_reachable() -> bool:
    import sqlalchemy as sa

    from pipeline.store import db

    probe = sa.create_engine(db.normalise_url(POSTGRES_SERVER), poolclass=sa.pool.NullPool)
    try:
        with probe.connect():
            return True
    except Exception:
        return False
    finally:
        probe.dispose()


def require_postgres() -> None:
    """Skip without PostgreSQL, except in CI (CI=true), where its absence is a failure."""
    if _postgres_reachable():
        return
    why = f"PostgreSQL is not reachable at {POSTGRES_SERVER} (scripts/services starts one)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(why)
    pytest.skip(why)


@contextlib.contextmanager
def postgres_database(tag: str) -> Iterator[str]:
    """A PostgreSQL database of its own on the test server, dropped afterwards."""
    import sqlalchemy as sa

    from pipeline.store import db

    require_postgres()
    server = sa.make_url(db.normalise_url(POSTGRES_SERVER))
    name = f"letterpress_test_{tag}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:  # FORCE ends the connections still open on it (the services' pools)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """This run's own PostgreSQL database (its schema is reset per test that uses it)."""
    with postgres_database("run") as url:
        yield url


def reset_postgres(url: str) -> None:
    from pipeline.store import db

    with db.engine(url).begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A freshly migrated database: a SQLite file, then this run's PostgreSQL database."""
    from pipeline.store import db

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'letterpress.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        reset_postgres(url)
    db.upgrade(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A freshly migrated SQLite database, for tests about something else."""
    from pipeline.store import db

    url = f"sqlite:///{tmp_path / 'letterpress.db'}"
    db.upgrade(url)
    return url
