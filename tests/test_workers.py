"""A full build fanned out to a real Celery worker process on a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.settings import load_settings
from tests.cluster import SECRET
from workers import names
from workers.app import create_app
from workers.broker import CeleryBroker
from workers.edge import EDGE

pytestmark = pytest.mark.slow


@pytest.fixture
def broker_url(redis_url: str) -> Iterator[str]:
    url = redis_url.rsplit("/", 1)[0] + "/14"  # a database of its own
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def worker(broker_url: str, tmp_path: Path) -> Iterator[Path]:
    config = tmp_path / "worker.toml"
    config.write_text('base_url = "https://news.example.org"\npostal_address = "1 Test St"\n')
    # A worker runs send tasks too, so it starts only with what a send needs.
    env = {**os.environ, "REDIS_URL": broker_url, "LETTERPRESS_SECRET_KEY": SECRET}
    log = tmp_path / "worker.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers", "--config", str(config), "worker",
             "--concurrency", "2", "--loglevel", "INFO", "--hostname", "test-worker@%h"],
            env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    app = create_app(load_settings(config, redis_url=broker_url))
    deadline = time.monotonic() + 60
    while not CeleryBroker(load_settings(config), app).workers_online(timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the worker did not come up:\n" + log.read_text())
    try:
        yield config
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        app.close()


def test_build_fans_out_to_workers_and_matches_a_serial_build(
    worker: Path,
    broker_url: str,
    content_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()
    serial = runner.invoke(main, obj=EDGE, args=["--config", str(worker), "build", "--content", str(content_dir),
                                  "--out", str(tmp_path / "serial"), "--pool", "serial"])  # fmt: skip
    assert serial.exit_code == 0, serial.output
    monkeypatch.setenv("REDIS_URL", broker_url)
    fanned = runner.invoke(main, obj=EDGE, args=["--config", str(worker), "build", "--content", str(content_dir),
                                  "--out", str(tmp_path / "celery")])  # auto finds the worker  # fmt: skip
    assert fanned.exit_code == 0, fanned.output
    assert "(celery)" in fanned.output
    pages = sorted(
        p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial").rglob("*.html")
    )
    assert len(pages) >= 13
    for rel in pages:
        assert (tmp_path / "celery" / rel).read_bytes() == (
            tmp_path / "serial" / rel
        ).read_bytes(), rel

    app = create_app(load_settings(worker, redis_url=broker_url))
    stats = app.control.inspect(timeout=2).stats() or {}
    totals = next(iter(stats.values()))["total"]
    assert totals.get(names.ANALYSE, 0) >= 1
    assert totals.get(names.RENDER_ARTICLES, 0) >= 1
    app.close()
