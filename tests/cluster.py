"""A real sending cluster for the chaos tests and the benchmark: the loopback provider
double, Celery worker and beat processes, Redis and a SQL database, each a process of
its own, started, watched and torn down here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline.settings import Settings, load_settings
from pipeline.store import db

ROOT = Path(__file__).resolve().parent.parent
SENDGRID_KEY = "SG.test-key"
MAILGUN_KEY = "key-test"
POSTMARK_TOKEN = "pm-test-token"
SECRET = "test-secret-key-of-enough-length"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


class Double:
    """The provider double in a process of its own."""

    def __init__(self, log: Path, keep_messages: bool = False) -> None:
        args = [
            sys.executable,
            "-m",
            "letterpress_testing",
            "--port",
            "0",
            "--sendgrid-key",
            SENDGRID_KEY,
            "--mailgun-key",
            MAILGUN_KEY,
            "--postmark-token",
            POSTMARK_TOKEN,
        ]
        if keep_messages:
            args.append("--keep-messages")
        self.log = log.open("w")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise AssertionError(f"the provider double did not start: {line!r} {log.read_text()}")
        self.url = line.split("listening on", 1)[1].strip()

    def _call(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST" if data else "GET",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read() or b"null")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("/_double/stats")
        return result

    def recipients(self) -> dict[str, int]:
        result: dict[str, int] = self._call("/_double/recipients")
        return result

    def messages(self) -> dict[str, list[dict[str, Any]]]:
        """What each address received (``--keep-messages``): sender, subject, text, html."""
        result: dict[str, list[dict[str, Any]]] = self._call("/_double/messages")
        return result

    def faults(self, *faults: dict[str, Any], seed: int | None = None) -> None:
        """Replace the injected faults (none: behave); see ``letterpress_testing.faults.Fault``."""
        self._call("/_double/faults", {"faults": list(faults), "seed": seed})

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


class Cluster:
    """Settings written to one TOML file that every process reads, plus processes."""

    def __init__(
        self,
        tmp: Path,
        database_url: str,
        redis_url: str,
        double: Double,
        provider: str = "sendgrid",
        secret: str = SECRET,
        **settings: Any,
    ) -> None:
        self.tmp = tmp
        self.double = double
        prefix = f"lp{os.getpid()}x{time.monotonic_ns() % 10**9}"
        values: dict[str, Any] = {
            "base_url": "https://news.example.org",
            "postal_address": "1 Test Street, Testville",
            "sender_email": "newsletter@news.example.org",
            "content_dir": str(ROOT / "content"),
            "redis_prefix": prefix,
            "provider": provider,
            "sendgrid_base_url": double.url,
            "mailgun_domain": "mg.example.org",
            "mailgun_base_url": double.url,
            "postmark_base_url": double.url,
            "outbox_dir": str(tmp / "outbox"),
            "send_rate": 100000.0,
            "send_burst": 100000,
            "beat_seconds": 0.5,
            "sweep_seconds": 1.0,
            "retry_base_seconds": 0.05,
            "retry_max_seconds": 0.5,
            "retry_attempts": 10,
            "lease_seconds": 30,
            "http_timeout": 10.0,
        }
        values.update(settings)
        self.config = tmp / "cluster.toml"
        self.config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        secrets = {
            "LETTERPRESS_SECRET_KEY": secret,
            "SENDGRID_API_KEY": SENDGRID_KEY,
            "MAILGUN_API_KEY": MAILGUN_KEY,
            "POSTMARK_SERVER_TOKEN": POSTMARK_TOKEN,
        }
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "LETTERPRESS_CONFIG": str(self.config),
            **secrets,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.settings: Settings = load_settings(
            self.config,
            database_url=database_url,
            redis_url=redis_url,
            secret_key=secret,
            sendgrid_api_key=SENDGRID_KEY,
            mailgun_api_key=MAILGUN_KEY,
            postmark_server_token=POSTMARK_TOKEN,
        )
        self.engine = db.engine(database_url)

    def start(self, name: str, *args: str, new_session: bool = False) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workers", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
                start_new_session=new_session,
            )
        self.procs[name] = proc
        return proc

    def worker(self, name: str = "w1", concurrency: int = 2) -> subprocess.Popen[bytes]:
        return self.start(
            name,
            "worker",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "WARNING",
            "--hostname",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        )

    def beat(self, name: str = "beat") -> subprocess.Popen[bytes]:
        return self.start(name, "beat", "--loglevel", "WARNING")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.tmp.glob("*.log"))

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "workers", *args],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=self.tmp,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def issue_status(self, issue_id: int) -> str:
        with self.engine.connect() as conn:
            return str(conn.scalar(sa.select(db.issues.c.status).where(db.issues.c.id == issue_id)))

    def deliveries(self, issue_id: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                status: int(n)
                for status, n in conn.execute(
                    sa.select(db.deliveries.c.status, sa.func.count())
                    .where(db.deliveries.c.issue_id == issue_id)
                    .group_by(db.deliveries.c.status)
                )
            }


def seed_subscribers(url: str, count: int, list_name: str = "main", chunk: int = 50_000) -> None:
    """``count`` active, confirmed subscribers on one list, written in bulk."""
    engine = db.engine(url)
    at = datetime.now(UTC) - timedelta(hours=1)
    with engine.begin() as conn:
        list_id = conn.execute(
            sa.insert(db.lists).values(name=list_name, created_at=at).returning(db.lists.c.id)
        ).scalar_one()
        first = int(
            conn.scalar(sa.select(sa.func.coalesce(sa.func.max(db.subscribers.c.id), 0))) or 0
        )
    for start in range(0, count, chunk):
        ids = range(first + start + 1, first + min(start + chunk, count) + 1)
        with engine.begin() as conn:
            conn.execute(
                sa.insert(db.subscribers),
                [
                    {
                        "id": i,
                        "email": f"reader{i}@example.com",
                        "name": f"Reader {i}",
                        "status": "active",
                        "time_zone": "UTC",
                        "attributes": {},
                        "created_at": at,
                        "confirmed_at": at,
                        "updated_at": at,
                    }
                    for i in ids
                ],
            )
            conn.execute(
                sa.insert(db.memberships),
                [{"list_id": list_id, "subscriber_id": i, "created_at": at} for i in ids],
            )
    if engine.dialect.name == "postgresql":  # explicit ids leave the sequence behind
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('subscribers', 'id'), max(id)) FROM subscribers"
            )
