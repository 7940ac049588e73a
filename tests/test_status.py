"""What operators see: queue depths from the broker, progress, events, and /metrics."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from wsgiref.simple_server import WSGIServer, make_server

import pytest
import redis

from pipeline.ops import status
from pipeline.ops.metrics import registry
from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef
from pipeline.sending.parts import SendingParts
from pipeline.sending.prepare import prepare
from pipeline.settings import Settings
from pipeline.store import db
from tests.cluster import SECRET, seed_subscribers
from tests.conftest import CONTENT, SEEDS


def started_issue(rt: SendingParts) -> int:
    issue_id = issues.create(rt.engine, subject="Progress", articles=[ArticleRef(SEEDS[0], True)])
    issues.schedule(rt.engine, issue_id, None)
    issues.claim_due(rt.engine, timedelta(hours=6))
    batches = prepare(rt.engine, rt.settings, rt.catalog(), issue_id, 40)
    rt.sender.send_batch(batches[0])
    return issue_id


@pytest.fixture
def rt(
    sqlite_url: str, redis_url: str, make_settings: Callable[..., Settings], tmp_path
) -> SendingParts:
    seed_subscribers(sqlite_url, 100)
    settings = make_settings(
        database_url=sqlite_url,
        content_dir=CONTENT,
        secret_key=SECRET,
        redis_url=redis_url,
        redis_prefix="lpstatus",
        batch_size=40,
        outbox_dir=tmp_path / "outbox",
        send_rate=1e5,
    )
    return SendingParts(settings)


def test_queue_depths_count_priority_sub_queues_and_unacked(
    rt: SendingParts, redis_client: redis.Redis
) -> None:
    redis_client.rpush("lpstatus.default", "a", "b")
    redis_client.rpush("lpstatus.default\x06\x169", "c")
    redis_client.rpush("lpstatus.control", "d")
    redis_client.hset("unacked", mapping={"t1": "x", "t2": "y"})
    depths = status.queue_depths(redis_client, rt.settings)
    assert depths.waiting("lpstatus.default") == 3
    assert depths.waiting("lpstatus.control") == 1
    assert depths.unacked == 2


def test_the_report_shows_progress_and_events(rt: SendingParts, redis_client: redis.Redis) -> None:
    issue_id = started_issue(rt)
    report = status.gather(rt.engine, rt.settings, redis_client, workers=["w1@host"])
    text = "\n".join(status.format_report(report))
    assert f"#{issue_id} SENDING  Progress" in text
    assert "40.0%  queued 60  sent 40  failed 0  skipped 0" in text
    assert "workers:  1 online (w1@host)" in text
    assert "started: 100 recipients in 3 batches" in text


def test_a_broker_that_is_down_is_reported_not_fatal(rt: SendingParts) -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)
    report = status.gather(rt.engine, rt.settings, dead, workers=None)
    text = "\n".join(status.format_report(report))
    assert "broker unreachable" in text


def test_metrics_are_served_for_prometheus(rt: SendingParts, redis_client: redis.Redis) -> None:
    from prometheus_client import make_wsgi_app

    issue_id = started_issue(rt)
    rt.__dict__["redis"] = redis_client
    server: WSGIServer = make_server("127.0.0.1", 0, make_wsgi_app(registry(rt, lambda: ["w1"])))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert f'letterpress_issue_sent{{issue="{issue_id}"}} 40.0' in body
    assert f'letterpress_issue_recipients{{issue="{issue_id}"}} 100.0' in body
    assert f'letterpress_issue_status{{issue="{issue_id}",status="sending"}} 1.0' in body
    assert f'letterpress_issue_status{{issue="{issue_id}",status="paused"}} 0.0' in body
    assert f'letterpress_issue_batches{{issue="{issue_id}",status="pending"}} 2.0' in body
    assert "letterpress_workers_online 1.0" in body
    assert "letterpress_broker_up 1.0" in body
    assert db.current_revision(rt.settings.database_url) == db.head_revision()
