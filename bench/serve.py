"""The subscriber service under load: the click redirect and the one-click unsubscribe.

Target: each sustains at least 2,000 requests per second on this 2-core machine with a
p99 latency under 50 ms, and what it records is really persisted (one ``clicks`` row
per redirect, one ``unsubscribed`` subscriber per unsubscribe).

    .venv/bin/python bench/serve.py [--database sqlite|postgresql] [--subscribers 200000]
        [--rounds 3] [--duration 10] [--connections 32] [--threads 2] [--workers 2]
    .venv/bin/python bench/serve.py --profile click|unsubscribe|healthz [--database ...]

Per database (SQLite, then PostgreSQL unless ``--database`` picks one): a fresh,
migrated database with N active subscribers on one list and one issue already sent to
all of them (its snapshot with tracked links, ``issue_links``, a ``sent`` delivery per
subscriber dated two days ago, so every click counts as engaged). Signed tokens are
computed here and written to files, distinct ones per round: clicks over (subscriber,
link) pairs, unsubscribes one per subscriber, so that every unsubscribe changes a row.
A generated wrk Lua script reads a file in each wrk thread (every thread its own
slice) and sends ``GET /r/<token>/<n>`` or ``POST /unsubscribe/<token>`` with
``List-Unsubscribe=One-Click``, as a desktop browser.

``letterpress serve --workers 2 --no-access-log`` runs as a subprocess on a free port,
with Redis (database 11) for the hot-articles counts unless ``--no-redis``. After a
short warm-up, every round runs wrk on ``GET /healthz`` (the baseline: the same
framework, a ``SELECT 1``), then on the click redirect, then on the unsubscribe. After
each run the database is read once it has settled: new ``clicks`` rows against the
redirects wrk completed, new ``unsubscribed`` subscribers against the distinct
unsubscribes it completed. wrk stops with requests still in flight, which the server
may finish and record: those are counted as sent (``made``) and reported apart.

The report: per endpoint and database, the medians of requests per second, p50 and
p99 (wrk's ``--latency`` figures), the ratio to ``/healthz`` within each round (the
machine is shared: the ratio is the steadier figure), the CPU per request of the
server processes (per run also of wrk and of the PostgreSQL server, and the
PostgreSQL sessions opened), rows persisted against requests, and MET / NOT MET.

``--profile ENDPOINT`` instead runs one worker under cProfile (every thread, CPU time)
while wrk loads that endpoint, and prints where the CPU goes, by layer and function.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchutil import clean_env, code_version, free_port, machine, median

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from pipeline.audience import tracking  # noqa: E402
from pipeline.audience.tokens import Signer  # noqa: E402
from pipeline.sending.batches import VARIANT, WEB_VARIANT  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.store import db  # noqa: E402
from pipeline.store.keys import Keys  # noqa: E402

WORK = BENCH / ".work" / "serve"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/letterpress_serve_bench"
REDIS = "redis://127.0.0.1:6379/11"
SECRET = "serve-bench-secret-key-not-for-production"
TARGET_RPS = 2000
TARGET_P99_MS = 50.0
# Token files hold enough for this many requests per second per round; a faster run
# reuses its tokens (the report says so), which for unsubscribes writes nothing new.
TOKEN_RPS = 6000
BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0.0.0 Safari/537.36"
)
ENDPOINTS = ("healthz", "click", "unsubscribe")

# The issue's email: article links (their clicks rank hot articles, in Redis), outside
# links, an affiliate link, and what the tracker leaves alone (mailto:, merge fields).
EMAIL = """<html><body>
<p><a href="{base}/articles/vitamin-k2-for-directing-calcium-to-bones/">Vitamin K2</a></p>
<p><a href="{base}/articles/the-role-of-vitamin-k2-in-calcium-distribution/">Calcium</a></p>
<p><a href="{base}/articles/sleep-after-fifty/">Sleep</a></p>
<p><a href="https://pubmed.ncbi.nlm.nih.gov/12345678/">A study</a></p>
<p><a href="https://www.amazon.com/dp/B000000000?tag=letterpress-20">A book</a></p>
<p><a href="https://www.example.org/guide?utm_source=newsletter&amp;utm_medium=email">Guide</a></p>
<p><a href="mailto:editor@example.org">Write to us</a></p>
<p><a href="%%unsubscribe_url%%">Unsubscribe</a></p>
</body></html>"""

LUA = r"""-- Written by bench/serve.py: one request per line of a token file.
-- wrk ... -s serve.lua URL -- <file> <GET|POST> <threads>
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

