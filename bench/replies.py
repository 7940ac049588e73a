"""Readers' replies under load: posting a reply and loading an article's replies.

Target: each holds at least 1,000 requests per second on this 2-core machine with a
p99 latency under 50 ms, and every reply posted is persisted (one ``replies`` row per
201 answer).

    .venv/bin/python bench/replies.py [--database sqlite|postgresql] [--rounds 3]
        [--duration 10] [--connections 12] [--paced-connections 24] [--offer 1200]
        [--threads 2] [--workers 2] [--shown 40]

Per database (SQLite, then PostgreSQL unless ``--database`` picks one): a fresh,
migrated database holding ``--shown`` approved replies (some of them answers) to one
seed article. ``letterpress serve --workers 2 --no-access-log`` runs as a subprocess
on a free port with Redis (database 12) for the rate limits, which are set high enough
never to refuse but are still counted. Each round runs wrk on ``GET /healthz`` (the
baseline: the same framework and a ``SELECT 1``), then on ``GET /api/replies/<slug>``
(the approved replies and a fresh form token, as the page's script loads them), then
on ``POST /api/replies/<slug>``: JSON bodies from a file, each from a different reader,
with a valid form token, through the whole guard (origin, honeypot, token, the limits
per IP and per address in Redis, the checks of every field, moderation's lookup of the
address), committed by the group writer before the answer. After each POST run the
database is read once it has settled: new rows against the 201 answers (requests still
in flight when wrk stopped may be stored too: they are counted apart).

Each endpoint runs twice a round: flat out (``--connections``, no pause: what it
holds), then paced (``--paced-connections``, each waiting a random time before each
request, so that together they offer ``--offer`` requests a second: the latency at the
target rate, which flat out only measures the queue wrk builds). The mean wait is
the connections' share of a second less the answer's latency, which a short paced run
after the warm-up measures. wrk has no fixed-rate
mode (wrk2 is not packaged), and its closed loop undercounts a stall's effect on the
requests that would have been sent during it; the pause keeps the offered rate near
the target so that a stall still shows in the requests waiting on it.

The report: per endpoint and database, the medians of requests per second flat out and
its ratio to ``/healthz`` within each round, the rate the paced run reached with its
p50 and p99 (wrk's ``--latency``), the CPU per request of the server processes, rows
against answers, and MET / NOT MET.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchutil import clean_env, code_version, median
from serve import Server, cpu_of, fresh_database, parse_wrk, versions

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from pipeline.audience.tokens import Signer  # noqa: E402
from pipeline.replies import guard  # noqa: E402
from pipeline.replies.text import check  # noqa: E402
from pipeline.replies.threads import NewReply, post  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.store import db  # noqa: E402

WORK = BENCH / ".work" / "replies"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/letterpress_replies_bench"
REDIS = "redis://127.0.0.1:6379/12"
SECRET = "replies-bench-secret-key-not-for-production"
BASE = "http://localhost:8000"
SLUG = "the-role-of-vitamin-k2-in-calcium-distribution"
TARGET_RPS = 1000
TARGET_P99_MS = 50.0
BODIES_PER_SECOND = 4000  # distinct POST bodies per second of a round
ENDPOINTS = ("healthz", "load", "post")
# Each round: the baseline flat out; each endpoint flat out (what it holds), then paced
# (its latency when offered the target rate).
PLAN = (("healthz", False), ("load", False), ("load", True), ("post", False), ("post", True))

LUA = r"""-- Written by bench/replies.py: one request per line of a file.
-- wrk ... -s replies.lua URL -- <file> <GET|POST> <threads> <path> <pace ms>
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

made = 0
local lines, at = {}, 0
local method, path, headers, pace

