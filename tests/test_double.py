"""The provider double: a real HTTP server on loopback, spoken to over real sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from http.client import HTTPConnection
from typing import Any

import pytest
import requests

from letterpress_testing.faults import Fault
from letterpress_testing.parsing import parse_form
from letterpress_testing.server import DoubleServer
from tests.conftest import ROOT

MAILGUN_DOMAIN = "mg.example.org"


@pytest.fixture
def double() -> Iterator[DoubleServer]:
    with DoubleServer(keep_messages=True, keep_requests=True, seed=7) as server:
        yield server


@pytest.fixture
def web() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


# Requests as each provider's documentation shows them


def mailgun(
    web: requests.Session,
    double: DoubleServer,
    addresses: list[str],
    *,
    key: str | None = None,
    api_key: str | None = None,
    extra: list[tuple[str, str]] | None = None,
    timeout: float = 10,
) -> requests.Response:
    fields = [("from", "News <news@example.org>")]
    fields += [("to", f"Reader {i} <{a}>") for i, a in enumerate(addresses)]
    fields += [
        ("subject", "Hello %recipient.name%"),
        ("text", "Hi %recipient.name%, leave: %recipient.unsubscribe_url%\n"),
        ("html", "<p>Hi %recipient.name%</p>"),
        ("o:tag", "issue-1"),
        ("h:List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("h:List-Unsubscribe", "%recipient.h_list_unsubscribe%"),
        ("v:letterpress-batch", key or "batch-1"),
        ("v:letterpress-issue", "1"),
        (
            "recipient-variables",
            json.dumps(
                {
                    a: {
                        "name": f"Reader {i}",
                        "unsubscribe_url": f"https://news.example.org/u/{i}",
                        "h_list_unsubscribe": f"<https://news.example.org/u/{i}>",
                    }
                    for i, a in enumerate(addresses)
                }
            ),
        ),
        *(extra or []),
    ]
    headers = {"Idempotency-Key": key} if key else {}
    return web.post(
        f"{double.url}/v3/{MAILGUN_DOMAIN}/messages",
        files=[(name, (None, value)) for name, value in fields],
        auth=("api", api_key or double.mailgun_key),
        headers=headers,
        timeout=timeout,
    )


def sendgrid_body(addresses: list[str], **top: Any) -> dict[str, Any]:
    return {
        "personalizations": [
            {
                "to": [{"email": a, "name": f"Reader {i}"}],
                "substitutions": {"%%name%%": f"Reader {i}"},
                "headers": {"List-Unsubscribe": f"<https://news.example.org/u/{i}>"},
                "custom_args": {"letterpress_batch": "batch-1", "subscriber": str(i)},
            }
            for i, a in enumerate(addresses)
        ],
        "from": {"email": "news@example.org", "name": "News"},
        "subject": "Hello %%name%%",
        "content": [
            {"type": "text/plain", "value": "Hi %%name%%"},
            {"type": "text/html", "value": "<p>Hi %%name%%</p>"},
        ],
        "headers": {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        "categories": ["issue-1"],
        **top,
    }


def sendgrid(
    web: requests.Session,
    double: DoubleServer,
    body: dict[str, Any] | list[str],
    *,
    key: str | None = None,
    api_key: str | None = None,
) -> requests.Response:
    payload = sendgrid_body(body) if isinstance(body, list) else body
    headers = {"Authorization": f"Bearer {api_key or double.sendgrid_key}"}
    if key:
        headers["Idempotency-Key"] = key
    return web.post(f"{double.url}/v3/mail/send", json=payload, headers=headers, timeout=10)


def postmark_message(address: str, batch: str = "batch-1", **extra: Any) -> dict[str, Any]:
    return {
        "From": "News <news@example.org>",
        "To": address,
        "Subject": f"Hello {address}",
        "TextBody": "Hi",
        "HtmlBody": "<p>Hi</p>",
        "MessageStream": "broadcast",
        "Tag": "issue-1",
        "Headers": [{"Name": "List-Unsubscribe", "Value": f"<https://x.org/u/{address}>"}],
        "Metadata": {"letterpress-batch": batch, "letterpress-issue": "1"},
        **extra,
    }


def postmark(
    web: requests.Session,
    double: DoubleServer,
    messages: Sequence[dict[str, Any] | str],
    *,
    key: str | None = None,
    token: str | None = None,
) -> requests.Response:
    batch = [postmark_message(m) if isinstance(m, str) else m for m in messages]
    headers = {"X-Postmark-Server-Token": token or double.postmark_token}
    if key:
        headers["Idempotency-Key"] = key
    return web.post(f"{double.url}/email/batch", json=batch, headers=headers, timeout=10)


# Control endpoints


def test_health_stats_recipients_and_reset(double: DoubleServer, web: requests.Session) -> None:
    assert web.get(f"{double.url}/_double/health").json() == {"ok": True}
    assert mailgun(web, double, ["a@example.com", "B@example.com"]).status_code == 200
    assert sendgrid(web, double, ["a@example.com"]).status_code == 202
    stats = web.get(f"{double.url}/_double/stats").json()
    assert stats["accepted"] == 3
    assert stats["unique"] == 2
    assert stats["duplicates"] == 1
    assert stats["requests"] == 2
    assert stats["statuses"] == {"200": 1, "202": 1}
    assert stats["providers"] == {"mailgun": 2, "sendgrid": 1}
    assert stats == double.stats()
    recipients = web.get(f"{double.url}/_double/recipients").json()
    assert recipients == {"a@example.com": 2, "b@example.com": 1} == double.recipients()
    kept = web.get(f"{double.url}/_double/messages").json()
    assert kept["b@example.com"][0]["subject"] == "Hello Reader 1"

    assert web.post(f"{double.url}/_double/reset").json() == {"ok": True}
    assert double.stats()["accepted"] == 0
    assert double.recipients() == {}
    assert double.messages == {}


def test_unknown_paths_and_methods(double: DoubleServer, web: requests.Session) -> None:
    assert web.get(f"{double.url}/nowhere").status_code == 404
    assert web.get(f"{double.url}/v3/mail/send").status_code == 405
    assert web.get(f"{double.url}/_double/nothing").status_code == 404


def test_keep_alive_one_connection_and_content_length_always(double: DoubleServer) -> None:
    host, port = double.url.removeprefix("http://").split(":")
    conn = HTTPConnection(host, int(port), timeout=10)
    try:
        body = json.dumps(sendgrid_body(["a@example.com"])).encode()
        headers = {"Authorization": f"Bearer {double.sendgrid_key}"}
        conn.request("POST", "/v3/mail/send", body=body, headers=headers)
        first_socket = conn.sock
        answer = conn.getresponse()
        assert answer.status == 202
        assert answer.getheader("Content-Length") == "0"
        assert answer.read() == b""
        for path in ("/_double/health", "/_double/stats", "/nowhere"):
            conn.request("GET", path)
            answer = conn.getresponse()
            assert answer.getheader("Content-Length") == str(len(answer.read()))
        assert conn.sock is first_socket  # never reconnected
    finally:
        conn.close()


def test_header_names_are_read_whatever_their_case(double: DoubleServer) -> None:
    host, port = double.url.removeprefix("http://").split(":")
    conn = HTTPConnection(host, int(port), timeout=10)
    try:
        body = json.dumps([postmark_message("a@example.com")]).encode()
        headers = {
            "x-postmark-server-token": double.postmark_token,
            "content-type": "application/json",
        }
        conn.request("POST", "/email/batch", body=body, headers=headers)
        answer = conn.getresponse()
        assert answer.status == 200
        assert json.loads(answer.read())[0]["ErrorCode"] == 0
    finally:
        conn.close()


# Mailgun


def test_mailgun_send_answers_like_mailgun_and_personalises(
    double: DoubleServer, web: requests.Session
) -> None:
    answer = mailgun(web, double, ["ada@example.com", "bob@example.com"])
    assert answer.status_code == 200
    body = answer.json()
    assert body["message"] == "Queued. Thank you."
    assert body["id"].startswith("<") and body["id"].endswith(f"@{MAILGUN_DOMAIN}>")
    assert double.recipients() == {"ada@example.com": 1, "bob@example.com": 1}
    [bob] = double.messages["bob@example.com"]
    assert bob.provider == "mailgun"
    assert bob.subject == "Hello Reader 1"
    assert bob.text == "Hi Reader 1, leave: https://news.example.org/u/1\n"
    assert bob.html == "<p>Hi Reader 1</p>"
    assert bob.headers == {
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Unsubscribe": "<https://news.example.org/u/1>",
    }


def test_mailgun_counts_an_address_once_per_call_and_takes_urlencoded_forms(
    double: DoubleServer, web: requests.Session
) -> None:
    answer = web.post(
        f"{double.url}/v3/{MAILGUN_DOMAIN}/messages",
        data={
            "from": "news@example.org",
            "to": "a@example.com, A@example.com, b@example.com",
            "subject": "Hi",
            "text": "Hi",
        },
        auth=("api", double.mailgun_key),
    )
    assert answer.status_code == 200
    assert double.recipients() == {"a@example.com": 1, "b@example.com": 1}


def test_mailgun_refuses_a_wrong_key(double: DoubleServer, web: requests.Session) -> None:
    answer = mailgun(web, double, ["a@example.com"], api_key="wrong")
    assert answer.status_code == 401
    assert answer.text == "Forbidden"
    assert double.stats()["accepted"] == 0
    assert double.stats()["statuses"] == {"401": 1}


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("from", "from parameter is missing"),
        ("subject", "subject parameter is missing"),
        ("to", "to parameter is missing"),
    ],
)
def test_mailgun_refuses_an_incomplete_form(
    double: DoubleServer, web: requests.Session, field: str, message: str
) -> None:
    fields = {"from": "news@example.org", "to": "a@example.com", "subject": "Hi", "text": "Hi"}
    del fields[field]
    answer = web.post(
        f"{double.url}/v3/{MAILGUN_DOMAIN}/messages",
        files=[(k, (None, v)) for k, v in fields.items()],
        auth=("api", double.mailgun_key),
    )
    assert answer.status_code == 400
    assert answer.json() == {"message": message}


def test_mailgun_refuses_more_than_1000_recipients(
    double: DoubleServer, web: requests.Session
) -> None:
    answer = mailgun(web, double, [f"r{i}@example.com" for i in range(1001)])
    assert answer.status_code == 400
    assert double.stats()["accepted"] == 0


def test_multipart_fields_keep_their_exact_values() -> None:
    values = [("to", "Zoë <z@example.com>"), ("text", "line 1\r\nline 2\n\n"), ("html", "")]
    files = [(k, (None, v)) for k, v in values]
    prepared = requests.Request("POST", "http://127.0.0.1/", files=files).prepare()
    assert isinstance(prepared.body, bytes)
    assert parse_form(prepared.headers["Content-Type"], prepared.body) == values


def test_mailgun_events_page_through_accepted_events(
    double: DoubleServer, web: requests.Session
) -> None:
    begin = time.time() - 1
    mailgun(web, double, [f"r{i}@example.com" for i in range(5)], key="batch-a")
    mailgun(web, double, ["other@example.com"], key="batch-b")
    url = f"{double.url}/v3/{MAILGUN_DOMAIN}/events"
    params: dict[str, Any] | None = {
        "event": "accepted",
        "begin": str(int(begin)),
        "ascending": "yes",
        "limit": "2",
    }
    pages = []
    while True:
        page = web.get(url, params=params, auth=("api", double.mailgun_key)).json()
        if not page["items"]:
            break
        pages.append(page["items"])
        url, params = page["paging"]["next"], None
    assert [len(p) for p in pages] == [2, 2, 2]
    events = [e for p in pages for e in p]
    assert [e["recipient"] for e in events] == [f"r{i}@example.com" for i in range(5)] + [
        "other@example.com"
    ]
    first = events[0]
    assert first["event"] == "accepted"
    assert first["user-variables"] == {"letterpress-batch": "batch-a", "letterpress-issue": "1"}
    assert first["tags"] == ["issue-1"]
    assert first["timestamp"] >= begin
    assert events[-1]["user-variables"]["letterpress-batch"] == "batch-b"


def test_mailgun_events_filters_and_auth(double: DoubleServer, web: requests.Session) -> None:
    mailgun(web, double, ["a@example.com"])
    url = f"{double.url}/v3/{MAILGUN_DOMAIN}/events"
    auth = ("api", double.mailgun_key)
    later = {"begin": str(int(time.time()) + 60), "ascending": "yes"}
    assert web.get(url, params=later, auth=auth).json()["items"] == []
    assert web.get(url, params={"event": "delivered"}, auth=auth).json()["items"] == []
    other = f"{double.url}/v3/other.example.org/events"
    assert web.get(other, auth=auth).json()["items"] == []
    assert len(web.get(url, auth=auth).json()["items"]) == 1
    assert web.get(url, auth=("api", "wrong")).status_code == 401
    assert web.get(url, params={"limit": "301"}, auth=auth).status_code == 400


# SendGrid


def test_sendgrid_send_answers_202_and_applies_substitutions(
    double: DoubleServer, web: requests.Session
) -> None:
    answer = sendgrid(web, double, ["ada@example.com", "bob@example.com"])
    assert answer.status_code == 202
    assert answer.content == b""
    assert len(answer.headers["X-Message-Id"]) == 22
    [bob] = double.messages["bob@example.com"]
    assert (bob.provider, bob.subject, bob.text, bob.html) == (
        "sendgrid",
        "Hello Reader 1",
        "Hi Reader 1",
        "<p>Hi Reader 1</p>",
    )
    assert bob.headers == {
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Unsubscribe": "<https://news.example.org/u/1>",
    }


def test_sendgrid_refuses_a_wrong_key(double: DoubleServer, web: requests.Session) -> None:
    answer = sendgrid(web, double, ["a@example.com"], api_key="SG.wrong")
    assert answer.status_code == 401
    assert "authorization grant is invalid" in answer.json()["errors"][0]["message"]
    assert double.stats()["accepted"] == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"personalizations": []}, "personalizations"),
        ({"from": {}}, "from.email"),
        (
            {
                "content": [
                    {"type": "text/html", "value": "x"},
                    {"type": "text/plain", "value": "y"},
                ]
            },
            "content",
        ),
        ({"content": []}, "content"),
        (
            {
                "personalizations": [
                    {"to": [{"email": "a@example.com"}, {"email": "A@example.com"}]}
                ]
            },
            "personalizations.0",
        ),
        ({"personalizations": [{"to": []}]}, "personalizations.0.to"),
        (
            {"personalizations": [{"to": [{"email": "a@example.com"}], "custom_args": {"n": 1}}]},
            "personalizations.0.custom_args",
        ),
        (
            {"personalizations": [{"to": [{"email": f"r{i}@example.com"}]} for i in range(1001)]},
            "personalizations",
        ),
    ],
)
def test_sendgrid_refuses_what_sendgrid_refuses(
    double: DoubleServer, web: requests.Session, change: dict[str, Any], field: str
) -> None:
    answer = sendgrid(web, double, sendgrid_body(["a@example.com"], **change))
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == field
    assert double.stats()["accepted"] == 0


# Postmark


def test_postmark_batch_answers_per_message(double: DoubleServer, web: requests.Session) -> None:
    broken = postmark_message("c@example.com", From="")
    batch: list[dict[str, Any] | str] = ["a@example.com", broken, "b@example.com"]
    answer = postmark(web, double, batch)
    assert answer.status_code == 200
    first, second, third = answer.json()
    assert first["ErrorCode"] == 0 and first["Message"] == "OK" and first["To"] == "a@example.com"
    assert first["MessageID"] != third["MessageID"]
    assert first["SubmittedAt"].endswith("Z")
    assert second["ErrorCode"] == 300 and "From" in second["Message"]
    assert double.recipients() == {"a@example.com": 1, "b@example.com": 1}
    [kept] = double.messages["b@example.com"]
    assert kept.subject == "Hello b@example.com"
    assert kept.headers == {"List-Unsubscribe": "<https://x.org/u/b@example.com>"}


def test_postmark_refuses_a_wrong_token_and_oversized_batches(
    double: DoubleServer, web: requests.Session
) -> None:
    answer = postmark(web, double, ["a@example.com"], token="wrong")
    assert answer.status_code == 401
    assert answer.json()["ErrorCode"] == 10
    answer = postmark(web, double, [f"r{i}@example.com" for i in range(501)])
    assert answer.status_code == 422
    assert double.stats()["accepted"] == 0


def test_postmark_search_filters_by_metadata_and_pages(
    double: DoubleServer, web: requests.Session
) -> None:
    postmark(web, double, [postmark_message(f"r{i}@example.com", "batch-a") for i in range(7)])
    postmark(web, double, [postmark_message("other@example.com", "batch-b")])
    url = f"{double.url}/messages/outbound"
    headers = {"X-Postmark-Server-Token": double.postmark_token}
    found: list[str] = []
    offset = 0
    while True:
        params = {"count": "3", "offset": str(offset), "metadata_letterpress-batch": "batch-a"}
        page = web.get(url, params=params, headers=headers).json()
        assert page["TotalCount"] == 7
        found += [a for m in page["Messages"] for a in m["Recipients"]]
        offset += len(page["Messages"])
        if not page["Messages"] or offset >= page["TotalCount"]:
            break
    assert sorted(found) == [f"r{i}@example.com" for i in range(7)]
    everything = web.get(url, params={"count": "500"}, headers=headers).json()
    assert everything["TotalCount"] == 8
    message = everything["Messages"][0]
    assert message["Metadata"] == {"letterpress-batch": "batch-b", "letterpress-issue": "1"}
    assert message["Status"] == "Sent" and message["MessageStream"] == "broadcast"
    assert web.get(url, params={"count": "501"}, headers=headers).status_code == 422
    assert web.get(url, params={"count": "5"}).status_code == 401


# Idempotency


def test_a_repeated_idempotency_key_gets_the_same_answer_and_records_nothing(
    double: DoubleServer, web: requests.Session
) -> None:
    first = mailgun(web, double, ["a@example.com"], key="k-1")
    again = mailgun(web, double, ["a@example.com"], key="k-1")
    assert first.json() == again.json()
    pm_first = postmark(web, double, ["b@example.com"], key="k-1")  # another provider
    pm_again = postmark(web, double, ["b@example.com"], key="k-1")
    assert pm_first.json() == pm_again.json()
    sg_first = sendgrid(web, double, ["c@example.com"], key="k-1")
    sg_again = sendgrid(web, double, ["c@example.com"], key="k-1")
    assert sg_first.headers["X-Message-Id"] == sg_again.headers["X-Message-Id"]
    assert double.recipients() == {"a@example.com": 1, "b@example.com": 1, "c@example.com": 1}
    assert double.stats()["replayed"] == 3
    mailgun(web, double, ["a@example.com"], key="k-2")
    assert double.recipients()["a@example.com"] == 2


def test_a_failed_answer_is_not_replayed(double: DoubleServer, web: requests.Session) -> None:
    double.set_faults(Fault("error", count=1))
    assert mailgun(web, double, ["a@example.com"], key="k-1").status_code == 500
    assert mailgun(web, double, ["a@example.com"], key="k-1").status_code == 200
    assert double.recipients() == {"a@example.com": 1}


def test_without_idempotency_every_request_counts(web: requests.Session) -> None:
    with DoubleServer(idempotency=False) as double:
        mailgun(web, double, ["a@example.com"], key="k-1")
        mailgun(web, double, ["a@example.com"], key="k-1")
        assert double.recipients() == {"a@example.com": 2}
        assert double.stats()["duplicates"] == 1


# Faults


def test_throttle_gives_each_providers_hint(double: DoubleServer, web: requests.Session) -> None:
    double.set_faults(Fault("throttle", retry_after=7))
    answer = mailgun(web, double, ["a@example.com"])
    assert answer.status_code == 429
    assert "try again after 7 seconds" in answer.json()["message"]
    answer = sendgrid(web, double, ["a@example.com"])
    assert answer.status_code == 429
    reset = int(answer.headers["X-RateLimit-Reset"])
    assert time.time() + 6 <= reset <= time.time() + 9
    answer = postmark(web, double, ["a@example.com"])
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "7"
    assert double.stats()["accepted"] == 0
    assert double.stats()["statuses"] == {"429": 3}
    double.set_faults(Fault("throttle", status=420, provider="mailgun"))
    assert mailgun(web, double, ["a@example.com"]).status_code == 420


@pytest.mark.parametrize("status", [500, 503])
def test_error_fault(double: DoubleServer, web: requests.Session, status: int) -> None:
    double.set_faults(Fault("error", status=status))
    assert mailgun(web, double, ["a@example.com"]).status_code == status
    assert sendgrid(web, double, ["a@example.com"]).json()["errors"]
    assert postmark(web, double, ["a@example.com"]).status_code == status
    assert double.stats()["accepted"] == 0


def test_slow_fault_answers_late_but_records(double: DoubleServer, web: requests.Session) -> None:
    double.set_faults(Fault("slow", delay=0.4, provider="sendgrid"))
    started = time.monotonic()
    assert sendgrid(web, double, ["a@example.com"]).status_code == 202
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert mailgun(web, double, ["b@example.com"]).status_code == 200  # other providers: fast
    assert time.monotonic() - started < 0.4
    with pytest.raises(requests.ReadTimeout):
        web.post(
            f"{double.url}/v3/mail/send",
            json=sendgrid_body(["c@example.com"]),
            headers={"Authorization": f"Bearer {double.sendgrid_key}"},
            timeout=(5, 0.1),
        )
    assert double.recipients()["c@example.com"] == 1


def test_drop_fault_records_then_closes_without_answer(
    double: DoubleServer, web: requests.Session
) -> None:
    double.set_faults(Fault("drop", count=1))
    with pytest.raises(requests.ConnectionError):
        postmark(web, double, ["a@example.com"], key="k-1")
    assert double.recipients() == {"a@example.com": 1}
    assert double.stats()["dropped"] == 1
    # The work was done, so the key's answer was kept: a retry with it changes nothing.
    assert postmark(web, double, ["a@example.com"], key="k-1").json()[0]["ErrorCode"] == 0
    assert double.recipients() == {"a@example.com": 1}


def test_reject_fault_refuses_addresses(double: DoubleServer, web: requests.Session) -> None:
    double.set_faults(Fault("reject", addresses=("Bad@example.com",)))
    answer = postmark(web, double, ["a@example.com", "bad@example.com"])
    good, bad = answer.json()
    assert good["ErrorCode"] == 0
    assert bad["ErrorCode"] == 406 and "inactive" in bad["Message"]
    assert mailgun(web, double, ["bad@example.com", "b@example.com"]).status_code == 200
    assert sendgrid(web, double, ["bad@example.com"]).status_code == 202
    assert double.recipients() == {"a@example.com": 1, "b@example.com": 1}
    assert double.stats()["suppressed"] == 3


def test_count_limits_a_fault_and_provider_scopes_it(
    double: DoubleServer, web: requests.Session
) -> None:
    double.set_faults(Fault("error", count=2, provider="mailgun"))
    assert sendgrid(web, double, ["a@example.com"]).status_code == 202
    statuses = [mailgun(web, double, ["a@example.com"]).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]


def test_rate_applies_with_that_probability_from_a_seed(
    double: DoubleServer, web: requests.Session
) -> None:
    def run() -> list[int]:
        double.set_faults(Fault("error", rate=0.5), seed=11)
        return [sendgrid(web, double, ["a@example.com"]).status_code for _ in range(40)]

    first = run()
    assert 8 <= first.count(500) <= 32
    assert run() == first  # the same seed, the same dice


def test_faults_are_set_over_http(double: DoubleServer, web: requests.Session) -> None:
    url = f"{double.url}/_double/faults"
    fault = {"kind": "throttle", "provider": "postmark", "retry_after": 2, "count": 1}
    answer = web.post(url, json={"faults": [fault], "seed": 3})
    assert answer.status_code == 200
    assert answer.json()["faults"][0]["kind"] == "throttle"
    assert postmark(web, double, ["a@example.com"]).status_code == 429
    assert postmark(web, double, ["a@example.com"]).status_code == 200
    assert web.get(url).json()["faults"][0]["count"] == 0
    assert web.post(url, json=[{"kind": "explode"}]).status_code == 400
    assert web.post(url, json=[{"kind": "error", "rate": 2}]).status_code == 400
    assert web.post(url, json=[{"kind": "throttle", "status": 500}]).status_code == 400
    assert web.post(url, json=[]).json() == {"faults": []}


# The command line


def test_cli_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "letterpress_testing", "--port", "0",
         "--sendgrid-key", "SG.cli", "--keep-messages"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        with requests.Session() as web:
            assert web.get(f"{url}/_double/health", timeout=5).json() == {"ok": True}
            answer = web.post(
                f"{url}/v3/mail/send",
                json=sendgrid_body(["a@example.com"]),
                headers={"Authorization": "Bearer SG.cli"},
                timeout=5,
            )
            assert answer.status_code == 202
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# Speed


@pytest.mark.slow
def test_a_million_sendgrid_recipients_in_well_under_30_seconds() -> None:
    """1,000 requests of 1,000 personalizations each, over one keep-alive connection."""
    html = "<p>Hello %%name%%, " + "lorem ipsum " * 3000 + "</p>"
    template = json.dumps(
        sendgrid_body(
            [f"user{i}@example.com" for i in range(1000)],
            content=[{"type": "text/plain", "value": "Hi"}, {"type": "text/html", "value": html}],
        )
    ).encode()
    with DoubleServer() as double:
        host, port = double.url.removeprefix("http://").split(":")
        conn = HTTPConnection(host, int(port), timeout=30)
        headers = {"Authorization": f"Bearer {double.sendgrid_key}"}
        try:
            started = time.perf_counter()
            for n in range(1000):
                body = template.replace(b'"user', f'"u{n}-'.encode())
                conn.request("POST", "/v3/mail/send", body=body, headers=headers)
                answer = conn.getresponse()
                answer.read()
                assert answer.status == 202
            elapsed = time.perf_counter() - started
        finally:
            conn.close()
        stats = double.stats()
    assert stats["accepted"] == stats["unique"] == 1_000_000
    print(f"double: 1,000 x 1,000 SendGrid personalizations in {elapsed:.1f} s")
    assert elapsed < 20
