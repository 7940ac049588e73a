"""Sending through real Celery worker and beat processes, Redis, SQL and the loopback
provider double, while things go wrong: every subscriber gets the issue exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from pipeline.audience import changes, subscribers
from pipeline.sending import issues
from pipeline.store import db
from tests.cluster import Cluster, Double, seed_subscribers, wait_for
from tests.conftest import SEEDS

pytestmark = pytest.mark.slow


@pytest.fixture
def broker(redis_url: str) -> Iterator[str]:
    url = redis_url.rsplit("/", 1)[0] + "/13"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def double(tmp_path: Path) -> Iterator[Double]:
    server = Double(tmp_path / "double.log")
    yield server
    server.close()


def make(tmp_path: Path, url: str, broker: str, double: Double, **settings: object) -> Cluster:
    return Cluster(tmp_path, url, broker, double, **settings)


@pytest.fixture
def clusters() -> Iterator[list[Cluster]]:
    made: list[Cluster] = []
    yield made
    for cluster in made:
        cluster.close()


def create_issue(cluster: Cluster, audience: str = "main") -> int:
    out = cluster.run(
        "issue",
        "create",
        "--subject",
        "Vitamin K2",
        "--articles",
        f"{SEEDS[0]},{SEEDS[1]}",
        "--audience",
        audience,
    )
    return int(out.strip())


def finish(cluster: Cluster, issue_id: int, timeout: float = 120) -> None:
    try:
        wait_for(lambda: cluster.issue_status(issue_id) == "sent", timeout, f"issue {issue_id}")
    except AssertionError:
        print(cluster.run("status"))
        print(cluster.logs())
        raise


def assert_exactly_once(cluster: Cluster, issue_id: int, count: int) -> None:
    received = cluster.double.recipients()
    doubled = {a: n for a, n in received.items() if n > 1}
    assert doubled == {}, f"{len(doubled)} got it more than once"
    expected = {f"reader{i}@example.com" for i in range(1, count + 1)}
    assert set(received) == expected, f"{len(expected - set(received))} missing"
    assert cluster.deliveries(issue_id) == {"sent": count}


def test_ten_thousand_subscribers_get_the_issue_exactly_once(
    database_url: str, broker: str, double: Double, tmp_path: Path, clusters: list[Cluster]
) -> None:
    seed_subscribers(database_url, 10_000)
    cluster = make(tmp_path, database_url, broker, double, batch_size=500)
    clusters.append(cluster)
    cluster.worker("w1", concurrency=2)
    cluster.beat()
    issue_id = create_issue(cluster)
    cluster.run("issue", "schedule", str(issue_id), "--at", "now")
    finish(cluster, issue_id)
    assert_exactly_once(cluster, issue_id, 10_000)
    shown = cluster.run("issue", "show", str(issue_id))
    assert "recipients 10,000: sent 10,000, failed 0, skipped 0, queued 0" in shown
    assert "batches    sent 20" in shown


def test_a_worker_killed_mid_send_loses_and_doubles_nobody(
    sqlite_url: str, broker: str, double: Double, tmp_path: Path, clusters: list[Cluster]
) -> None:
    seed_subscribers(sqlite_url, 3000)
    cluster = make(
        tmp_path,
        sqlite_url,
        broker,
        double,
        provider="mailgun",
        batch_size=100,
        lease_seconds=4,
        retry_attempts=4,
    )
    clusters.append(cluster)
    double.faults({"kind": "slow", "delay": 0.3})
    victim = cluster.start(
        "victim",
        "worker",
        "--concurrency",
        "1",
        "--hostname",
        "victim@%h",
        "--loglevel",
        "WARNING",
        new_session=True,
    )
    cluster.beat()
    issue_id = create_issue(cluster)
    cluster.run("issue", "schedule", str(issue_id), "--at", "now")
    # The victim works alone until it has sent a few batches and holds one mid-request
    # (each call takes 0.3 s at the double; the rest of a batch, a few milliseconds).
    wait_for(lambda: cluster.deliveries(issue_id).get("sent", 0) >= 300, 60, "some batches")
    wait_for(
        lambda: "sending" in _open_batches(cluster, issue_id), 30, "a batch in flight", every=0.01
    )
    os.killpg(victim.pid, signal.SIGKILL)  # the worker and its pool, mid-request
    cluster.procs.pop("victim").wait()
    cluster.worker("w2", concurrency=1)
    try:
        wait_for(lambda: _open_batches(cluster, issue_id) == {"ambiguous"}, 60, "the sweep")
    except AssertionError:
        print(_open_batches(cluster, issue_id), cluster.run("status"), cluster.logs())
        raise
    status = cluster.run("status")
    assert "ambiguous batch(es)" in status
    assert cluster.issue_status(issue_id) == "sending"  # not sent while unsettled
    double.faults()
    out = cluster.run("issue", "reconcile", str(issue_id))
    assert "confirmed sent" in out
    finish(cluster, issue_id)
    assert_exactly_once(cluster, issue_id, 3000)


def _open_batches(cluster: Cluster, issue_id: int) -> set[str]:
    with cluster.engine.connect() as conn:
        return set(
            conn.scalars(
                sa.select(db.batches.c.status).where(
                    db.batches.c.issue_id == issue_id, db.batches.c.status != "sent"
                )
            )
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_server(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    wait_for(lambda: _ping(client), 10, "redis-server")
    client.close()
    return proc


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_redis_restarted_mid_send_loses_and_doubles_nobody(
    sqlite_url: str, double: Double, tmp_path: Path, clusters: list[Cluster]
) -> None:
    port = _free_port()
    server = _redis_server(port, tmp_path)
    try:
        seed_subscribers(sqlite_url, 3000)
        cluster = make(tmp_path, sqlite_url, f"redis://127.0.0.1:{port}/0", double, batch_size=100)
        clusters.append(cluster)
        double.faults({"kind": "slow", "delay": 0.1})
        cluster.worker("w1", concurrency=2)
        cluster.beat()
        issue_id = create_issue(cluster)
        cluster.run("issue", "schedule", str(issue_id), "--at", "now")
        wait_for(lambda: cluster.deliveries(issue_id).get("sent", 0) >= 500, 60, "some batches")
        server.kill()  # every queued message is lost with it (no persistence)
        server.wait()
        time.sleep(1.5)  # what is tested: the workers ride out a broker that is down
        server = _redis_server(port, tmp_path)
        double.faults()
        finish(cluster, issue_id, timeout=120)
        assert_exactly_once(cluster, issue_id, 3000)
    finally:
        for cluster in clusters:
            cluster.close()
        clusters.clear()
        server.kill()
        server.wait()


def test_a_storm_of_429_and_500_answers(
    sqlite_url: str, broker: str, double: Double, tmp_path: Path, clusters: list[Cluster]
) -> None:
    seed_subscribers(sqlite_url, 3000)
    cluster = make(tmp_path, sqlite_url, broker, double, batch_size=50)
    clusters.append(cluster)
    # about 30% of calls: 15% throttled (with each provider's hint), 15% of the rest 500
    double.faults(
        {"kind": "throttle", "rate": 0.15, "retry_after": 0.2},
        {"kind": "error", "rate": 0.18, "status": 500},
        seed=5,
    )
    cluster.worker("w1", concurrency=2)
    cluster.beat()
    issue_id = create_issue(cluster)
    cluster.run("issue", "schedule", str(issue_id), "--at", "now")
    finish(cluster, issue_id)
    assert_exactly_once(cluster, issue_id, 3000)
    statuses = double.stats()["statuses"]
    assert statuses.get("429", 0) >= 5 and statuses.get("500", 0) >= 5, statuses


def test_two_beats_start_a_scheduled_issue_once_and_on_time(
    sqlite_url: str, broker: str, double: Double, tmp_path: Path, clusters: list[Cluster]
) -> None:
    seed_subscribers(sqlite_url, 1000)
    cluster = make(tmp_path, sqlite_url, broker, double, batch_size=100)
    clusters.append(cluster)
    cluster.worker("w1", concurrency=2)
    cluster.beat("beat1")
    cluster.beat("beat2")
    issue_id = create_issue(cluster)
    at = time.time() + 4
    cluster.run(
        "issue",
        "schedule",
        str(issue_id),
        "--at",
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)),
        "--tz",
        "UTC",
    )
    time.sleep(max(at - time.time() - 1.5, 0))  # until just before the issue is due
    assert cluster.issue_status(issue_id) == "scheduled"
    assert double.stats()["accepted"] == 0
    finish(cluster, issue_id)
    assert_exactly_once(cluster, issue_id, 1000)
    started = [e for e in issues.events(cluster.engine, issue_id, 50) if "started" in e["message"]]
    assert len(started) == 1


def test_pause_and_resume_pick_up_where_the_send_stopped(
    sqlite_url: str, broker: str, double: Double, tmp_path: Path, clusters: list[Cluster]
) -> None:
    seed_subscribers(sqlite_url, 3000)
    cluster = make(tmp_path, sqlite_url, broker, double, batch_size=100)
    clusters.append(cluster)
    double.faults({"kind": "slow", "delay": 0.2})
    cluster.worker("w1", concurrency=2)
    cluster.beat()
    issue_id = create_issue(cluster)
    cluster.run("issue", "schedule", str(issue_id), "--at", "now")
    wait_for(lambda: cluster.deliveries(issue_id).get("sent", 0) >= 300, 60, "some batches")
    cluster.run("issue", "pause", str(issue_id))
    wait_for(
        lambda: issues.get(cluster.engine, issue_id).progress.batches.get("sending", 0) == 0,
        30,
        "the batches in flight to finish",
    )
    frozen = double.stats()["accepted"]
    time.sleep(2)  # what is measured: nothing more goes out while the issue is paused
    assert double.stats()["accepted"] == frozen < 3000
    assert cluster.issue_status(issue_id) == "paused"
    double.faults()
    cluster.run("issue", "resume", str(issue_id))
    finish(cluster, issue_id)
    assert_exactly_once(cluster, issue_id, 3000)


def test_a_subscriber_who_unsubscribes_mid_send_gets_nothing_more(
    sqlite_url: str, broker: str, double: Double, tmp_path: Path, clusters: list[Cluster]
) -> None:
    seed_subscribers(sqlite_url, 2000)
    cluster = make(tmp_path, sqlite_url, broker, double, batch_size=100)
    clusters.append(cluster)
    double.faults({"kind": "slow", "delay": 0.3})
    cluster.worker("w1", concurrency=1)
    cluster.beat()
    issue_id = create_issue(cluster)
    cluster.run("issue", "schedule", str(issue_id), "--at", "now")
    wait_for(lambda: cluster.deliveries(issue_id).get("sent", 0) >= 100, 60, "the first batch")
    leaving = [1990, 1995, 2000]  # in the last batch
    for sid in leaving:
        changes.update(
            cluster.engine, sid, changes.Change(status="unsubscribed"), via=changes.ADMIN_API
        )
    late = subscribers.add(cluster.engine, "late@example.com", lists=["main"], status="active")
    double.faults()
    finish(cluster, issue_id)
    received = double.recipients()
    assert all(n == 1 for n in received.values())
    assert len(received) == 1997
    assert not {f"reader{i}@example.com" for i in leaving} & set(received)
    assert "late@example.com" not in received  # the audience was fixed when the send started
    assert cluster.deliveries(issue_id) == {"sent": 1997, "skipped": 3}
    assert late > 2000