function init(args)
  local every = tonumber(args[3])
  method, path, pace = args[2], args[4], tonumber(args[5])
  math.randomseed(id + 1)
  local k = 0
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    if k % every == id then lines[#lines + 1] = line end
    k = k + 1
  end
  file:close()
  assert(#lines > 0, "no lines for wrk thread " .. id)
  headers = { ["Accept"] = "application/json", ["Origin"] = "%(base)s" }
  if method == "POST" then headers["Content-Type"] = "application/json" end
end

-- A paced run waits before each request (uniform, mean ``pace`` ms) to offer a set rate.
function delay()
  if pace > 0 then return math.random() * 2 * pace end
  return 0
end

function request()
  at = at % #lines + 1
  made = made + 1
  if method == "POST" then return wrk.format("POST", path, headers, lines[at]) end
  return wrk.format("GET", lines[at], headers)
end

function done(summary, latency, requests)
  local m = 0
  for _, thread in ipairs(threads) do m = m + thread:get("made") end
  local e = summary.errors
  io.write(string.format(
    "BENCH {\"requests\": %d, \"made\": %d, \"status_errors\": %d, \"p99_us\": %d}\n",
    summary.requests, m, e.status, latency:percentile(99)))
end
"""


def seed(url: str, config: Path, shown: int) -> None:
    """``shown`` approved replies to SLUG: every fourth answers the one before it."""
    db.upgrade(url)
    settings = load_settings(config, database_url=url, secret_key=SECRET)
    engine = db.engine(url)
    with engine.begin() as conn:
        last = None
        for i in range(shown):
            fields = check(
                settings,
                f"Reader {i}",
                f"seed{i}@example.org",
                "https://example.org" if i % 3 == 0 else "",
                f"Reply {i}: K2 and D3 together, see https://example.org/{i}\n\nThanks.",
            )
            answers = last if i % 4 == 3 else None
            new = NewReply(SLUG, fields, answers, False, "seed")
            posted = post(conn, settings.model_copy(update={"reply_moderation": "none"}), new)
            last = getattr(posted, "id", None)
    engine.dispose()


def replies_count(url: str) -> int:
    with db.engine(url).connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(db.replies)) or 0)


def settled(url: str, quiet: float = 0.6, limit: float = 30.0) -> int:
    deadline = time.monotonic() + limit
    last = replies_count(url)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = replies_count(url)
        if now == last:
            return now
        last = now
    return last


def files(run_dir: Path, rounds: int, duration: float) -> dict[str, list[Path]]:
    signer = Signer(SECRET)
    token = guard.form_token(signer, SLUG, time.time() - 3600)
    out: dict[str, list[Path]] = {"post": []}
    per_round = int(duration * BODIES_PER_SECOND)
    for r in range(rounds + 1):  # + the warm-up's
        path = run_dir / f"post-{r}.txt"
        with path.open("w") as handle:
            for i in range(per_round):
                body = {
                    "token": token,
                    "name": f"Reader {r}-{i}",
                    "email": f"reader-{r}-{i}@example.org",
                    "website": "",
                    "comment": f"Question {i} of round {r}: does vitamin K2 need D3 too?",
                    "notify": False,
                    "url": "",
                }
                handle.write(json.dumps(body) + "\n")
        out["post"].append(path)
    load = run_dir / "load.txt"
    load.write_text(f"/api/replies/{SLUG}\n" * 1000)
    health = run_dir / "healthz.txt"
    health.write_text("/healthz\n" * 1000)
    out["load"] = [load] * (rounds + 1)
    out["healthz"] = [health] * (rounds + 1)
    lua = run_dir / "replies.lua"
    lua.write_text(LUA.replace("%(base)s", BASE))
    out["lua"] = [lua]
    return out


@dataclass
class Run:
    endpoint: str
    paced: bool
    round: int
    wrk: dict[str, Any]
    lua: dict[str, Any]
    stored: int
    server_cpu: float
    load: float

    @property
    def rps(self) -> float:
        return float(self.wrk["rps"])

    @property
    def good(self) -> int:
        return int(self.wrk["total"]) - int(self.wrk["non_2xx_3xx"])


def run_wrk(
    args: argparse.Namespace,
    server: Server,
    lua: Path,
    endpoint: str,
    file: Path,
    seconds: float,
    pace: float | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One wrk run; ``pace``: the mean wait before each request in ms (a paced run)."""
    import subprocess

    connections = args.connections if pace is None else args.paced_connections
    pace = pace or 0.0
    command = [
        "wrk", f"-t{args.threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
        "--timeout", "30s", "-s", str(lua), server.url, "--", str(file),
        "POST" if endpoint == "post" else "GET", str(args.threads), f"/api/replies/{SLUG}",
        f"{pace:.3f}",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    parsed = parse_wrk(proc.stdout)
    return parsed, parsed.get("lua", {})


def bench_database(kind: str, args: argparse.Namespace) -> list[Run]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=WORK))
    try:
        url = fresh_database(kind, run_dir, args.postgres)
        config = run_dir / "letterpress.toml"
        prefix = f"lprepliesbench{os.getpid()}"
        config.write_text(
            f'base_url = "{BASE}"\n'
            f'content_dir = "{ROOT / "content"}"\n'
            f'redis_prefix = "{prefix}"\n'
            "reply_min_seconds = 1\n"
            "reply_per_ip_per_hour = 1000000000\n"
            "reply_per_address_per_hour = 1000000000\n"
        )
        seed(url, config, args.shown)
        paths = files(run_dir, args.rounds, args.duration)
        env = clean_env()
        env.update(LETTERPRESS_SECRET_KEY=SECRET, DATABASE_URL=url, LETTERPRESS_CONFIG=str(config))
        env["REDIS_URL"] = args.redis
        import redis

        client = redis.Redis.from_url(args.redis)
        client.flushdb()
        server = Server(run_dir, env, args.workers)
        runs: list[Run] = []
        lua = paths["lua"][0]
        print(f"\n== {kind}: {args.shown} approved replies on {SLUG}", flush=True)
        try:
            for endpoint in ENDPOINTS:  # connections, caches, code paths warm
                run_wrk(args, server, lua, endpoint, paths[endpoint][args.rounds], args.warmup)
            # The wait that offers --offer req/s: each connection's cycle is its wait plus
            # the answer's latency, measured by a short paced run.
            paces = {}
            for endpoint in ("load", "post"):
                first = args.paced_connections * 1000 / args.offer
                probe, _ = run_wrk(args, server, lua, endpoint, paths[endpoint][args.rounds],
                                   args.warmup, first)  # fmt: skip
                paces[endpoint] = max(first - probe["p50_ms"], 0.0)
                print(f"  {endpoint}: a wait of {paces[endpoint]:.1f} ms offers"
                      f" {args.offer:,} req/s (latency {probe['p50_ms']:.1f} ms)")  # fmt: skip
            for r in range(args.rounds):
                for endpoint, paced in PLAN:
                    before = settled(url)
                    pids = server.pids()
                    cpu0 = cpu_of(pids)
                    load = os.getloadavg()[0]
                    result, lua_out = run_wrk(
                        args,
                        server,
                        lua,
                        endpoint,
                        paths[endpoint][r],
                        args.duration,
                        paces[endpoint] if paced else None,
                    )
                    cpu1 = cpu_of(pids)
                    stored = settled(url) - before
                    run = Run(endpoint, paced, r, result, lua_out, stored,
                              sum(v - cpu0.get(p, 0.0) for p, v in cpu1.items()), load)  # fmt: skip
                    runs.append(run)
                    how = f"paced {args.offer:,}/s" if paced else "flat out"
                    print(
                        f"  round {r + 1} {endpoint:8} {how:13} {run.rps:7,.0f} req/s"
                        f"  p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms"
                        f"  non-2xx {result['non_2xx_3xx']}  rows +{stored:,}"
                        f"  load {load:.1f}",
                        flush=True,
                    )
            tracebacks = server.logs(400).count("Traceback")
            if tracebacks:
                print(f"  the server logged {tracebacks} tracebacks:\n{server.logs()}")
        finally:
            server.close()
            client.flushdb()
            db.engine(url).dispose()
        return runs
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def report(kind: str, runs: list[Run]) -> list[str]:
    lines = []
    bases = {r.round: r for r in runs if r.endpoint == "healthz"}
    for endpoint in ENDPOINTS:
        flat = [r for r in runs if r.endpoint == endpoint and not r.paced]
        paced = [r for r in runs if r.endpoint == endpoint and r.paced]
        rps = median([r.rps for r in flat])
        ratio = median([r.rps / bases[r.round].rps for r in flat])
        cpu = median([1000 * r.server_cpu / max(r.wrk["total"], 1) for r in flat])
        mine = flat + paced
        errors = sum(r.wrk["non_2xx_3xx"] + r.wrk["socket_errors"] for r in mine)
        if endpoint == "healthz":
            p99 = median([r.wrk["p99_ms"] for r in flat])
            lines.append(
                f"{endpoint:8} {kind:10} {rps:8,.0f} {ratio:9.2f} {'-':>8} {'-':>7} {p99:7.1f}"
                f" {cpu:10.2f}  {'-':44} (baseline; p99 flat out)"
            )
            continue
        at = median([r.rps for r in paced])
        p50 = median([r.wrk["p50_ms"] for r in paced])
        p99 = median([r.wrk["p99_ms"] for r in paced])
        misses = []
        if rps < TARGET_RPS:
            misses.append(f"holds {rps:,.0f} < {TARGET_RPS:,} req/s")
        if at < TARGET_RPS:
            misses.append(f"paced run reached {at:,.0f} < {TARGET_RPS:,} req/s")
        if not p99 < TARGET_P99_MS:
            misses.append(f"p99 {p99:.0f} >= {TARGET_P99_MS:.0f} ms")
        if errors:
            misses.append(f"{errors:,} errors")
        persisted = "-"
        if endpoint == "post":
            good = sum(r.good for r in mine)
            stored = sum(r.stored for r in mine)
            made = sum(int(r.lua.get("made", r.wrk["total"])) for r in mine)
            persisted = f"{stored:,} rows / {good:,} answered 201 ({made - good} in flight)"
            if not good <= stored <= made:
                misses.append("rows do not match the answers")
        verdict = "MET" if not misses else "NOT MET: " + "; ".join(misses)
        lines.append(
            f"{endpoint:8} {kind:10} {rps:8,.0f} {ratio:9.2f} {at:8,.0f} {p50:7.1f} {p99:7.1f}"
            f" {cpu:10.2f}  {persisted:44} {verdict}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=12, help="flat out")
    parser.add_argument("--paced-connections", type=int, default=24)
    parser.add_argument("--offer", type=int, default=1200, help="req/s a paced run offers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shown", type=int, default=40, help="approved replies on the article")
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument("--redis", default=REDIS)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: sudo apt-get install wrk (Debian and Ubuntu package wrk)")
    kinds = args.database or ["sqlite", "postgresql"]
    WORK.mkdir(parents=True, exist_ok=True)
    print(code_version())
    print(versions(kinds, args.postgres))
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency,"
        f" {args.rounds} rounds after {args.warmup:g} s of warm-up;"
        f" letterpress serve --workers {args.workers} --no-access-log;"
        f" load average {os.getloadavg()[0]:.1f}"
    )
    lines = []
    for kind in kinds:
        lines += report(kind, bench_database(kind, args))
    print(
        f"\n{'endpoint':8} {'database':10} {'holds':>8} {'x healthz':>9} {'paced':>8}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10}  {'persisted':44} target"
    )
    print("\n".join(lines))
    print(
        f"target: holds >= {TARGET_RPS:,} req/s, and p99 < {TARGET_P99_MS:.0f} ms at that rate;"
        " every answer 2xx, one row per reply posted. holds: req/s flat out"
        f" (-c{args.connections}); x healthz: median of the ratios within each round; paced:"
        f" req/s reached when {args.paced_connections} connections offer {args.offer:,} req/s"
        " (a random wait before each request), with its p50 and p99; CPU ms/req: CPU of the"
        " server processes per request, flat out. Medians of the rounds."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
