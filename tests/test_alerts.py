"""The operators' alerts and dashboards (``deploy/``), checked with the real tools.

- ``promtool`` (Debian's prometheus package; ``scripts/services`` installs it) checks the
  rules, runs their unit tests (``deploy/prometheus/alerts_test.yml``), checks the
  Prometheus configuration, and lints the live output of ``letterpress metrics``: the real
  command in its own process, on a free loopback port, against SQLite and PostgreSQL with
  issues really sending. Without promtool these tests are skipped, except in CI
  (``CI=true``), where they fail.
- The metrics keep their identity: the same series, scrape after scrape, while an issue
  is paused and cancelled, and counts that are 0 are written as 0.
- A webhook request refused for its signature, sent to the real service, is counted in
  the metrics.
- A real Prometheus (the same package's server, on a free port) scrapes the live metrics
  and fires the alerts on an issue made to stall, fail and go ambiguous, and on refused
  webhook signatures: the rules match the series as they are really labelled.
- Every query of the Grafana dashboard and of the alerts is valid PromQL (promtool parses
  it) and names only series that exist: Letterpress's from a live scrape, the Celery
  exporter's from ``tests/specs/celery-exporter-metrics.txt``.
- The Compose services, the Prometheus configuration and Grafana's provisioning agree
  on ports, paths and names (read, not run: CI has no Docker engine).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipeline.audience import webhook_failures
from pipeline.ops.metrics import SERIES_AFTER_END
from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef
from pipeline.sending.parts import SendingParts
from pipeline.sending.prepare import prepare
from pipeline.settings import load_settings
from pipeline.statuses import BatchStatus, IssueStatus, SubscriberStatus
from pipeline.store import db
from pipeline.store.keys import Keys
from tests.cluster import SECRET, seed_subscribers
from tests.conftest import CONTENT, SEEDS, postgres_database
from tests.service import POSTMARK_USER, free_port, running_service

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "letterpress.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "letterpress.yml"
CELERY_EXPORTER_METRICS = Path(__file__).resolve().parent / "specs" / "celery-exporter-metrics.txt"
COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}  # series Prometheus itself writes

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- promtool ------------------------------------------------------------------------------


def promtool() -> str:
    found = shutil.which("promtool")
    if found is not None:
        return found
    why = "promtool is not installed (Debian's prometheus package: scripts/services installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(why)
    pytest.skip(why)


def run_promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [promtool(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{output}"
    return output


def test_the_alert_rules_are_valid() -> None:
    output = run_promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert "SUCCESS: 6 rules found" in output, output


def test_each_alert_fires_when_it_should_and_not_otherwise() -> None:
    output = run_promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert "SUCCESS" in output, output
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts_test.yml").read_text()))
    assert tested == set(alert_rules()), "every alert has unit tests, and only alerts that exist"


def test_the_prometheus_configuration_is_valid() -> None:
    output = run_promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert "SUCCESS: 6 rules found" in output, output  # alerts.yml is found beside it


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    text = (PROMETHEUS / "alerts.yml").read_text()
    broken.write_text(
        text.replace("letterpress_ambiguous_batches > 0", "letterpress_ambiguous_batches >")
    )
    result = subprocess.run(
        [promtool(), "check", "rules", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0


def alert_rules() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return {rule["alert"]: rule for group in document["groups"] for rule in group["rules"]}


def test_every_alert_tells_the_operator_what_to_do() -> None:
    readme = (REPO / "README.md").read_text()
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        assert len(rule["annotations"]["description"]) > 100, name
        assert f"`{name}`" in readme, f"{name} has no runbook entry in README.md"


# --- `letterpress metrics`, live -------------------------------------------------------------


@dataclass
class Live:
    port: int
    database_url: str
    redis_url: str
    tmp: Path
    parts: SendingParts
    proc: subprocess.Popen[bytes]
    log: Path
    first: str = ""  # the first scrape, with an issue sending

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def scrape(self) -> str:
        answer = requests.get(self.url, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain")
        return answer.text

    def series(self) -> Series:
        return parse(self.scrape())

    def started_issue(self) -> int:
        """An issue sending to the module's 100 subscribers: one batch of 40 sent, two
        waiting."""
        rt = self.parts
        issue_id = issues.create(rt.engine, subject="Alerts", articles=[ArticleRef(SEEDS[0], True)])
        issues.schedule(rt.engine, issue_id, None)
        assert issue_id in issues.claim_due(rt.engine, timedelta(hours=6))
        batches = prepare(rt.engine, rt.settings, rt.catalog(), issue_id, 40)
        assert rt.sender.send_batch(batches[0]).status == "sent"
        return issue_id


def parse(text: str) -> Series:
    found: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(series: Series, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in series, f"no {name}{labels} in the scrape"
    return series[key]


def of_issue(series: Series, issue_id: int) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return {key for key in series if ("issue", str(issue_id)) in key[1]}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[Live]:
    """`letterpress metrics` in its own process, on a database with 100 subscribers and
    an issue sending, and Redis (no worker answers there)."""
    tmp = tmp_path_factory.mktemp(f"alerts-{request.param}")
    with (
        postgres_database("alerts")
        if request.param == "postgresql"
        else _sqlite(tmp / "letterpress.db")
    ) as database_url:
        db.upgrade(database_url)
        seed_subscribers(database_url, 100)
        port = free_port()
        prefix = f"lp-alerts-{port}"
        config = tmp / "letterpress.toml"
        values = {
            "redis_prefix": prefix,
            "postal_address": "1 Test Street, Testville",
            "base_url": "https://news.example.org",
        }
        config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
        settings = load_settings(
            config,
            database_url=database_url,
            redis_url=redis_url,
            content_dir=CONTENT,
            secret_key=SECRET,
            outbox_dir=tmp / "outbox",
            send_rate=1e5,
        )
        parts = SendingParts(settings)
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "LETTERPRESS_CONFIG": str(config),
            "LETTERPRESS_SECRET_KEY": SECRET,
        }
        log = tmp / "metrics.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "workers", "metrics", "--port", str(port)],
                env=env,
                cwd=tmp,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        running = Live(port, database_url, redis_url, tmp, parts, proc, log)
        try:
            _wait_until_serving(running)
            running.started_issue()
            running.first = running.scrape()
            yield running
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            parts.close()


class _sqlite:
    """A SQLite database URL, as a context manager like ``postgres_database``."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:///{path}"

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        return None


