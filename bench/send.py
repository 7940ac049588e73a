"""Send one issue to 100k and 1M subscribers through real Celery workers, Redis, SQL and
the loopback SendGrid double; time from "send" to the last batch accepted.

    .venv/bin/python bench/send.py [--sizes 100000,1000000] [--databases sqlite,postgresql]

Subscribers are written before the clock starts. The clock starts when
``letterpress issue schedule ID --at now`` is run and stops when the issue is ``sent``
(every batch settled in the database). Resident memory of every process (workers,
beat, the double) is sampled all along. As a baseline in the same run, one process
posts the same recipients to the double in ready-made batches of 1,000: the floor
that the provider double itself sets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.store import db  # noqa: E402
from tests.cluster import SENDGRID_KEY, Cluster, Double, seed_subscribers  # noqa: E402

SEEDS = "vitamin-k2-for-directing-calcium-to-bones,the-role-of-vitamin-k2-in-calcium-distribution"
POSTGRES = os.environ.get(
    "LETTERPRESS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/letterpress_send_bench"
)
REDIS = os.environ.get("LETTERPRESS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.exists():
            for child in children.read_text().split():
                found.extend(descendants(int(child)))
    return found


class Sampler(threading.Thread):
    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.roots = pids
        self.peak: dict[int, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            for root in self.roots:
                for pid in descendants(root):
                    self.peak[pid] = max(self.peak.get(pid, 0.0), rss_mb(pid))
            time.sleep(0.2)


def fresh_database(kind: str, work: Path) -> str:
    if kind == "sqlite":
        for old in work.glob("send-*.db*"):
            old.unlink()
        url = f"sqlite:///{work / f'send-{time.time_ns()}.db'}"
    else:
        url = POSTGRES
        server = sa.create_engine(
            db.normalise_url(url.rsplit("/", 1)[0] + "/postgres"),
            isolation_level="AUTOCOMMIT",
            poolclass=sa.pool.NullPool,
        )
        name = url.rsplit("/", 1)[1]
        with server.connect() as conn:  # a database of its own: the tests reset theirs
            if not conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ):
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        server.dispose()
        with db.engine(url).begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    db.upgrade(url)
    return url


def baseline(double: Double, count: int, batch: int = 1000) -> float:
    """One process posting ready-made SendGrid batches: what the double alone costs."""
    session = requests.Session()
    body_for = []
    for start in range(0, count, batch):
        body_for.append(
            {
                "from": {"email": "newsletter@example.org"},
                "subject": "Baseline",
                "content": [
                    {"type": "text/plain", "value": "x" * 2000},
                    {"type": "text/html", "value": "<p>" + "x" * 20000 + "</p>"},
                ],
                "personalizations": [
                    {
                        "to": [{"email": f"base{i}@example.net"}],
                        "headers": {"List-Unsubscribe": f"<https://e.org/u/{i}>"},
                    }
                    for i in range(start, min(start + batch, count))
                ],
            }
        )
    started = time.perf_counter()
    for body in body_for:
        answer = session.post(
            double.url + "/v3/mail/send",
            data=json.dumps(body),
            headers={"Authorization": f"Bearer {SENDGRID_KEY}", "Content-Type": "application/json"},
            timeout=60,
        )
        answer.raise_for_status()
    return time.perf_counter() - started


def run(kind: str, count: int, work: Path, concurrency: int) -> dict[str, object]:
    url = fresh_database(kind, work)
    t = time.perf_counter()
    seed_subscribers(url, count)
    seeded = time.perf_counter() - t
    client = redis.Redis.from_url(REDIS)
    client.flushdb()
    run_dir = Path(tempfile.mkdtemp(prefix=f"send-{kind}-{count}-", dir=work))
    double = Double(run_dir / "double.log")
    cluster = Cluster(
        run_dir,
        url,
        REDIS,
        double,
        batch_size=1000,
        beat_seconds=1.0,
        sweep_seconds=30.0,
        lease_seconds=600,
        retry_max_seconds=5.0,
    )
    try:
        cluster.worker("w1", concurrency=concurrency)
        cluster.beat()
        time.sleep(4)  # workers up
        issue_id = int(
            cluster.run(
                "issue", "create", "--subject", "Bench", "--articles", SEEDS, "--audience", "main"
            ).strip()
        )
        pids = [p.pid for p in cluster.procs.values()] + [double.proc.pid]
        sampler = Sampler(pids)
        sampler.start()
        started = time.perf_counter()
        cluster.run("issue", "schedule", str(issue_id), "--at", "now")
        while cluster.issue_status(issue_id) != "sent":
            if time.perf_counter() - started > 1800:
                raise RuntimeError("no end after 30 min:\n" + cluster.logs())
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        sampler.stopped.set()
        sampler.join()
        stats = double.stats()
        with cluster.engine.connect() as conn:
            sent = conn.scalar(sa.select(db.issues.c.sent).where(db.issues.c.id == issue_id))
        floor = baseline(double, min(count, 100_000))
        return {
            "database": kind,
            "subscribers": count,
            "seconds": round(elapsed, 2),
            "per_second": round(count / elapsed),
            "sent": sent,
            "double_unique": stats.get("unique"),
            "double_duplicates": stats.get("duplicates"),
            "peak_rss_mb": round(max(sampler.peak.values()), 1),
            "seed_seconds": round(seeded, 1),
            "baseline_per_second": round(min(count, 100_000) / floor),
        }
    finally:
        cluster.close()
        double.close()
        client.flushdb()


# Issue 13: the end-to-end send within this many times the double's own time for the same
# recipients, measured in the same run.
GOALS = {"sqlite": 2.0, "postgresql": 3.5}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    work = ROOT / "bench" / ".work"
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"{'database':10} {'subscribers':>11} {'seconds':>8} {'per s':>8} {'base/s':>8} "
        f"{'peak MB':>8} {'dups':>5}"
    )
    for kind in args.databases.split(","):
        for count in (int(c) for c in args.sizes.split(",")):
            results = [run(kind, count, work, args.concurrency) for _ in range(args.rounds)]
            seconds = statistics.median(r["seconds"] for r in results)  # type: ignore[misc]
            r = results[0]
            print(
                f"{kind:10} {count:>11,} {seconds:>8.2f} {count / seconds:>8,.0f} "
                f"{r['baseline_per_second']:>8,} {max(x['peak_rss_mb'] for x in results):>8} "  # type: ignore[type-var]
                f"{r['double_duplicates']:>5}",
                flush=True,
            )
            print("   ", json.dumps(results), flush=True)
            # The double alone would take count / baseline s: the ratio of each round.
            ratios = [r["seconds"] * r["baseline_per_second"] / count for r in results]  # type: ignore[operator]
            ratio = statistics.median(ratios)
            goal = GOALS[kind]
            print(
                f"target: {count:,} recipients on {kind} within {goal}x the double alone:"
                f" {'MET' if ratio <= goal else 'NOT MET'} (median {ratio:.2f}x; rounds"
                f" {', '.join(f'{x:.2f}x' for x in ratios)})",
                flush=True,
            )


if __name__ == "__main__":
    main()
