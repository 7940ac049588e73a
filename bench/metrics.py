"""What a Prometheus scrape of ``letterpress metrics`` costs with a large audience (issue 12).

Aim: with 1,000,000 subscribers and 200 sent issues, a scrape answers in well under a
second at p95 on SQLite and on PostgreSQL (Prometheus scrapes every 30 s, with a 15 s
timeout: deploy/prometheus/prometheus.yml).

    .venv/bin/python bench/metrics.py [--database sqlite|postgresql|both]
        [--subscribers 1000000] [--scrapes 30] [--postgres URL]
    .venv/bin/python bench/metrics.py --subscribers 20000 --scrapes 5   # a quick check

Per database, the data of bench/console.py (``seed``: subscribers of every status, 200
sent issues with their batches and deliveries, a draft, a scheduled issue), with the
newest sent issue (a delivery per confirmed subscriber) ended just now, so that it has
series. ``python -m workers metrics`` runs on a free port without Redis (the broker's
part is a few Redis calls and the workers' ping, outside what is measured here). After
3 untimed scrapes, ``--scrapes`` timed ones; the report gives p50, p95 and max (client
wall time over loopback), the subscriber count by status alone (the biggest query), and
the load average before and after. Each scrape is checked: the subscribers it reports
are the ones seeded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import clean_env, code_version, free_port, machine, median, percentile
from console import POSTGRES, SECRET, drop_database, fresh_database, seed

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from pipeline.store import db  # noqa: E402

WORK = BENCH / ".work" / "metrics"
AIM_MS = 1000.0


def subscribers_in(text: str) -> int:
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "letterpress_subscribers"
            for sample in family.samples
        )
    )


def bench_database(kind: str, args: argparse.Namespace) -> bool:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=WORK))
    url = fresh_database(kind, run_dir, args.postgres)
    config = run_dir / "letterpress.toml"
    config.write_text(
        'base_url = "https://news.example.org"\npostal_address = "1 Bench Street, Benchville"\n'
    )
    proc = None
    try:
        started = time.perf_counter()
        seeded = seed(url, config, args.subscribers, args.issues, max(1, args.subscribers // 50))
        engine = db.engine(url)
        with engine.begin() as conn:  # the newest send ended now: it has series
            conn.execute(
                sa.update(db.issues)
                .where(db.issues.c.id == seeded.full)
                .values(updated_at=db.now())
            )
        print(
            f"\n== {kind}: {seeded.subscribers:,} subscribers, {seeded.issues} issues,"
            f" {seeded.deliveries:,} deliveries; seeded in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        counts = []
        for _ in range(5):
            begun = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(
                    sa.select(db.subscribers.c.status, sa.func.count()).group_by(
                        db.subscribers.c.status
                    )
                ).all()
            counts.append((time.perf_counter() - begun) * 1000)
        env = clean_env()
        env.update(LETTERPRESS_SECRET_KEY=SECRET, DATABASE_URL=url, LETTERPRESS_CONFIG=str(config))
        env["PYTHONPATH"] = str(ROOT)
        port = free_port()
        log = (run_dir / "metrics.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers", "metrics", "--port", str(port)],
            env=env,
            cwd=run_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        target = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(target, timeout=30).raise_for_status()
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((run_dir / "metrics.log").read_text()) from None
                time.sleep(0.2)
        for _ in range(3):
            requests.get(target, timeout=30)
        load = os.getloadavg()
        timings = []
        with requests.Session() as session:
            for _ in range(args.scrapes):
                begun = time.perf_counter()
                answer = session.get(target, timeout=30)
                timings.append((time.perf_counter() - begun) * 1000)
                answer.raise_for_status()
                found = subscribers_in(answer.text)
                if found != seeded.subscribers:
                    raise RuntimeError(f"a scrape reported {found:,} subscribers")
        after = os.getloadavg()
        p95 = percentile(timings, 95)
        print(
            f"  {args.scrapes} scrapes after 3 untimed: p50 {median(timings):.0f} ms,"
            f" p95 {p95:.0f} ms, max {max(timings):.0f} ms"
            f" ({len(answer.text):,} bytes); subscribers by status alone: median"
            f" {median(counts):.0f} ms; load average {load[0]:.2f} before, {after[0]:.2f} after"
            f"  {'MET' if p95 < AIM_MS else 'NOT MET'}",
            flush=True,
        )
        return p95 < AIM_MS
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        db.engine(url).dispose()
        if kind == "postgresql":
            drop_database(url, args.postgres)
        shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--issues", type=int, default=200, help="sent issues")
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--postgres", default=POSTGRES, help=f"the server ({POSTGRES})")
    args = parser.parse_args(argv)
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    WORK.mkdir(parents=True, exist_ok=True)
    print(code_version())
    print(machine(args.postgres if "postgresql" in kinds else None))
    met = [bench_database(kind, args) for kind in kinds]
    print(f"\naim: a scrape p95 < {AIM_MS:.0f} ms: " + ("MET" if all(met) else "NOT MET"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