def _wait_until_serving(running: Live) -> None:
    deadline = time.monotonic() + 30
    while True:
        if running.proc.poll() is not None:
            pytest.fail(f"letterpress metrics exited:\n{running.log.read_text()}")
        try:  # listening is enough: the first scrape follows (each pings the workers)
            socket.create_connection(("127.0.0.1", running.port), timeout=1).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"letterpress metrics did not answer:\n{running.log.read_text()}")
        time.sleep(0.1)


def test_promtool_passes_on_live_metrics(live: Live) -> None:
    body = live.first
    run_promtool("check", "metrics", stdin=body)
    assert "letterpress_issue_sent{" in body  # an issue is sending: its series are there
    assert "# TYPE letterpress_webhook_signature_failures_total counter" in body


def test_promtool_check_metrics_finds_lint_problems() -> None:
    bad = "# HELP requests Requests.\n# TYPE requests counter\nrequests 1.0\n"
    result = subprocess.run(
        [promtool(), "check", "metrics"], input=bad, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "_total" in result.stdout + result.stderr


def test_series_keep_their_identity_and_zeros_are_written(live: Live) -> None:
    issue_id = live.started_issue()
    engine = live.parts.engine
    sending = live.series()
    mine = of_issue(sending, issue_id)

    # Zeros are written, not left out.
    for state in IssueStatus:
        expected = 1.0 if state == IssueStatus.SENDING else 0.0
        assert value(sending, "letterpress_issue_status", issue=str(issue_id), status=state) == (
            expected
        )
        value(sending, "letterpress_issues", status=state)
    assert value(sending, "letterpress_issues", status=IssueStatus.FAILED) == 0
    for batch_status, n in {
        BatchStatus.SENT: 1,
        BatchStatus.PENDING: 2,
        BatchStatus.AMBIGUOUS: 0,
    }.items():
        assert (
            value(sending, "letterpress_issue_batches", issue=str(issue_id), status=batch_status)
            == n
        )
    for kind in SubscriberStatus:
        value(sending, "letterpress_subscribers", status=kind)
    assert value(sending, "letterpress_subscribers", status=SubscriberStatus.BOUNCED) == 0
    assert value(sending, "letterpress_subscribers", status=SubscriberStatus.ACTIVE) == 100
    value(sending, "letterpress_ambiguous_batches")  # 0 unless another test made one
    assert value(sending, "letterpress_workers_online") == 0
    assert value(sending, "letterpress_issue_failed", issue=str(issue_id)) == 0
    assert value(sending, "letterpress_issue_failure_ratio", issue=str(issue_id)) == 0
    queue = Keys(live.parts.settings.redis_prefix).work_queue
    assert value(sending, "letterpress_queue_messages", queue=queue, priority="0") == 0
    last = value(sending, "letterpress_issue_last_progress_timestamp_seconds", issue=str(issue_id))
    assert time.time() - 60 < last <= time.time()

    issues.pause(engine, issue_id)
    paused = live.series()
    issues.cancel(engine, issue_id)
    cancelled = live.series()

    assert set(paused) == set(sending)
    assert set(cancelled) == set(sending)
    assert value(paused, "letterpress_issue_status", issue=str(issue_id), status="paused") == 1
    assert value(paused, "letterpress_issue_status", issue=str(issue_id), status="sending") == 0
    assert (
        value(cancelled, "letterpress_issue_status", issue=str(issue_id), status="cancelled") == 1
    )
    assert value(cancelled, "letterpress_issue_seconds_left", issue=str(issue_id)) == 0

    # A day after it ended, the issue leaves the metrics; nothing else changes.
    with engine.begin() as conn:
        conn.execute(
            sa.update(db.issues)
            .where(db.issues.c.id == issue_id)
            .values(updated_at=db.now() - SERIES_AFTER_END - timedelta(minutes=1))
        )
    # And a refused signature counted (by the service: test below) is read here, from
    # the database: a counter that only grows, with the same series.
    webhook_failures.count(engine, "sendgrid")
    later = live.series()
    assert of_issue(later, issue_id) == set()
    assert set(later) == set(sending) - mine
    name = "letterpress_webhook_signature_failures_total"
    assert value(later, name, provider="sendgrid") == value(sending, name, provider="sendgrid") + 1


@pytest.mark.parametrize("live", ["sqlite"], indirect=True)  # the counting SQL: both, above
def test_a_refused_webhook_signature_is_counted(live: Live) -> None:
    before = live.series()
    with running_service(live.tmp, live.database_url, live.redis_url) as svc:
        forged = {
            "signature": {
                "timestamp": str(int(time.time())),
                "token": "a" * 50,
                "signature": "0" * 64,
            },
            "event-data": {},
        }
        assert (
            requests.post(f"{svc.url}/webhooks/mailgun", json=forged, timeout=10).status_code == 403
        )
        unsigned = requests.post(f"{svc.url}/webhooks/mailgun", json={"event-data": {}}, timeout=10)
        assert unsigned.status_code == 401
        # Refused for its body, not its signature: not counted.
        assert (
            requests.post(f"{svc.url}/webhooks/mailgun", data=b"{", timeout=10).status_code == 400
        )
        wrong = requests.post(
            f"{svc.url}/webhooks/postmark", json={}, auth=(POSTMARK_USER, "wrong"), timeout=10
        )
        assert wrong.status_code == 401
    after = live.series()

    name = "letterpress_webhook_signature_failures_total"
    for provider, more in {"mailgun": 2, "postmark": 1, "sendgrid": 0}.items():
        assert (
            value(after, name, provider=provider) == value(before, name, provider=provider) + more
        )


# --- the alerts, evaluated by a real Prometheus on the live series --------------------------


def prometheus_server() -> str:
    found = shutil.which("prometheus")
    if found is not None:
        return found
    why = "prometheus is not installed (Debian's prometheus package: scripts/services installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.mark.parametrize("live", ["sqlite"], indirect=True)  # the SQL is tested on both above
def test_the_alerts_fire_on_live_series(live: Live, tmp_path: Path) -> None:
    """Prometheus scrapes the live `letterpress metrics` and evaluates alerts.yml: the
    rules match the series as they are really labelled, not only as the unit tests
    write them."""
    engine = live.parts.engine
    issue_id = live.started_issue()  # 1 batch sent, 2 waiting
    long_ago = db.now() - timedelta(minutes=20)
    b, i = db.batches.c, db.issues.c
    with engine.begin() as conn:  # stalled for 20 minutes, 60 of 100 failed, one ambiguous
        conn.execute(
            sa.update(db.batches).where(b.issue_id == issue_id).values(updated_at=long_ago)
        )
        ambiguous = conn.scalar(
            sa.select(sa.func.max(b.id)).where(b.issue_id == issue_id, b.status == "pending")
        )
        conn.execute(sa.update(db.batches).where(b.id == ambiguous).values(status="ambiguous"))
        conn.execute(
            sa.update(db.issues)
            .where(i.id == issue_id)
            .values(started_at=long_ago, updated_at=long_ago, sent=40, failed=60)
        )
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "2s",
                    "scrape_timeout": "2s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(PROMETHEUS / "alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "letterpress",
                        "static_configs": [{"targets": [f"127.0.0.1:{live.port}"]}],
                    }
                ],
            }
        )
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    with (tmp_path / "prometheus.log").open("wb") as out:
        server = subprocess.Popen(
            [
                prometheus_server(),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def ask(path: str, **params: str) -> Any:
        try:
            answer = requests.get(f"{api}/{path}", params=params, timeout=5)
        except requests.ConnectionError:
            return None
        return answer.json()["data"] if answer.status_code == 200 else None

    def wait(what: str, found: Any) -> Any:
        deadline = time.monotonic() + 30
        while not (result := found()):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what}:\n{(tmp_path / 'prometheus.log').read_text()[-3000:]}")
            time.sleep(0.2)
        return result

    try:
        wait(
            "Prometheus did not scrape letterpress metrics",
            lambda: (r := ask("query", query='up{job="letterpress"} == 1')) and r["result"],
        )
        for _ in range(7):  # refused signatures, as the service counts them
            webhook_failures.count(engine, "mailgun")
        expected = {
            ("LetterpressSendStalled", "firing", str(issue_id)),
            ("LetterpressErrorRateOverThreshold", "firing", str(issue_id)),
            ("LetterpressAmbiguousBatches", "firing", ""),
            ("LetterpressNoWorkerOnline", "pending", ""),  # for 2 minutes first
            ("LetterpressWebhookSignatureFailures", "firing", ""),
        }

        def alerts() -> set[tuple[str, str, str]] | None:
            data = ask("alerts")
            found = {
                (a["labels"]["alertname"], a["state"], a["labels"].get("issue", ""))
                for a in (data or {}).get("alerts", [])
            }
            return found if found >= expected else None

        assert wait("the alerts did not fire", alerts) == expected
    finally:
        server.terminate()
        server.wait(timeout=10)


# --- the dashboard and the alerts name series that exist ------------------------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
PROMQL_WORDS |= {"unless", "bool", "offset", "inf", "nan"}
IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression reads: its identifiers that are not functions,
    keywords, label names (in braces or in by/on lists), strings or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function
        if match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, name) (rate(celery_task_runtime_bucket{a="x y"}[5m])))'
        " / on (job, instance) group_left letterpress_error_threshold"
        " and on (issue) time() - ts_seconds offset 5m > 1e3 unless bool up"
    )
    assert metric_names(expr) == {
        "celery_task_runtime_bucket",
        "letterpress_error_threshold",
        "ts_seconds",
        "up",
    }


