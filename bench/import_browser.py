"""A 1,000,000-row CSV import through the console (HTTP upload, then a Celery worker)
against ``letterpress subscribers import`` on the same file, in the same run, on SQLite
and on PostgreSQL.

Target: the console's import takes no longer than the CLI's plus 10% (medians).

The file is ``import_subscribers.py``'s (``generate``: 1,000,000 rows, planted bad
rows, UTF-8 with a BOM and CRLF). Each round, on a fresh migrated database:

- CLI: ``python -m workers subscribers import FILE`` in a process of its own, timed
  from its start to its exit (interpreter start-up, the UTF-8 check and the parallel
  validation included);
- console: ``letterpress serve`` and one worker (``--concurrency 1``) are already
  running with Redis, and an operator is signed in; timed from the start of the
  multipart POST of the file to ``/admin/imports`` until the job's progress fragment,
  asked for every ``POLL_S`` as the page's htmx does every second, says done. That
  covers what a browser waits for: the upload, the checks and copy under ``data_dir``,
  the task's trip through Redis, the worker's import with its progress writes, the
  bad-rows report, and the poll that shows it.

The two alternate within a round (CLI first in odd rounds, console first in even ones)
so that a shared machine's load falls on both alike. Each import must report exactly
the planted bad rows and leave the same subscribers.

    .venv/bin/python bench/import_browser.py --redis redis://127.0.0.1:6379/12
        [-n 1000000] [--rounds 3] [--seed 7] [--postgres URL] [--no-postgres] [--no-sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from benchutil import clean_env, code_version, free_port, machine, median
from import_subscribers import POSTGRES, fresh_database, generate

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work" / "import-browser"
TARGET = 1.10  # the console's median at most 10% over the CLI's
POLL_S = 1.0
SECRET = "bench-secret-key-of-a-good-length-0123456789"
PASSWORD = "bench operator password"
TOKEN = re.compile(r'name="csrf" value="([^"]*)"')


def env_for(url: str, config: Path, redis: str | None) -> dict[str, str]:
    env = {**clean_env(), "DATABASE_URL": url, "LETTERPRESS_CONFIG": str(config)}
    env["LETTERPRESS_SECRET_KEY"] = SECRET
    if redis:
        env["REDIS_URL"] = redis
    return env


def letterpress(*args: str, env: dict[str, str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "workers", *args], env=env, cwd=WORK, **kwargs)


def fresh(url: str) -> None:
    """An empty, migrated database (this process's pool let go of the old one first)."""
    from pipeline.store import db

    db.engine(url).dispose()
    fresh_database(url)
    db.engine(url).dispose()
    db.upgrade(url)


def cli_import(url: str, path: Path, config: Path) -> dict[str, Any]:
    fresh(url)
    started = time.perf_counter()
    proc = letterpress(
        "subscribers",
        "import",
        str(path),
        env=env_for(url, config, None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1) or not out.decode().startswith("imported "):
        sys.exit(f"the CLI import failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    lines = {int(m.group(1)) for m in re.finditer(rf"{re.escape(str(path))}:(\d+):", err.decode())}
    return {"seconds": seconds, "summary": out.decode().strip(), "bad": lines}


class Console:
    """The service and one worker on a fresh database, and an operator signed in."""

    def __init__(self, url: str, redis: str, name: str) -> None:
        from pipeline.people import users
        from pipeline.statuses import Role
        from pipeline.store import db

        fresh(url)
        self.engine = db.engine(url)
        users.add(self.engine, "opal@example.com", Role.OPERATOR, PASSWORD)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.config = WORK / f"console-{port}.toml"
        values = {
            "base_url": self.base,
            "postal_address": "1 Bench Street",
            "data_dir": str(WORK / "data"),
            "redis_prefix": f"lp-bench-import-{os.getpid()}-{name}",
            "serve_workers": 1,
        }
        self.config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        env = env_for(url, self.config, redis)
        self.logs = [(WORK / f"{name}-{port}.log").open("wb") for name in ("serve", "worker")]
        self.serve = letterpress(
            "serve", "--port", str(port), env=env, stdout=self.logs[0], stderr=subprocess.STDOUT
        )
        self.worker = letterpress(
            "worker",
            "--concurrency",
            "1",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            env=env,
            stdout=self.logs[1],
            stderr=subprocess.STDOUT,
        )
        self.http = requests.Session()
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.http.get(self.base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or self.serve.poll() is not None:
                self.close()
                sys.exit("letterpress serve did not start")
            time.sleep(0.2)
        page = self.http.get(self.base + "/admin/sign-in", timeout=10)
        self.post("/admin/sign-in", self.token(page.text), email="opal@example.com",
                  password=PASSWORD)  # fmt: skip
        time.sleep(2)  # the worker connects to Redis

    def token(self, html: str) -> str:
        found = TOKEN.search(html)
        assert found, html[:500]
        return found.group(1)

    def post(self, path: str, token: str, **data: str) -> requests.Response:
        answer = self.http.post(
            self.base + path,
            data={"csrf": token, **data},
            headers={"Origin": self.base},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 303, answer.text[:500]
        return answer

    def import_file(self, path: Path) -> dict[str, Any]:
        from pipeline.audience import importjobs

        token = self.token(self.http.get(self.base + "/admin/imports", timeout=10).text)
        started = time.perf_counter()
        with path.open("rb") as handle:
            answer = self.http.post(
                self.base + "/admin/imports",
                data={"csrf": token},
                files={"file": (path.name, handle, "text/csv")},
                headers={"Origin": self.base},
                allow_redirects=False,
                timeout=600,
            )
        uploaded = time.perf_counter() - started
        assert answer.status_code == 303, answer.text[:2000]
        job_url = self.base + answer.headers["location"]
        while True:
            fragment = self.http.get(job_url + "/progress", timeout=30).text
            if 'data-status="done"' in fragment:
                break
            if re.search(r'data-status="(failed|stopped|interrupted)"', fragment):
                sys.exit(f"the console's import did not finish:\n{fragment}")
            time.sleep(POLL_S)
        seconds = time.perf_counter() - started
        job = importjobs.get(self.engine, int(answer.headers["location"].rsplit("/", 1)[1]))
        assert job.started_at is not None and job.finished_at is not None
        from pipeline.settings import load_settings

        settings = load_settings(self.config)
        bad = {row.line for row in importjobs.bad_rows(settings, job.id, 1000)}
        importjobs.file_of(settings, job.id).unlink()  # 1,000,000 rows: ~80 MB a round
        importjobs.report_of(settings, job.id).unlink()
        return {
            "seconds": seconds,
            "upload": uploaded,
            "worker": (job.finished_at - job.started_at).total_seconds(),
            "summary": job.summary,
            "bad": bad,
        }

    def close(self) -> None:
        for proc in (self.worker, self.serve):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


def console_import(url: str, redis: str, path: Path, name: str) -> dict[str, Any]:
    console = Console(url, redis, name)
    try:
        return console.import_file(path)
    finally:
        console.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A CSV import: the console against the CLI.")
    parser.add_argument("--redis", required=True, help="a Redis database of its own")
    parser.add_argument("-n", type=int, default=1_000_000, help="rows in the file (1000000)")
    parser.add_argument("--rounds", type=int, default=3, help="imports of each kind (3)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres", default=POSTGRES, help=f"a database of its own ({POSTGRES})")
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite only")
    parser.add_argument("--no-sqlite", action="store_true", help="measure PostgreSQL only")
    args = parser.parse_args(argv)

    WORK.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    postgres = None if args.no_postgres else args.postgres
    path = WORK / f"subscribers-{args.n}-{args.seed}.csv"
    expected = generate(path, args.n, args.seed)
    planted = {int(k) for k in expected["bad_lines"]}
    config = WORK / "cli.toml"
    config.write_text(f'data_dir = "{WORK / "data"}"\n')
    print(
        f"file: {args.n:,} rows, {expected['size'] / 1e6:.1f} MB, {len(planted)} planted bad rows"
    )
    print(f"measured: {code_version()}; {machine(postgres)}")
    print(
        f"rounds: {args.rounds} of each, alternating; console = upload + worker + the poll"
        f" (every {POLL_S:g} s) that shows it done"
    )
    print(f"load before: {os.getloadavg()[0]:.1f} (1-minute average, {os.cpu_count()} CPUs)")
    print()

    verdicts = []
    targets = [] if args.no_sqlite else [("SQLite", f"sqlite:///{WORK / 'bench.db'}")]
    targets += [("PostgreSQL", postgres)] if postgres else []
    for label, url in targets:
        print(f"{label}:")
        cli_runs: list[dict[str, Any]] = []
        console_runs: list[dict[str, Any]] = []
        for number in range(1, args.rounds + 1):
            load = os.getloadavg()[0]
            order = ("cli", "console") if number % 2 else ("console", "cli")
            for kind in order:
                if kind == "cli":
                    cli_runs.append(cli_import(url, path, config))
                else:
                    console_runs.append(console_import(url, args.redis, path, f"{label}-{number}"))
            c, b = cli_runs[-1], console_runs[-1]
            print(
                f"  round {number} ({' then '.join(order)}; load {load:.1f}->"
                f"{os.getloadavg()[0]:.1f}): CLI {c['seconds']:.1f} s; console {b['seconds']:.1f} s"
                f" (upload {b['upload']:.1f} s, worker {b['worker']:.1f} s)"
            )
        cli_s = median([r["seconds"] for r in cli_runs])
        console_s = median([r["seconds"] for r in console_runs])
        ratio = console_s / cli_s
        print(f"  median: CLI {cli_s:.1f} s, console {console_s:.1f} s: {ratio:.2f} x the CLI")
        print(f"  CLI:     {cli_runs[-1]['summary']}")
        print(f"  console: {console_runs[-1]['summary']}")
        runs = cli_runs + console_runs
        checks = [
            ("bad rows are the planted ones", all(r["bad"] == planted for r in runs)),
            ("the same summary", len({r["summary"] for r in runs}) == 1),
        ]
        for what, ok in checks:
            print(f"  check: {what}: {'yes' if ok else 'NO'}")
        verdicts.append((label, ratio, cli_s, console_s, all(ok for _, ok in checks)))
        print()

    for label, ratio, cli_s, console_s, ok in verdicts:
        verdict = "MET" if ratio <= TARGET and ok else "NOT MET"
        print(
            f"target: the console's import within {TARGET:.2f} x the CLI's on {label}: {verdict}"
            f" ({console_s:.1f} s against {cli_s:.1f} s = {ratio:.2f} x"
            f"{'' if ok else ', checks failed'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
