"""Import and export in the console (/admin/imports) against the real service
(``letterpress serve`` in its own process) without Redis, so the service imports the
uploaded files itself, after its answer: a CSV file with bad rows is uploaded and its
report lists them by line; the same file uploaded again, and then given to
``letterpress subscribers import``, changes nothing; the export is the CLI's file; a
running import stops when asked, and one whose worker died says so and imports again;
other roles, forged forms and bad files are refused, and nothing is kept of them.

The import with a worker process, in a browser, is tests/test_browser_console_imports.py.
"""

from __future__ import annotations

import html
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from pipeline.audience import exports, importjobs
from pipeline.people import audit, users
from pipeline.statuses import Role
from pipeline.store import db
from tests.conftest import CONTENT
from tests.service import SECRET, RunningService, running_service
from tests.test_console import Console, add_user, text_of
from tests.test_console import alerts as escaped_alerts

MAX_BYTES = 4_000_000

# Five good rows (one on a list, one unsubscribed) and three bad: an address that is not
# one, a repeated address, an unknown status.
GOOD_AND_BAD = (
    b"email,name,status,lists,plan\n"
    b"ann@example.com,Ann,,main,gold\n"
    b"bob@example.com,Bob,,,\n"
    b"not-an-address,Nobody,,,\n"
    b"cy@example.com,Cy,unsubscribed,,\n"
    b"ANN@example.com,Ann again,,,\n"
    b"dee@example.com,Dee,,main,silver\n"
    b"eve@example.com,Eve,sleepy,,\n"
    b"fay@example.com,Fay,,,\n"
)


@pytest.fixture
def service(tmp_path: Path, database_url: str) -> Iterator[RunningService]:
    settings = {
        "content_dir": str(CONTENT),
        "data_dir": str(tmp_path / "data"),
        "import_max_bytes": MAX_BYTES,
    }
    with running_service(tmp_path, database_url, None, settings=settings) as svc:
        yield svc


@pytest.fixture(scope="module")
def sqlite_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """One service for the tests that need no PostgreSQL twin."""
    tmp = tmp_path_factory.mktemp("imports")
    settings = {
        "content_dir": str(CONTENT),
        "data_dir": str(tmp / "data"),
        "import_max_bytes": MAX_BYTES,
    }
    with running_service(tmp, f"sqlite:///{tmp / 'module.db'}", None, settings=settings) as svc:
        yield svc


def operator(svc: RunningService) -> Console:
    if users.by_email(svc.engine, "opal@example.com") is None:
        add_user(svc, "opal@example.com", Role.OPERATOR)
    return Console(svc).signed_in("opal@example.com")


def upload(
    console: Console,
    content: bytes,
    name: str = "people.csv",
    list_name: str = "",
    token: str | None = "page",
    origin: str | None = "site",
) -> requests.Response:
    console.get("/admin/imports")
    data = {"list": list_name}
    if token is not None:
        data["csrf"] = console.page_token if token == "page" else token
    headers = {} if origin is None else {"Origin": console.svc.url if origin == "site" else origin}
    return console.http.post(
        console.svc.url + "/admin/imports",
        data=data,
        files={"file": (name, io.BytesIO(content), "text/csv")},
        headers=headers,
        timeout=30,
        allow_redirects=False,
    )


def alerts(answer: requests.Response) -> list[str]:
    return [html.unescape(text) for text in escaped_alerts(answer)]


def job_of(answer: requests.Response) -> int:
    assert answer.status_code == 303, answer.text
    found = re.fullmatch(r"/admin/imports/(\d+)", answer.headers["location"])
    assert found, answer.headers["location"]
    return int(found.group(1))


def ended(svc: RunningService, job_id: int, timeout: float = 20.0) -> importjobs.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = importjobs.get(svc.engine, job_id)
        if not job.active or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def bad_rows(html: str) -> list[tuple[str, str]]:
    table = html.split('id="bad-rows"', 1)[1].split("</table>", 1)[0]
    cells = text_of(table, r"<td>(.*?)</td>")
    return list(zip(cells[::2], cells[1::2], strict=True))


