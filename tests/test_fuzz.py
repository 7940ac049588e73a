"""Every endpoint of the service, fuzzed from its own OpenAPI description (Schemathesis):
whatever arrives, the answer is never a 5xx.

The fuzzer runs as the command-line tool against the real service, with the admin
token, so the admin API is reached past its authentication as well as refused before.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster import seed_subscribers
from tests.service import ADMIN_TOKEN, RunningService
from tests.test_service import send_issue, service_for  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow


def _schemathesis() -> str:
    beside = Path(sys.executable).with_name("schemathesis")
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    assert found, "schemathesis is a test dependency: pip install -e '.[test]'"
    return found


@pytest.mark.parametrize("authenticated", [True, False], ids=["admin-token", "anonymous"])
def test_no_input_gets_a_server_error(
    sqlite_url: str,
    service_for: Callable[..., RunningService],  # noqa: F811
    tmp_path: Path,
    authenticated: bool,
) -> None:
    svc = service_for(sqlite_url)
    seed_subscribers(sqlite_url, 5)
    send_issue(svc)  # an issue with links, deliveries and a web version to find
    command = [
        _schemathesis(),
        "run",
        f"{svc.url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "40",
        "--seed",
        "20261121",
        "--request-timeout",
        "20",
        "--no-color",
        "--suppress-health-check",
        "all",
    ]
    if authenticated:
        command += ["--header", f"Authorization: Bearer {ADMIN_TOKEN}"]
    else:
        command += ["--include-path-regex", "^/api/admin"]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, f"{report}\n--- service log ---\n{svc.output()[-4000:]}"
    assert "Server error" not in run.stdout
