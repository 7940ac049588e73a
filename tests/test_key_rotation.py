"""Rotating LETTERPRESS_SECRET_KEY keeps the links in mail already delivered working,
through the real service: the old key moves to LETTERPRESS_PREVIOUS_SECRET_KEYS."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import requests

from tests.cluster import seed_subscribers
from tests.service import SECRET, RunningService, running_service
from tests.test_service import issue_mail, send_issue, service_for, status_of  # noqa: F401

NEW_KEY = "a-new-signing-key-after-rotation"


def test_unsubscribe_links_in_delivered_mail_survive_a_key_rotation(
    sqlite_url: str,
    service_for: Callable[..., RunningService],  # noqa: F811
    redis_url: str,
    tmp_path: Path,
) -> None:
    seed_subscribers(sqlite_url, 2)
    before = service_for(sqlite_url)
    issue_id, _, _ = send_issue(before)  # signed with SECRET
    headers = [
        str(issue_mail(before, issue_id, f"reader{n}@example.com")["List-Unsubscribe"])
        for n in (1, 2)
    ]
    paths = [re.findall(r"<(http[^>]+)>", h)[0].removeprefix(before.url) for h in headers]
    assert all(p.startswith("/unsubscribe/") for p in paths)
    rotated = {"LETTERPRESS_SECRET_KEY": NEW_KEY, "LETTERPRESS_PREVIOUS_SECRET_KEYS": SECRET}
    for folder in ("rotated", "dropped"):
        (tmp_path / folder).mkdir()
    with running_service(tmp_path / "rotated", sqlite_url, redis_url, env=rotated) as after:
        answer = requests.post(
            after.url + paths[0], data={"List-Unsubscribe": "One-Click"}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        assert status_of(after, "reader1@example.com") == "unsubscribed"
    dropped = {"LETTERPRESS_SECRET_KEY": NEW_KEY}
    with running_service(tmp_path / "dropped", sqlite_url, redis_url, env=dropped) as after:
        answer = requests.post(
            after.url + paths[1], data={"List-Unsubscribe": "One-Click"}, timeout=10
        )
        assert answer.status_code == 404
        assert status_of(after, "reader2@example.com") == "active"