def cli(svc: RunningService, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``letterpress`` with the service's settings and database."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        DATABASE_URL=svc.engine.url.render_as_string(hide_password=False),
        LETTERPRESS_CONFIG=str(tmp / "service.toml"),
        LETTERPRESS_SECRET_KEY=SECRET,
    )
    return subprocess.run(
        [sys.executable, "-m", "workers", *args],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_import_with_bad_rows_reports_them_and_importing_again_changes_nothing(
    service: RunningService, tmp_path: Path
) -> None:
    console = operator(service)
    first = job_of(upload(console, GOOD_AND_BAD, list_name="imported"))
    job = ended(service, first)
    assert (job.status, job.new, job.problems) == ("done", 5, 3), job

    page = console.get(f"/admin/imports/{first}")
    assert page.status_code == 200
    assert "Done: imported 8 rows: 5 new, 0 updated, 0 unchanged; 3 bad rows." in page.text
    lines = bad_rows(page.text)
    assert [line for line, _ in lines] == ["4", "6", "8"]
    assert "not-an-address" in lines[0][1]
    assert "already on line 2" in lines[1][1]
    assert "sleepy" in lines[2][1]
    report = console.get(f"/admin/imports/{first}/bad-rows.csv")
    assert report.headers["content-disposition"].startswith("attachment")
    assert report.text.splitlines()[0] == "line,message"
    assert [r.split(",", 1)[0] for r in report.text.splitlines()[1:]] == ["4", "6", "8"]

    # The same file again: nothing new, nothing updated, the same bad rows.
    second = job_of(upload(console, GOOD_AND_BAD, list_name="imported"))
    again = ended(service, second)
    assert (again.status, again.new, again.updated, again.unchanged) == ("done", 0, 0, 4)
    assert again.kept == 1 and again.problems == 3  # cy stays unsubscribed
    # ... and the CLI, given the same file, agrees: it is the same import.
    csv_file = tmp_path / "people.csv"
    csv_file.write_bytes(GOOD_AND_BAD)
    done = cli(service, tmp_path, "subscribers", "import", str(csv_file), "--list", "imported")
    assert done.returncode == 1, done.stdout + done.stderr  # 1: there were bad rows
    assert (
        again.summary
        == "imported 8 rows: 0 new, 0 updated, 4 unchanged, 1 kept unsubscribed; 3 bad rows"
    )
    assert done.stdout == again.summary + "\n"
    assert done.stderr.count(f"{csv_file}:") == 3

    # The export is the CLI's file, of one list and one status.
    answer = console.post("/admin/imports/export", {"list": "main", "status": "active"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert 'filename="subscribers-main-active.csv"' in answer.headers["content-disposition"]
    expected = io.StringIO()
    assert exports.export_csv(service.engine, expected, list_name="main", status="active") == 2
    assert answer.text == expected.getvalue()
    assert [r.split(",", 1)[0] for r in answer.text.splitlines()[1:]] == [
        "ann@example.com",
        "dee@example.com",
    ]
    unknown = console.post("/admin/imports/export", {"list": "nope"})
    assert unknown.status_code == 400
    assert alerts(unknown) == ["Export: no list named 'nope'."]

    entries = [(e.user_email, e.action, e.detail) for e in audit.recent(service.engine)]
    assert ("opal@example.com", "exported", "subscribers of list main, status active") in entries
    imported = [e for e in entries if e[1] in ("import started", "imported")]
    assert [e[1] for e in imported] == ["imported", "import started"] * 2
    assert all(e[0] == "opal@example.com" for e in imported)
    assert f"import {first}: people.csv onto the list imported" in [e[2] for e in imported]


def test_a_stopped_or_interrupted_import_says_so_and_imports_again(
    sqlite_service: RunningService,
) -> None:
    svc = sqlite_service
    console = operator(svc)
    rows = 120_000  # five chunks of import_csv's 25,000 (under the test's 4 MB upload limit)
    content = "email,name\n" + "".join(f"r{i}@example.com,R {i}\n" for i in range(rows))
    job_id = job_of(upload(console, content.encode()))
    console.get(f"/admin/imports/{job_id}")
    stop = console.post(f"/admin/imports/{job_id}/stop")
    assert stop.status_code == 303, stop.text
    stopped = ended(svc, job_id)
    assert stopped.status == "stopped" and stopped.rows_done < rows, stopped
    page = console.get(f"/admin/imports/{job_id}")
    assert "Stopped after" in page.text and "re-imports are idempotent" in page.text

    # A worker that died mid-import leaves it running, with an old heartbeat.
    old = db.now() - timedelta(seconds=importjobs.STALE_SECONDS + 60)
    with svc.engine.begin() as conn:
        conn.execute(
            sa.update(db.import_jobs)
            .where(db.import_jobs.c.id == job_id)
            .values(status="running", heartbeat_at=old, finished_at=None)
        )
    page = console.get(f"/admin/imports/{job_id}")
    assert "Interrupted: nothing has been heard from the process importing it" in page.text
    assert "Stop the import" not in page.text
    again = console.post(f"/admin/imports/{job_id}/again")
    assert again.status_code == 303
    job = ended(svc, job_id)
    assert (job.status, job.new + job.unchanged, job.problems) == ("done", rows, 0), job
    assert job.unchanged == stopped.rows_done  # those the stopped import had written
    done_twice = console.post(f"/admin/imports/{job_id}/stop")
    assert done_twice.status_code == 409
    assert alerts(done_twice) == [f"Import {job_id} is done: there is nothing to stop."]
    actions = [e.action for e in audit.recent(svc.engine)]
    assert actions.count("import stop asked") == 1


def test_other_roles_forged_forms_and_bad_files_are_refused_and_nothing_is_kept(
    sqlite_service: RunningService,
) -> None:
    svc = sqlite_service
    jobs_before = importjobs.recent(svc.engine)
    kept_before = sorted((svc.settings.data_dir / "imports").glob("*"))
    entries_before = audit.count(svc.engine)
    add_user(svc, "eddie@example.com", Role.EDITOR)
    editor = Console(svc).signed_in("eddie@example.com")
    assert editor.get("/admin/imports").status_code == 403
    assert 'href="/admin/imports"' not in editor.get("/admin/").text
    editor.get("/admin/")
    assert upload(editor, GOOD_AND_BAD).status_code == 403
    assert editor.post("/admin/imports/export", {}).status_code == 403

    console = operator(svc)
    assert 'href="/admin/imports"' in console.get("/admin/").text
    assert upload(console, GOOD_AND_BAD, token=None).status_code == 403
    assert upload(console, GOOD_AND_BAD, token="guess").status_code == 403
    assert upload(console, GOOD_AND_BAD, origin="https://evil.example").status_code == 403
    assert console.post("/admin/imports/export", {}, token=None).status_code == 403

    def refused(content: bytes, name: str = "people.csv") -> tuple[int, list[str]]:
        answer = upload(console, content, name)
        return answer.status_code, alerts(answer)

    assert refused(b"") == (
        400,
        ["people.csv: the file is empty: the first row must name the columns, one of them email"],
    )
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    status, said = refused(png, "photo.png")
    assert status == 400 and said[0].startswith("photo.png:1: not UTF-8 (byte 0x89)"), said
    latin1 = "email,name\nzoe@example.com,Zoë\n".encode("latin-1")
    status, said = refused(latin1)
    assert status == 400 and said[0].startswith("people.csv:2: not UTF-8 (byte 0xeb)"), said
    status, said = refused(b"name,plan\nAnn,gold\n")
    assert status == 400
    assert said == [
        "people.csv:1: the header row has no email column (found: name, plan); the first"
        " row must name the columns, one of them email"
    ]
    status, said = refused(b"email,name\n" + b"x@example.com,X\n" * (MAX_BYTES // 16 + 1))
    assert status == 413 and said[0].startswith("people.csv is larger than 4,000,000 bytes")
    way_over = upload(console, b"email\n" + b"x" * (MAX_BYTES + 100_000))
    assert way_over.status_code == 413  # BodyLimit: before anything reads it
    empty_form = console.http.post(
        svc.url + "/admin/imports",
        data={"csrf": console.page_token},
        files={"file": ("", io.BytesIO(b""), "application/octet-stream")},
        headers={"Origin": svc.url},
        allow_redirects=False,
        timeout=10,
    )
    assert empty_form.status_code == 400
    assert alerts(empty_form) == ["Choose a CSV file to import: the form was sent without one."]

    assert importjobs.recent(svc.engine) == jobs_before
    assert sorted((svc.settings.data_dir / "imports").glob("*")) == kept_before
    since = audit.recent(svc.engine, audit.count(svc.engine) - entries_before)
    assert not [e for e in since if e.action.startswith("import")]
