"""The subscriber service as it runs in production: ``letterpress serve`` in its own
process (uvicorn), on a free loopback port, against a real database and Redis.

    with running_service(tmp_path, database_url, redis_url) as svc:
        requests.post(svc.url + "/api/subscribe", json={...})

Settings go in as a TOML file (``settings=``) and secrets through the environment, the
way an operator configures it. ``svc.settings`` is the same configuration, loaded here,
and ``svc.engine`` the same database, to check what the service recorded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from pipeline.audience.tokens import Signer
from pipeline.settings import Settings, load_settings
from pipeline.store import db

SECRET = "service-test-secret-key-0123456789"
ADMIN_TOKEN = "admin-test-token-0123456789abcdef"
MAILGUN_SIGNING_KEY = "mailgun-webhook-signing-key-for-tests"
POSTMARK_USER = "postmark-hooks"
POSTMARK_PASSWORD = "postmark-webhook-password-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningService:
    url: str
    settings: Settings
    engine: sa.Engine
    signer: Signer
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def output_once(self, text: str, timeout: float = 10.0) -> str:
        """The service's output, once ``text`` is in it (its log lines follow the answer)."""
        deadline = time.monotonic() + timeout
        while text not in (out := self.output()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the service's output:\n{out[-3000:]}")
            time.sleep(0.05)
        return out


@contextmanager
def running_service(
    tmp: Path,
    database_url: str,
    redis_url: str | None,
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    workers: int = 1,
) -> Iterator[RunningService]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    values: dict[str, Any] = {
        "base_url": url,
        "site_name": "Test Health",
        "postal_address": "1 Test Street, Testville",
        "outbox_dir": str(tmp / "outbox"),
        "redis_prefix": f"lp-svc-{port}",
    }
    values.update(settings or {})
    config = tmp / "service.toml"
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    secrets = {
        "LETTERPRESS_SECRET_KEY": SECRET,
        "LETTERPRESS_ADMIN_TOKEN": ADMIN_TOKEN,
        "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_SIGNING_KEY,
        "POSTMARK_WEBHOOK_USER": POSTMARK_USER,
        "POSTMARK_WEBHOOK_PASSWORD": POSTMARK_PASSWORD,
    }
    full_env = {
        **{k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        "DATABASE_URL": database_url,
        "LETTERPRESS_CONFIG": str(config),
        **secrets,
        **(env or {}),
    }
    if redis_url:
        full_env["REDIS_URL"] = redis_url
    db.upgrade(database_url)
    loaded = load_settings(
        config,
        database_url=database_url,
        redis_url=redis_url,
        secret_key=SECRET,
        admin_token=ADMIN_TOKEN,
        mailgun_webhook_signing_key=MAILGUN_SIGNING_KEY,
        postmark_webhook_user=POSTMARK_USER,
        postmark_webhook_password=POSTMARK_PASSWORD,
    )
    log = tmp / f"serve-{port}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=full_env,
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = RunningService(url, loaded, db.engine(database_url), Signer(SECRET), proc, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"letterpress serve exited:\n{running.output()}")
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"letterpress serve did not answer:\n{running.output()}")
            time.sleep(0.1)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def with_workers(
    tmp: Path,
    database_url: str,
    redis_url: str,
    double: Any,
    sending: dict[str, Any],
    settings: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[RunningService, Any]]:
    """``letterpress serve`` and a ``tests.cluster.Cluster`` for its workers and beat
    (started by the caller): one database, one Redis under the service's key prefix, one
    provider ``double`` and the same ``sending`` settings, and the workers sign the links
    the service checks. ``settings`` are the service's own besides."""
    from tests.cluster import Cluster

    with running_service(
        tmp, database_url, redis_url, settings={**sending, **(settings or {})}, env=env
    ) as svc:
        workers = tmp / "workers"
        workers.mkdir()
        cluster = Cluster(
            workers,
            database_url,
            redis_url,
            double,
            secret=SECRET,
            **sending,
            base_url=svc.url,
            redis_prefix=svc.settings.redis_prefix,
        )
        try:
            yield svc, cluster
        finally:
            cluster.close()