def dashboard_panels() -> list[dict[str, Any]]:
    document = json.loads(DASHBOARD.read_text())
    panels = []
    for panel in document["panels"]:
        panels.extend(panel.get("panels", []))
        if panel["type"] != "row":
            panels.append(panel)
    return panels


def known_series(live: Live) -> set[str]:
    letterpress = {name for name, _ in parse(live.first)}
    celery = {
        line.strip()
        for line in CELERY_EXPORTER_METRICS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    return letterpress | celery | PROMETHEUS_OWN


def test_dashboard_and_alert_queries_name_series_that_exist(live: Live, tmp_path: Path) -> None:
    known = known_series(live)
    queries = {
        f"panel {panel['title']!r}": target["expr"]
        for panel in dashboard_panels()
        for target in panel["targets"]
    }
    queries |= {f"alert {name}": rule["expr"] for name, rule in alert_rules().items()}
    unknown = {where: sorted(metric_names(q) - known) for where, q in queries.items()}
    assert {where: names for where, names in unknown.items() if names} == {}

    # Every query parses: promtool reads each as a recording rule.
    rules = {
        "groups": [
            {
                "name": "queries",
                "rules": [
                    {"record": f"query:{i}", "expr": q.replace("$__rate_interval", "1m")}
                    for i, q in enumerate(queries.values())
                ],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    run_promtool("check", "rules", str(tmp_path / "queries.yml"))


def test_the_dashboard_shows_what_operators_watch() -> None:
    panels = dashboard_panels()
    used = set().union(*(metric_names(t["expr"]) for p in panels for t in p["targets"]))
    assert {
        "letterpress_queue_messages",  # queue depths
        "letterpress_workers_online",  # workers
        "celery_worker_up",
        "letterpress_issue_sent",  # progress and rate
        "letterpress_issue_rate",
        "letterpress_issue_failure_ratio",  # failures
        "celery_task_failed_total",
        "letterpress_ambiguous_batches",
        "letterpress_webhook_signature_failures_total",
        "letterpress_subscribers",  # subscribers by status
    } <= used
    source = datasource()
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]
        for item in (panel, *panel["targets"]):
            assert item["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel[
                "title"
            ]
    ids = [panel["id"] for panel in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


# --- Compose, Prometheus and Grafana agree ----------------------------------------------------


def datasource() -> dict[str, Any]:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert isinstance(source, dict)
    return source


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return services


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` in ``args``."""
    for index, arg in enumerate(args):
        if arg == name:
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def test_prometheus_scrapes_the_services_where_they_listen() -> None:
    services = compose_services()
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    metrics_args = argv(services["metrics"]["command"])
    assert metrics_args[:2] == ["letterpress", "metrics"]
    assert option(metrics_args, "--host") == "0.0.0.0"
    exporter_args = argv(services["celery-exporter"]["command"])
    listening = {
        "metrics": option(metrics_args, "--port"),
        "celery-exporter": option(exporter_args, "--port") or "9808",  # its default
    }
    assert targets == {
        "letterpress": [f"metrics:{listening['metrics']}"],
        "celery": [f"celery-exporter:{listening['celery-exporter']}"],
    }
    for name, port in listening.items():
        assert f"127.0.0.1:{port}/" in " ".join(argv(services[name]["healthcheck"]["test"])), name

    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config_file = option(argv(prometheus["command"]), "--config.file")
    assert config_file == "/etc/prometheus/prometheus.yml"
    assert config["rule_files"] == ["alerts.yml"]  # beside it, in the same mount


def test_the_celery_exporter_watches_letterpress_queues() -> None:
    services = compose_services()
    env = yaml.safe_load(COMPOSE_FILE.read_text())["x-letterpress-env"]
    args = argv(services["celery-exporter"]["command"])
    assert option(args, "--broker-url") == env["REDIS_URL"]
    keys = Keys(load_settings(None).redis_prefix)  # the default prefix, as in Compose
    assert "LETTERPRESS_REDIS_PREFIX" not in env
    queues = option(args, "--queues")
    assert queues is not None and queues.split(",") == [keys.work_queue, keys.control_queue]
    assert option(args, "--default-queue-name") == keys.work_queue


def test_grafana_is_provisioned_from_the_repository() -> None:
    grafana = compose_services()["grafana"]
    env, volumes = grafana["environment"], grafana["volumes"]
    # Every variable the provisioning files read is set, and points at what is mounted.
    for path in (DATASOURCES, PROVIDERS):
        for name in re.findall(r"\$\{?([A-Z_]+)\}?", path.read_text()):
            assert name in env, f"{path.name} reads ${name}, which Compose does not set"
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in volumes if v.startswith("./"))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./deploy/grafana/dashboards"] == env["LETTERPRESS_DASHBOARDS"]
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["options"]["path"] == "$LETTERPRESS_DASHBOARDS"
    source = datasource()
    assert source["url"] == "$PROMETHEUS_URL"
    assert env["PROMETHEUS_URL"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in compose_services()["prometheus"]["ports"]
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
