"""An operator steers a send through a dead worker, in a real headless Chromium, against
everything a publisher runs: ``letterpress serve``, Redis, a SQLite database, two Celery
workers in processes of their own and Mailgun's API on the loopback provider double,
slowed so that each batch takes a while, which keeps every message and its events.

An issue is scheduled from the command line; the operator opens its batches and
watches them go. One worker is killed (SIGKILL) while the provider holds its batch: the
table, updating itself, shows that batch held by the dead worker (its name and pid, as
the lease recorded them) and then that the lease expired; the provider then drops the
connection on one call of the other worker, whose batch turns ambiguous. The operator
reconciles the first from Mailgun's events and settles the second as sent, each through
its confirmation; the other worker finishes the rest, and the double's messages prove
every subscriber got the issue exactly once. axe-core finds
nothing on the batches page and the confirmation pages at 1280 and 375 px.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, expect

from pipeline.people import users
from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef
from pipeline.statuses import Role
from pipeline.store import db
from tests.cluster import MAILGUN_KEY, Cluster, Double, seed_subscribers, wait_for
from tests.conftest import CONTENT, SEEDS
from tests.service import RunningService, with_workers
from tests.test_browser import browser
from tests.test_browser_console import (
    PASSWORD,
    AxeChecks,
    axe_script,
    csp_free_page,
    sign_in_by_keyboard,
)
from tests.test_browser_service import PHONE_WIDTH, watched

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser"]  # a fixture, imported for pytest

READERS = 120
SIZE = 20  # six batches
DELAY = 1.0  # seconds the double takes to answer each send, after recording it
LEASE = 4  # seconds: longer than a batch takes, short enough to watch run out
OPERATOR = "opal@example.com"


@pytest.fixture
def publisher(
    tmp_path: Path, sqlite_url: str, redis_url: str, redis_client: Any
) -> Iterator[tuple[RunningService, Cluster]]:
    """The service and two workers (no beat: nothing sweeps behind the operator's back),
    all sending through one Mailgun double."""
    double = Double(tmp_path / "double.log", keep_messages=True)
    sending = {
        "provider": "mailgun",
        "mailgun_base_url": double.url,
        "mailgun_domain": "mg.example.org",
        "sender_email": "newsletter@news.example.org",
        "content_dir": str(CONTENT),
        "batch_size": SIZE,
        "lease_seconds": LEASE,
        "retry_attempts": 2,
        "retry_max_seconds": 0.5,
    }
    env = {"MAILGUN_API_KEY": MAILGUN_KEY}
    service_settings = {"console_totp_roles": []}
    try:
        with with_workers(
            tmp_path, sqlite_url, redis_url, double, sending, service_settings, env
        ) as started:
            svc, cluster = started
            for name in ("w1", "w2"):  # one process each: the lease's pid is the worker's
                cluster.start(
                    name, "worker", "--pool", "solo", "--loglevel", "WARNING",
                    "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
                )  # fmt: skip
            yield svc, cluster
    finally:
        double.close()  # after the workers and the service have stopped


def leased(cluster: Cluster) -> list[Any]:
    b = db.batches.c
    with cluster.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(b.id, b.seq, b.first_id, b.lease_holder, b.lease_pid).where(
                    b.status == "sending"
                )
            )
        )


def held_by_the_provider(cluster: Cluster) -> Any:
    """A batch whose worker is inside the provider call: the double has its recipients."""
    kept = cluster.double.messages()
    for row in leased(cluster):
        if f"reader{row.first_id}@example.com" in kept:
            return row
    return None


def test_an_operator_reconciles_the_batch_of_a_killed_worker(
    publisher: tuple[RunningService, Cluster], browser: Browser, sqlite_url: str, tmp_path: Path
) -> None:
    svc, cluster = publisher
    seed_subscribers(sqlite_url, READERS)
    users.add(svc.engine, OPERATOR, Role.OPERATOR, PASSWORD, name="Opal Operator")
    issue_id = issues.create(
        svc.engine,
        subject="Vitamin K2, slowly",
        audience=("main",),
        articles=[ArticleRef(SEEDS[0], True), ArticleRef(SEEDS[1], False)],
    )
    cluster.double.faults({"kind": "slow", "provider": "mailgun", "delay": DELAY})

    with watched(browser, tmp_path) as seen, csp_free_page(browser, 1280) as checked:
        page = seen.page
        sign_in_by_keyboard(page, svc.url, OPERATOR)
        expect(page.get_by_text("Signed in as Opal Operator")).to_be_visible()
        sign_in(checked, svc)  # a second browser, for axe (it needs its script in the page)
        # The queue's routes exist once a worker is up: only then can the send start.
        wait_for(lambda: "workers:  2 online" in cluster.run("status"), 30, "both workers", 0.2)
        cluster.run("issue", "schedule", str(issue_id), "--at", "now")  # the workers start it
        page.goto(f"{svc.url}/admin/issues/{issue_id}")
        page.get_by_role("link", name=re.compile("^Its batches")).click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Batches of “Vitamin K2, slowly”")
        page.evaluate("() => { window.stillHere = true }")

        # A worker dies while the provider holds its batch.
        doomed = wait_for(
            lambda: held_by_the_provider(cluster), 30, "a batch at the provider", 0.02
        )
        name = doomed.lease_holder.split("@", 1)[0]
        pid = cluster.procs[name].pid
        assert doomed.lease_holder == f"{name}@{socket.gethostname()}" and doomed.lease_pid == pid
        cluster.stop(name, signal.SIGKILL)
        # And the provider drops the line on the next call of the other: that batch is
        # ambiguous (the double has its recipients, the worker never heard so).
        cluster.double.faults(
            {"kind": "slow", "provider": "mailgun", "delay": DELAY},
            {"kind": "drop", "provider": "mailgun", "count": 1},
        )

        # The table, updating itself, shows the batch held by the dead worker, then expired.
        row = page.locator(f"#batch-{doomed.id}")
        expect(row.locator(".lease")).to_contain_text(
            f"held by {doomed.lease_holder} pid {pid} until", timeout=10_000
        )
        expect(row.locator(".lease.expired")).to_contain_text(
            "expired", timeout=LEASE * 1000 + 5000
        )
        expect(row.locator(".status")).to_have_text("sending")
        dropped = page.locator('#batch-table tr[data-status="ambiguous"]')
        expect(dropped).to_have_count(1, timeout=15_000)
        assert page.evaluate("() => window.stillHere") is True, "the page was reloaded"
        unsure = int((dropped.get_attribute("id") or "").removeprefix("batch-"))

        check_pages_with_axe(checked, svc, issue_id, doomed.id, unsure, tmp_path)

        # Reconciled from Mailgun's events: all of its recipients were accepted.
        row.get_by_role("link", name=f"Reconcile batch {doomed.seq}").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(
            f"Reconcile batch {doomed.seq} (id {doomed.id}) of “Vitamin K2, slowly”?"
        )
        expect(page.locator(".does").first).to_contain_text(
            f"{SIZE} people in the delivery log ({SIZE} queued)"
        )
        expect(page.locator(".does").nth(1)).to_contain_text(
            f"Its lease was held by {doomed.lease_holder} pid {pid} until"
        )
        expect(page.locator(".does").nth(2)).to_contain_text(
            f"mailgun is asked which of the {SIZE} queued recipients it accepted"
        )
        page.get_by_role("button", name="Confirm: reconcile it").click()
        expect(page.get_by_role("status")).to_have_text(
            f"Batch id {doomed.id} reconciled from mailgun's records: {SIZE} counted as sent,"
            " 0 to send again."
        )
        expect(page.locator(f"#batch-{doomed.id} .status")).to_have_text("sent")

        # The dropped one, settled by choice: the double did take it, so "sent" is right.
        page.locator(f"#settle-{unsure}").click()
        expect(page.locator("#does-sent")).to_contain_text(f"The {SIZE} recipients still queued")
        page.get_by_role("button", name="Confirm: count them as sent").click()
        expect(page.get_by_role("status")).to_have_text(
            f"Batch id {unsure} settled: {SIZE} counted as sent, 0 to send again."
        )

        # The other worker sends the rest; the issue finishes with nobody lost or doubled.
        page.goto(f"{svc.url}/admin/issues/{issue_id}")
        expect(page.locator('#progress [data-status="sent"]')).to_be_visible(timeout=30_000)
        expect(page.locator("#n-sent")).to_have_text(str(READERS))
    kept = cluster.double.messages()
    readers = {a: len(m) for a, m in kept.items() if a.startswith("reader")}
    assert readers == {f"reader{i}@example.com": 1 for i in range(1, READERS + 1)}
    assert cluster.deliveries(issue_id) == {"sent": READERS}
    assert seen.problems() == []


def check_pages_with_axe(
    page: Page, svc: RunningService, issue_id: int, batch_id: int, unsure: int, tmp: Path
) -> None:
    """The batches page, the confirmations for the expired batch (one refused: it is
    not ambiguous, so it cannot be settled) and the settling of the ambiguous one pass
    axe at both widths."""
    axe = AxeChecks(axe_script(), tmp)
    base = f"{svc.url}/admin/issues/{issue_id}/batches"
    for width in (1280, PHONE_WIDTH):
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(base)
        expect(page.locator(f"#batch-{batch_id} .lease.expired")).to_be_visible()
        axe.check(page, "batches", width)
        for act in ("requeue", "reconcile", "settle"):
            page.goto(f"{base}/{batch_id}/{act}")
            axe.check(page, f"confirm-{act}", width)
        expect(page.get_by_role("alert")).to_contain_text("it cannot be settled now")
        page.goto(f"{base}/{unsure}/settle")
        expect(page.get_by_role("button", name="Confirm: send them again")).to_be_visible()
        axe.check(page, "confirm-settle-choice", width)
    assert axe.problems() == {}


def sign_in(page: Page, svc: RunningService) -> None:
    sign_in_by_keyboard(page, svc.url, OPERATOR)
    expect(page).to_have_url(svc.url + "/admin/")