made, wraps, distinct = 0, 0, 0
local paths, at = {}, 0
local method, headers, body

function init(args)
  local every = tonumber(args[3])
  method = args[2]
  local k = 0
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    if k % every == id then
      paths[#paths + 1] = line
    end
    k = k + 1
  end
  file:close()
  assert(#paths > 0, "no lines for wrk thread " .. id .. " in " .. args[1])
  headers = {
    ["User-Agent"] = "%(agent)s",
    ["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ["Accept-Language"] = "en-US,en;q=0.9",
  }
  if method == "POST" then
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    body = "List-Unsubscribe=One-Click"
  end
end

function request()
  at = at + 1
  if at > #paths then
    at, wraps = 1, wraps + 1
  end
  made = made + 1
  if made <= #paths then distinct = made end
  return wrk.format(method, paths[at], headers, body)
end

function done(summary, latency, requests)
  local m, w, d = 0, 0, 0
  for _, thread in ipairs(threads) do
    m = m + thread:get("made")
    w = w + thread:get("wraps")
    d = d + thread:get("distinct")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH {\"requests\": %d, \"duration_us\": %d, \"made\": %d, \"wraps\": %d,"
    .. " \"distinct\": %d, \"status_errors\": %d, \"connect\": %d, \"read\": %d,"
    .. " \"write\": %d, \"timeout\": %d, \"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d,"
    .. " \"p999_us\": %d, \"max_us\": %d}\n",
    summary.requests, summary.duration, m, w, d, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""


# -- the database ---------------------------------------------------------------------------


def fresh_database(kind: str, run_dir: Path, postgres: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{run_dir / 'serve.db'}"
    url = sa.make_url(db.normalise_url(postgres))
    admin = sa.create_engine(
        url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    with admin.connect() as conn:  # a database of its own: the tests reset theirs
        if not conn.scalar(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}
        ):
            conn.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
    admin.dispose()
    with db.engine(postgres).begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    return postgres


def seed(url: str, config: Path, count: int) -> tuple[int, list[int], list[tracking.Link]]:
    """N active subscribers on one list and one issue sent to all of them two days ago.

    Returns the issue id, the subscriber ids and the issue's tracked links."""
    db.upgrade(url)
    engine = db.engine(url)
    settings = load_settings(config, secret_key=SECRET, database_url=url)
    long_ago = db.now() - timedelta(days=400)
    sent_at = db.now() - timedelta(days=2)
    s = db.subscribers.c
    with engine.begin() as conn:
        list_id = conn.execute(
            sa.insert(db.lists)
            .values(name="newsletter", created_at=long_ago)
            .returning(db.lists.c.id)
        ).scalar_one()
    chunk = 20_000
    for start in range(0, count, chunk):
        rows = [
            {
                "email": f"reader{i}@example.com",
                "name": f"Reader {i}",
                "status": "active",
                "time_zone": "UTC",
                "attributes": {},
                "created_at": long_ago,
                "confirmed_at": long_ago,
                "updated_at": long_ago,
                "status_changed_at": long_ago,
            }
            for i in range(start, min(start + chunk, count))
        ]
        with engine.begin() as conn:
            conn.execute(sa.insert(db.subscribers), rows)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(db.memberships).from_select(
                ["list_id", "subscriber_id", "created_at"],
                sa.select(sa.literal(list_id, db.ID), s.id, sa.literal(long_ago, db.UTCDateTime())),
            )
        )
        ids = list(conn.scalars(sa.select(s.id).order_by(s.id)))
        issue_id = conn.execute(
            sa.insert(db.issues)
            .values(
                subject="Vitamin K2 and your bones",
                audience=["newsletter"],
                status="sent",
                created_at=sent_at - timedelta(hours=1),
                updated_at=sent_at,
                started_at=sent_at,
                prepared_at=sent_at,
                finished_at=sent_at,
                recipients=count,
                sent=count,
            )
            .returning(db.issues.c.id)
        ).scalar_one()
        email = EMAIL.format(base=settings.base_url)
        html, links = tracking.track_links(email, settings)
        snapshot = {
            "issue_id": issue_id,
            "subject": "Vitamin K2 and your bones",
            "preheader": "",
            "text": "Vitamin K2 and your bones",
            "campaign": f"issue-{issue_id}",
            "created_at": sent_at,
        }
        conn.execute(
            sa.insert(db.snapshots),
            [
                {**snapshot, "variant": VARIANT, "html": html},
                {**snapshot, "variant": WEB_VARIANT, "html": tracking.web_variant(email, settings)},
            ],
        )
        tracking.save_links(conn, issue_id, links)
        size = 1000
        conn.execute(
            sa.insert(db.batches),
            [
                {
                    "issue_id": issue_id,
                    "seq": k + 1,
                    "first_id": ids[k * size],
                    "last_id": ids[min((k + 1) * size, len(ids)) - 1],
                    "status": "sent",
                    "attempts": 1,
                    "updated_at": sent_at,
                }
                for k in range((len(ids) + size - 1) // size)
            ],
        )
        b = db.batches.c
        conn.execute(
            sa.insert(db.deliveries).from_select(
                ["issue_id", "subscriber_id", "batch_id", "status", "updated_at"],
                sa.select(
                    sa.literal(issue_id, db.ID),
                    s.id,
                    b.id,
                    sa.literal("sent"),
                    sa.literal(sent_at, db.UTCDateTime()),
                ).join(
                    db.batches,
                    sa.and_(b.issue_id == issue_id, s.id >= b.first_id, s.id <= b.last_id),
                ),
            )
        )
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return issue_id, ids, links


@dataclass
class Counts:
    clicks: int
    engaged: int
    unsubscribed: int
    events: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.clicks - other.clicks,
            self.engaged - other.engaged,
            self.unsubscribed - other.unsubscribed,
            self.events - other.events,
        )


def counts(url: str) -> Counts:
    c, s, e = db.clicks.c, db.subscribers.c, db.subscriber_events.c
    with db.engine(url).connect() as conn:
        row = conn.execute(
            sa.select(
                sa.select(sa.func.count()).select_from(db.clicks).scalar_subquery(),
                sa.select(sa.func.count()).where(c.engaged).scalar_subquery(),
                sa.select(sa.func.count()).where(s.status == "unsubscribed").scalar_subquery(),
                sa.select(sa.func.count()).where(e.kind == "unsubscribed").scalar_subquery(),
            )
        ).one()
    return Counts(*(int(v) for v in row))


def settled(url: str, quiet: float = 0.6, limit: float = 30.0) -> Counts:
    """The counts once nothing has changed for ``quiet`` seconds (requests in flight when
    wrk stopped may still be committing)."""
    deadline = time.monotonic() + limit
    last = counts(url)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = counts(url)
        if now == last:
            return now
        last = now
    return last


# -- tokens and the wrk script ----------------------------------------------------------------


def token_files(
    run_dir: Path,
    issue_id: int,
    ids: list[int],
    links: list[tracking.Link],
    rounds: int,
    duration: float,
    rng: random.Random,
) -> dict[str, list[Path]]:
    """Per round, a file of click paths and one of unsubscribe paths, none shared."""
    signer = Signer(SECRET)
    per_round = int(duration * TOKEN_RPS)
    pairs = len(ids) * len(links)
    click_n = min(per_round, pairs // (rounds + 1))
    unsub_n = min(per_round, len(ids) // rounds)
    chosen = rng.sample(range(pairs), click_n * (rounds + 1))  # + the warm-up's
    people = rng.sample(ids, unsub_n * rounds)
    files: dict[str, list[Path]] = {"click": [], "unsubscribe": []}
    for r in range(rounds + 1):
        path = run_dir / f"click-{r}.txt"
        with path.open("w") as out:
            for k in chosen[r * click_n : (r + 1) * click_n]:
                sid, n = ids[k // len(links)], links[k % len(links)].position
                out.write(f"/r/{signer.sign('click', sid, issue_id)}/{n}\n")
        files["click"].append(path)
    for r in range(rounds):
        path = run_dir / f"unsubscribe-{r}.txt"
        with path.open("w") as out:
            for sid in people[r * unsub_n : (r + 1) * unsub_n]:
                out.write(f"/unsubscribe/{signer.sign('unsubscribe', sid, 0)}\n")
        files["unsubscribe"].append(path)
    health = run_dir / "healthz.txt"
    health.write_text("/healthz\n" * 1000)  # every wrk thread needs lines of its own
    files["healthz"] = [health] * (rounds + 1)
    return files


# -- the server -----------------------------------------------------------------------------


class Server:
    """``letterpress serve`` in a process group of its own."""

    def __init__(
        self, run_dir: Path, env: dict[str, str], workers: int, profile: Path | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = run_dir / "serve.log"
        self.log = self.log_path.open("w")
        script = Path(sys.executable).with_name("letterpress")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "workers"]
        command += ["serve", "--port", str(self.port), "--workers", str(workers)]
        command.append("--no-access-log")
        if profile is not None:  # one worker, in this script, under cProfile
            here = str(Path(__file__).resolve())
            command = [sys.executable, here, "--profiled-server", str(self.port), str(profile)]
        self.proc = subprocess.Popen(
            command,
            cwd=run_dir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"letterpress serve exited:\n{self.log_path.read_text()}")
            started = self.log_path.read_text().count("Application startup complete")
            if started >= workers and self._healthy():
                return
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"letterpress serve did not start:\n{self.logs()}")
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def logs(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def close(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.extend(descendants(int(child)))
    return found


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each of these processes."""
    result = {}
    for pid in pids:
        try:
            fields = _stat(pid)
        except OSError:
            continue
        result[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return result


class Postgres:
    """The PostgreSQL server's CPU and the sessions opened to the bench database.

    A backend that exits takes its CPU time with it, into its parent's: the server's
    CPU is the postmaster's own, its children's that have exited (connections the
    service's pool closed) and the live children's. The server may serve others on this
    shared machine too; the sessions count is this database's only."""

    def __init__(self, url: str) -> None:
        self.url = url
        with db.engine(url).connect() as conn:
            backend = int(conn.scalar(sa.text("SELECT pg_backend_pid()")))
        self.postmaster = int(_stat(backend)[1])

    def cpu(self) -> float:
        fields = _stat(self.postmaster)
        own = sum(int(v) for v in fields[11:15]) / TICK  # utime, stime, cutime, cstime
        return own + sum(cpu_of(descendants(self.postmaster)[1:]).values())

    def sessions(self) -> int:
        with db.engine(self.url).connect() as conn:
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            return int(
                conn.scalar(
                    sa.text(
                        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
                    )
                )
            )


# -- wrk ------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, the --latency percentiles, non-2xx/3xx and socket errors from wrk's
    text, plus the exact counts the Lua ``done`` wrote."""
    found: dict[str, Any] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{output}")
    found["rps"] = float(rps.group(1))
    for q in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{q}%\s+(\S+)", output, re.MULTILINE)
        found[f"p{q}_ms"] = _ms(match.group(1)) if match else float("nan")
    total = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    found["total"] = int(total.group(1)) if total else 0
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    found["non_2xx_3xx"] = int(non.group(1)) if non else 0
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    found["socket_errors"] = sum(int(v) for v in sock.groups()) if sock else 0
    exact = re.search(r"^BENCH (\{.*\})$", output, re.MULTILINE)
    found["lua"] = json.loads(exact.group(1)) if exact else {}
    return found


@dataclass
class Run:
    endpoint: str
    round: int
    wrk: dict[str, Any]
    delta: Counts
    server_cpu: float
    db_cpu: float | None
    db_sessions: int | None
    wrk_cpu: float
    load: tuple[float, float]

    @property
    def rps(self) -> float:
        return float(self.wrk["rps"])

    @property
    def good(self) -> int:
        """Completed requests answered with 2xx or 3xx."""
        return int(self.wrk["total"]) - int(self.wrk["non_2xx_3xx"])

    @property
    def made(self) -> int:
        return int(self.wrk["lua"].get("made", self.wrk["total"]))

    @property
    def persisted(self) -> int:
        return self.delta.clicks if self.endpoint == "click" else self.delta.unsubscribed

    @property
    def expected(self) -> tuple[int, int]:
        """The rows there must be: at least one per completed good request, at most one
        per request sent (distinct ones, for unsubscribes)."""
        if self.endpoint == "unsubscribe":
            distinct = int(self.wrk["lua"].get("distinct", self.made))
            return (self.good if not self.wrk["lua"].get("wraps") else 0), distinct
        return self.good, self.made

    @property
    def persistence_ok(self) -> bool:
        if self.endpoint == "healthz":
            return True
        low, high = self.expected
        consistent = (
            self.delta.engaged == self.delta.clicks
            if self.endpoint == "click"
            else self.delta.events == self.delta.unsubscribed
        )
        return low <= self.persisted <= high and consistent


@dataclass
class Bench:
    url: str
    server: Server
    files: dict[str, list[Path]]
    args: argparse.Namespace
    postgres: Postgres | None = None
    runs: list[Run] = field(default_factory=list)

    def wrk(self, endpoint: str, file: Path, seconds: float) -> tuple[dict[str, Any], float]:
        a = self.args
        lua = self.files["lua"][0]
        command = [
            "wrk",
            f"-t{a.threads}",
            f"-c{a.connections}",
            f"-d{seconds:g}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            str(lua),
            self.server.url,
            "--",
            str(file),
            "POST" if endpoint == "unsubscribe" else "GET",
            str(a.threads),
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return parse_wrk(proc.stdout), cpu

    def measure(self, endpoint: str, r: int) -> Run:
        before = settled(self.url)
        load = os.getloadavg()[0]
        pids = self.server.pids()
        pg = self.postgres
        cpu0 = cpu_of(pids)
        pg_cpu0, sessions0 = (pg.cpu(), pg.sessions()) if pg else (0.0, 0)
        result, wrk_cpu = self.wrk(endpoint, self.files[endpoint][r], self.args.duration)
        cpu1 = cpu_of(pids)
        pg_cpu1 = pg.cpu() if pg else 0.0
        after = settled(self.url)  # sessions are counted as they end: read them after
        run = Run(
            endpoint=endpoint,
            round=r,
            wrk=result,
            delta=after - before,
            server_cpu=sum(v - cpu0.get(p, 0.0) for p, v in cpu1.items()),
            db_cpu=pg_cpu1 - pg_cpu0 if pg else None,
            db_sessions=pg.sessions() - sessions0 if pg else None,
            wrk_cpu=wrk_cpu,
            load=(load, os.getloadavg()[0]),
        )
        self.runs.append(run)
        return run


# -- the report -----------------------------------------------------------------------------


def cpu_per_request(run: Run) -> str:
    """CPU milliseconds per completed request: the server, PostgreSQL, wrk; and the
    PostgreSQL sessions the service's pool opened per request."""
    n = max(run.wrk["total"], 1)
    text = f"server {1000 * run.server_cpu / n:.2f}"
    if run.db_cpu is not None:
        text += f", postgres {1000 * run.db_cpu / n:.2f}"
    text += f", wrk {1000 * run.wrk_cpu / n:.2f}"
    if run.db_sessions is not None:
        text += f"; PostgreSQL sessions opened per request {run.db_sessions / n:.2f}"
    return text


def round_line(run: Run, base: Run | None) -> str:
    w = run.wrk
    ratio = f" x{run.rps / base.rps:.2f} of /healthz" if base and run is not base else ""
    errors = ""
    if w["non_2xx_3xx"] or w["socket_errors"]:
        errors = f", non-2xx/3xx {w['non_2xx_3xx']:,}, socket errors {w['socket_errors']:,}"
    persisted = ""
    if run.endpoint != "healthz":
        persisted = (
            f"; rows {run.persisted:,} for {run.good:,} answered + {run.made - run.good}"
            f" in flight ({'ok' if run.persistence_ok else 'MISMATCH'})"
        )
        if w["lua"].get("wraps"):
            persisted += f"; tokens reused {w['lua']['wraps']}x"
    return (
        f"  round {run.round + 1} {run.endpoint:12} {run.rps:8,.0f} req/s"
        f"  p50 {w['p50_ms']:6.1f} ms  p99 {w['p99_ms']:6.1f} ms{ratio}{errors}{persisted}"
        f"  [CPU ms/request: {cpu_per_request(run)}; load {run.load[0]:.1f}->{run.load[1]:.1f}]"
    )


def summary_rows(kind: str, runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    bases = {r.round: r for r in runs if r.endpoint == "healthz"}
    for endpoint in ENDPOINTS:
        mine = [r for r in runs if r.endpoint == endpoint]
        if not mine:
            continue
        rps = median([r.rps for r in mine])
        p50 = median([r.wrk["p50_ms"] for r in mine])
        p99 = median([r.wrk["p99_ms"] for r in mine])
        ratios = [r.rps / bases[r.round].rps for r in mine if r.round in bases]
        row: dict[str, Any] = {
            "endpoint": endpoint,
            "database": kind,
            "rps": rps,
            "p50": p50,
            "p99": p99,
            "ratio": median(ratios) if ratios else None,
            "errors": sum(r.wrk["non_2xx_3xx"] + r.wrk["socket_errors"] for r in mine),
            "cpu_ms": median([1000 * r.server_cpu / max(r.wrk["total"], 1) for r in mine]),
        }
        if endpoint == "healthz":
            row.update(persisted="-", verdict="(baseline)")
        else:
            rows_in = sum(r.persisted for r in mine)
            good = sum(r.good for r in mine)
            made = sum(r.made for r in mine)
            ok = all(r.persistence_ok for r in mine)
            row["persisted"] = (
                f"{rows_in:,} / {good:,} + {rows_in - good} of {made - good} in flight"
                + ("" if ok else " MISMATCH")
            )
            misses = []
            if rps < TARGET_RPS:
                misses.append(f"{rps:,.0f} < {TARGET_RPS:,} req/s")
            if not p99 < TARGET_P99_MS:
                misses.append(f"p99 {p99:.0f} >= {TARGET_P99_MS:.0f} ms")
            if row["errors"]:
                misses.append(f"{row['errors']:,} errors")
            if not ok:
                misses.append("rows do not match the requests")
            row["verdict"] = "MET" if not misses else "NOT MET: " + "; ".join(misses)
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{'endpoint':12} {'database':10} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'x healthz':>9} {'CPU ms/req':>10}  {'rows / answered + in flight':38} target"
    )
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(
            f"{r['endpoint']:12} {r['database']:10} {r['rps']:7,.0f} {r['p50']:7.1f}"
            f" {r['p99']:7.1f} {ratio:>9} {r['cpu_ms']:10.2f}  {r['persisted']:38} {r['verdict']}"
        )
    print(
        f"target: >= {TARGET_RPS:,} req/s and p99 < {TARGET_P99_MS:.0f} ms, every answer 2xx/3xx,"
        " one row per request. Medians of the rounds; x healthz: median of the ratios"
        " within each round; CPU ms/req: CPU of the server processes per request; rows:"
        " new rows (clicks, unsubscribed subscribers) against the requests answered 2xx/3xx,"
        " plus those of the requests still in flight when wrk stopped that the server"
        " completed anyway (all rounds)."
    )


# -- one database ---------------------------------------------------------------------------


def bench_database(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=WORK))
    try:
        if args.profile:
            profile_database(kind, args, run_dir)
            return []
        return _bench_database(kind, args, run_dir)
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class Setup:
    kind: str
    run_dir: Path
    url: str
    env: dict[str, str]
    files: dict[str, list[Path]]
    redis_prefix: str


def prepare(kind: str, args: argparse.Namespace, run_dir: Path) -> Setup:
    """The database, the settings file, the token files, the wrk script, the environment."""
    url = fresh_database(kind, run_dir, args.postgres)
    config = run_dir / "letterpress.toml"
    prefix = f"lpservebench{os.getpid()}"
    config.write_text(
        'base_url = "http://localhost:8000"\n'
        'site_name = "Letterpress Bench"\n'
        f'redis_prefix = "{prefix}"\n'
        'public_lists = ["newsletter"]\n'
    )
    started = time.perf_counter()
    issue_id, ids, links = seed(url, config, args.subscribers)
    seeded = time.perf_counter() - started
    rng = random.Random(args.seed)
    rounds = max(args.rounds, 2) if args.profile else args.rounds  # + the profile's warm-up
    files = token_files(run_dir, issue_id, ids, links, rounds, args.duration, rng)
    lua = run_dir / "serve.lua"
    lua.write_text(LUA.replace("%(agent)s", BROWSER))
    files["lua"] = [lua]
    print(
        f"\n== {kind}: {len(ids):,} subscribers, issue {issue_id} with {len(links)} tracked links"
        f" ({sum(1 for k in links if k.slug)} to articles), seeded in {seeded:.1f} s",
        flush=True,
    )
    env = clean_env()
    env.update(LETTERPRESS_SECRET_KEY=SECRET, DATABASE_URL=url, LETTERPRESS_CONFIG=str(config))
    if args.redis:
        env["REDIS_URL"] = args.redis
    return Setup(kind, run_dir, url, env, files, prefix)


def _bench_database(kind: str, args: argparse.Namespace, run_dir: Path) -> list[dict[str, Any]]:
    setup = prepare(kind, args, run_dir)
    url, files = setup.url, setup.files
    client = None
    if args.redis:
        import redis

        client = redis.Redis.from_url(args.redis)
        client.flushdb()  # a database number of its own
    server = Server(run_dir, setup.env, args.workers)
    try:
        bench = Bench(url, server, files, args, Postgres(url) if kind == "postgresql" else None)
        for endpoint in ("healthz", "click"):  # connections, caches, code paths warm
            bench.wrk(endpoint, files[endpoint][args.rounds], args.warmup)
        for r in range(args.rounds):
            base = None
            for endpoint in ENDPOINTS:
                run = bench.measure(endpoint, r)
                base = run if endpoint == "healthz" else base
                print(round_line(run, base), flush=True)
        if client is not None:
            hot: Any = client.zrange(Keys(setup.redis_prefix).hot_clicks, 0, -1, withscores=True)
            slugs = ", ".join(k.decode() for k, _ in hot) or "none"
            print(f"  hot-article clicks in Redis for: {slugs}", flush=True)
        problems = [line for line in server.logs(400).splitlines() if "Traceback" in line]
        if problems:
            print(f"  the server logged {len(problems)} tracebacks; last lines:\n{server.logs()}")
    finally:
        server.close()
        if client is not None:
            client.flushdb()
        db.engine(url).dispose()
    return summary_rows(kind, bench.runs)


# -- profiling ------------------------------------------------------------------------------


def profiled_server(port: int, stats: Path) -> None:
    """(The process ``--profile`` starts.) One uvicorn worker, as ``letterpress serve``
    runs it. On SIGUSR1 (after the warm-up) every thread goes under cProfile, counting
    CPU time (``time.thread_time``: waiting for a lock, the GIL or the database counts
    nothing); on SIGTERM the merged statistics are written to ``stats``."""
    import cProfile
    import pstats
    import threading

    import uvicorn

    from pipeline.cli.serve import LOG_CONFIG

    profiles: list[cProfile.Profile] = []
    active = threading.Event()  # set by SIGUSR1, once the warm-up is over

    def hook(*_: Any) -> None:
        if active.is_set():  # the first event in this thread since: its own profiler
            profile = cProfile.Profile(time.thread_time)
            profiles.append(profile)
            profile.enable()  # replaces this hook in this thread

    signal.signal(signal.SIGUSR1, lambda *_: active.set())
    # uvicorn raises the signal that stopped it again once it is done: let it pass.
    signal.signal(signal.SIGTERM, lambda *_: None)
    threading.setprofile(hook)  # the threads started from now on (the request pool)
    sys.setprofile(hook)  # this one (the event loop)
    uvicorn.run(
        "workers.edge:service_from_environment",
        factory=True,
        host="127.0.0.1",
        port=port,
        proxy_headers=True,
        server_header=False,
        access_log=False,
        log_config=LOG_CONFIG,
    )
    sys.setprofile(None)
    merged = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        merged.add(profile)
    merged.dump_stats(stats)
    sys.stdout.flush()
    os._exit(0)  # the pool threads still have their profilers: no interpreter teardown


LAYERS = [  # (layer, what a function's file or name contains), first match wins
    ("SQLite driver (C)", ("sqlite3.",)),
    ("psycopg", ("psycopg",)),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("Jinja2 and MarkupSafe", ("jinja2", "markupsafe")),
    ("Redis client", ("/redis/",)),
    ("FastAPI", ("fastapi",)),
    ("Starlette", ("starlette",)),
    ("uvicorn, httptools", ("uvicorn", "httptools")),
    ("anyio (thread pool hand-off)", ("anyio", "sniffio")),
    ("pydantic", ("pydantic",)),
    ("letterpress (pipeline/)", ("/pipeline/",)),
    ("threading, queue, asyncio", ("threading.py", "queue.py", "asyncio", "concurrent")),
]


def layer_of(filename: str, name: str) -> str:
    where = f"{filename} {name}"
    for layer, marks in LAYERS:
        if any(mark in where for mark in marks):
            return layer
    return "other (stdlib, builtins)"


def print_profile(stats_path: Path, requests: int) -> None:
    """Own CPU time per layer and per function, in microseconds per request."""
    import pstats

    stats = pstats.Stats(str(stats_path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    per_layer: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, own, _cum, _callers) in raw.items():
        layer = layer_of(filename, name)
        per_layer[layer] = per_layer.get(layer, 0.0) + own
    total = sum(per_layer.values())
    n = max(requests, 1)
    print(
        f"  profiled CPU {total:.1f} s for {requests:,} requests: {1e6 * total / n:,.0f} us per"
        " request (cProfile slows Python code several times over: compare the shares)"
    )
    print("  own CPU time by layer:")
    for layer, own in sorted(per_layer.items(), key=lambda kv: -kv[1]):
        print(f"    {layer:32} {1e6 * own / n:7,.0f} us/request  {100 * own / total:5.1f} %")
    print("  functions with the most CPU including what they call (us per request):")
    interesting = [
        (cum, key)
        for key, (_cc, _nc, _own, cum, _callers) in raw.items()
        if "/pipeline/" in key[0] or "sqlalchemy/engine/base.py" in key[0]
    ]
    for cum, (filename, line, name) in sorted(interesting, reverse=True)[:25]:
        short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        print(f"    {1e6 * cum / n:7,.0f}  {short}:{line} {name}")
    print("  functions with the most own CPU (us per request):")
    top = sorted(raw.items(), key=lambda kv: -kv[1][2])[:20]
    for (filename, line, name), (_cc, nc, own, _cum, _callers) in top:
        short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        print(f"    {1e6 * own / n:7,.0f}  {nc / n:5.1f} calls  {short}:{line} {name}")


def profile_database(kind: str, args: argparse.Namespace, run_dir: Path) -> None:
    setup = prepare(kind, args, run_dir)
    stats_path = run_dir / f"{args.profile}.pstats"
    client = None
    if args.redis:
        import redis

        client = redis.Redis.from_url(args.redis)
        client.flushdb()
    server = Server(run_dir, setup.env, 1, profile=stats_path)
    try:
        bench = Bench(setup.url, server, setup.files, args)
        bench.wrk(args.profile, setup.files[args.profile][1], args.warmup)
        os.kill(server.proc.pid, signal.SIGUSR1)  # start profiling
        result, _ = bench.wrk(args.profile, setup.files[args.profile][0], args.duration)
        print(
            f"  one profiled worker, {args.profile}: {result['rps']:,.0f} req/s,"
            f" p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
            f" ({result['non_2xx_3xx']:,} non-2xx/3xx)",
            flush=True,
        )
    finally:
        server.close(timeout=120)
        if client is not None:
            client.flushdb()
        db.engine(setup.url).dispose()
    if not stats_path.exists():
        raise RuntimeError(f"the profiled server wrote no statistics:\n{server.logs()}")
    print_profile(stats_path, int(result["total"]))


def versions(kinds: list[str], postgres: str) -> str:
    parts = [machine(postgres if "postgresql" in kinds else None)]
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    parts.append((wrk.stdout or wrk.stderr).split(" [")[0].strip())
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--subscribers", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="letterpress serve --workers")
    parser.add_argument("--postgres", default=POSTGRES, help=f"a database of its own ({POSTGRES})")
    parser.add_argument("--redis", default=REDIS, help=f"a database number of its own ({REDIS})")
    parser.add_argument("--no-redis", dest="redis", action="store_const", const="")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep bench/.work/serve/<run>/")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument(
        "--profile",
        choices=ENDPOINTS,
        help="instead of the rounds: one worker under cProfile, loaded by wrk for --duration",
    )
    parser.add_argument("--profiled-server", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profiled_server:
        profiled_server(int(args.profiled_server[0]), Path(args.profiled_server[1]))
        return 0
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: sudo apt-get install wrk (Debian and Ubuntu package wrk)")
    if args.connections < args.threads:
        sys.exit("--connections must be at least --threads (wrk gives each thread its share)")
    kinds = args.database or ["sqlite", "postgresql"]
    WORK.mkdir(parents=True, exist_ok=True)
    print(code_version())
    print(versions(kinds, args.postgres))
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency,"
        f" {args.rounds} rounds after {args.warmup:g} s of warm-up;"
        f" letterpress serve --workers {args.workers} --no-access-log;"
        f" Redis {args.redis or 'off'}; load average {os.getloadavg()[0]:.1f}"
    )
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        rows += bench_database(kind, args)
    if args.profile:
        return 0
    print_table(rows)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
