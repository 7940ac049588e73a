"""The provider adapters against real servers on loopback: the HTTP double for Mailgun,
SendGrid and Postmark, a small SMTP server (asyncio streams) for SMTP, and a folder for
the outbox. Every request the Mailgun and SendGrid adapters send is validated against
the providers' published OpenAPI descriptions."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import io
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, getaddresses
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from letterpress_testing.faults import Fault
from letterpress_testing.server import DoubleServer
from letterpress_testing.state import CapturedRequest
from pipeline.errors import ConfigError
from pipeline.sending.providers import create
from pipeline.sending.providers.base import (
    Ambiguous,
    BatchResult,
    Message,
    Provider,
    ProviderError,
    Recipient,
    Rejected,
    Throttled,
    Transient,
)
from pipeline.sending.providers.http import error_for_response, retry_after
from pipeline.sending.providers.mailgun import MailgunProvider
from pipeline.sending.providers.mime import build
from pipeline.sending.providers.outbox import OutboxProvider
from pipeline.sending.providers.postmark import PostmarkProvider
from pipeline.sending.providers.sendgrid import SendGridProvider
from pipeline.sending.providers.smtp import SmtpProvider, parse_url
from pipeline.settings import Settings
from tests.conftest import SPECS

DOMAIN = "mg.example.org"
HTTP_PROVIDERS = ("mailgun", "sendgrid", "postmark")


# ---------------------------------------------------------------------------
# What is sent


def message(**changes: Any) -> Message:
    values: dict[str, Any] = {
        "subject": "Hello %%name%%",
        "html": '<p>Dear %%name_html%%,</p><p><a href="%%unsubscribe_url%%">Unsubscribe</a></p>',
        "text": "Dear %%name%%,\n\nUnsubscribe: %%unsubscribe_url%%\n",
        "from_name": "The Letter",
        "from_email": "news@example.org",
        "tag": "vitamin-k2",
        "headers": {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        "metadata": {"issue": "12"},
    }
    values.update(changes)
    return Message(**values)


def recipient(n: int, email_address: str | None = None, name: str | None = None) -> Recipient:
    name = f"Reader {n}" if name is None else name
    url = f"https://news.example.org/unsubscribe/token-{n}"
    return Recipient(
        subscriber_id=n,
        email=email_address or f"reader{n}@example.com",
        name=name,
        fields={"name": name, "name_html": name.replace("&", "&amp;"), "unsubscribe_url": url},
        headers={"List-Unsubscribe": f"<{url}>"},
    )


def recipients(count: int, start: int = 1) -> list[Recipient]:
    return [recipient(n) for n in range(start, start + count)]


# ---------------------------------------------------------------------------
# The official request schemas


@dataclass
class Specs:
    mailgun: Draft202012Validator
    mailgun_properties: dict[str, Any]
    sendgrid: Draft202012Validator

    def mailgun_object(self, fields: list[tuple[str, str]]) -> dict[str, Any]:
        """Form fields as the schema's object: a field the schema calls an array is a list."""
        grouped: dict[str, list[str]] = {}
        for name, value in fields:
            grouped.setdefault(name, []).append(value)
        return {
            name: values
            if self.mailgun_properties.get(name, {}).get("type") == "array" or len(values) > 1
            else values[0]
            for name, values in grouped.items()
        }

    def mailgun_errors(self, fields: list[tuple[str, str]]) -> list[str]:
        errors = [e.message for e in self.mailgun.iter_errors(self.mailgun_object(fields))]
        # What Mailgun states in prose rather than in the schema:
        options = sum(len(n) + len(v) for n, v in fields if n[:2] in ("o:", "h:", "v:", "t:"))
        if options > 16 * 1024:
            errors.append(f"send options are {options} bytes, over 16KB")
        to = [a for n, v in fields if n == "to" for _, a in getaddresses([v])]
        if len(to) > 1000:
            errors.append(f"{len(to)} recipients, over 1000")
        variables = dict(fields).get("recipient-variables")
        if variables is not None:
            missing = set(to) - set(json.loads(variables))
            if missing:
                errors.append(f"no recipient-variables for {sorted(missing)}")
        return errors

    def sendgrid_errors(self, body: Any) -> list[str]:
        return [e.message for e in self.sendgrid.iter_errors(body)]

    def check(self, captured: CapturedRequest) -> list[str]:
        path = captured.path.partition("?")[0]
        if captured.method == "POST" and path.startswith("/v3/") and path.endswith("/messages"):
            return self.mailgun_errors(captured.form())
        if captured.method == "POST" and path == "/v3/mail/send":
            return self.sendgrid_errors(captured.json())
        return []


@pytest.fixture(scope="session")
def specs() -> Specs:
    mailgun = yaml.load((SPECS / "mailgun-openapi.yaml").read_text("utf-8"), yaml.CSafeLoader)
    sendgrid = json.loads((SPECS / "sendgrid-mail-v3.json").read_text("utf-8"))
    registry: Registry[Any] = Registry().with_resources(
        [
            ("urn:mailgun", Resource.from_contents(mailgun, default_specification=DRAFT202012)),
            ("urn:sendgrid", Resource.from_contents(sendgrid, default_specification=DRAFT202012)),
        ]
    )
    operation = mailgun["paths"]["/v3/{domain_name}/messages"]["post"]
    mailgun_ref = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    mailgun_schema = registry.resolver().lookup("urn:mailgun" + mailgun_ref).contents
    body_ref = sendgrid["paths"]["/v3/mail/send"]["post"]["requestBody"]["$ref"]
    sendgrid_ref = f"urn:sendgrid{body_ref}/content/application~1json/schema"
    registry.resolver().lookup(sendgrid_ref)  # fails here if the spec moved
    checker = Draft202012Validator.FORMAT_CHECKER
    return Specs(
        mailgun=Draft202012Validator(
            {"$ref": "urn:mailgun" + mailgun_ref}, registry=registry, format_checker=checker
        ),
        mailgun_properties=mailgun_schema["properties"],
        sendgrid=Draft202012Validator(
            {"$ref": sendgrid_ref}, registry=registry, format_checker=checker
        ),
    )


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def double(specs: Specs) -> Iterator[DoubleServer]:
    """The provider double; afterwards, every Mailgun and SendGrid request it received
    must match the official request schema."""
    with DoubleServer(keep_messages=True, keep_requests=True, seed=5) as server:
        yield server
        captured = server.requests
    problems = {f"{c.method} {c.path}": specs.check(c) for c in captured}
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.fixture
def providers() -> Iterator[list[Provider]]:
    made: list[Provider] = []
    yield made
    for provider in made:
        provider.close()


@pytest.fixture
def provider_for(
    double: DoubleServer,
    make_settings: Callable[..., Settings],
    providers: list[Provider],
) -> Callable[..., Provider]:
    """An adapter, made by the factory, that talks to the double."""

    def make(name: str, **overrides: Any) -> Provider:
        values: dict[str, Any] = {
            "provider": name,
            "mailgun_api_key": double.mailgun_key,
            "mailgun_domain": DOMAIN,
            "mailgun_base_url": double.url,
            "sendgrid_api_key": double.sendgrid_key,
            "sendgrid_base_url": double.url,
            "postmark_server_token": double.postmark_token,
            "postmark_base_url": double.url,
        }
        values.update(overrides)
        provider = create(make_settings(**values))
        providers.append(provider)
        return provider

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------
# The factory


def test_factory_makes_each_provider(
    make_settings: Callable[..., Settings], tmp_path: Path, providers: list[Provider]
) -> None:
    common = {
        "mailgun_api_key": "k",
        "mailgun_domain": DOMAIN,
        "sendgrid_api_key": "k",
        "postmark_server_token": "k",
        "outbox_dir": tmp_path,
    }
    kinds = {
        "outbox": OutboxProvider,
        "mailgun": MailgunProvider,
        "sendgrid": SendGridProvider,
        "postmark": PostmarkProvider,
        "smtp": SmtpProvider,
    }
    for name, kind in kinds.items():
        provider = create(make_settings(provider=name, **common))
        providers.append(provider)
        assert isinstance(provider, kind)
        assert provider.name == name


@pytest.mark.parametrize(
    ("name", "missing", "variable"),
    [
        ("mailgun", "mailgun_api_key", "MAILGUN_API_KEY"),
        ("mailgun", "mailgun_domain", "MAILGUN_DOMAIN"),
        ("sendgrid", "sendgrid_api_key", "SENDGRID_API_KEY"),
        ("postmark", "postmark_server_token", "POSTMARK_SERVER_TOKEN"),
    ],
)
def test_a_missing_setting_is_named(
    make_settings: Callable[..., Settings], name: str, missing: str, variable: str
) -> None:
    values: dict[str, Any] = {
        "mailgun_api_key": "k",
        "mailgun_domain": DOMAIN,
        "sendgrid_api_key": "k",
        "postmark_server_token": "k",
    }
    values[missing] = ""
    with pytest.raises(ConfigError, match=rf"^{variable} is not set: "):
        create(make_settings(provider=name, **values))


def test_a_base_url_must_be_http(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        provider="sendgrid", sendgrid_api_key="k", sendgrid_base_url="api.sendgrid.com"
    )
    with pytest.raises(ConfigError, match="SENDGRID_BASE_URL must start with http"):
        create(settings)


@pytest.mark.parametrize(
    ("name", "limit"), [("mailgun", 1000), ("sendgrid", 1000), ("postmark", 500)]
)
def test_max_batch_is_the_provider_limit_or_the_smaller_batch_size(
    provider_for: Callable[..., Provider], name: str, limit: int
) -> None:
    assert provider_for(name).max_batch == limit
    assert provider_for(name, batch_size=50).max_batch == 50
    assert provider_for(name, batch_size=limit * 3).max_batch == limit


def test_max_batch_of_outbox_and_smtp(
    make_settings: Callable[..., Settings], tmp_path: Path, providers: list[Provider]
) -> None:
    for name in ("outbox", "smtp"):
        for size, expected in ((None, 100), (20, 20), (5000, 100)):
            provider = create(make_settings(provider=name, outbox_dir=tmp_path, batch_size=size))
            providers.append(provider)
            assert provider.max_batch == expected


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_idempotent_follows_the_setting(provider_for: Callable[..., Provider], name: str) -> None:
    assert provider_for(name).idempotent is False
    assert provider_for(name, provider_idempotency=True).idempotent is True


# ---------------------------------------------------------------------------
# The HTTP adapters against the double


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_each_recipient_gets_their_own_message(
    provider_for: Callable[..., Provider], double: DoubleServer, name: str
) -> None:
    people = [
        recipient(1),
        recipient(2, "zoe@example.com", 'Zoë "Z" Ångström'),
        recipient(3, "doe@example.com", "Doe, Jane & Co"),
    ]
    result = provider_for(name).send(message(), people, "lp-12-1-abc")
    assert set(result.accepted) == {1, 2, 3}
    assert result.rejected == {}
    assert all(result.accepted.values())
    kept = double.messages
    assert set(kept) == {"reader1@example.com", "zoe@example.com", "doe@example.com"}
    for person in people:
        [got] = kept[person.email]
        url = person.fields["unsubscribe_url"]
        assert got.provider == name
        assert got.subject == f"Hello {person.name}"
        assert got.text == f"Dear {person.name},\n\nUnsubscribe: {url}\n"
        assert got.html == (
            f'<p>Dear {person.fields["name_html"]},</p><p><a href="{url}">Unsubscribe</a></p>'
        )
        assert got.headers["List-Unsubscribe"] == f"<{url}>"
        assert got.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert person.email in got.to
    assert double.stats()["accepted"] == 3


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_unknown_merge_fields_stay_as_they_are(
    provider_for: Callable[..., Provider], double: DoubleServer, name: str
) -> None:
    provider_for(name).send(message(subject="Hi %%nickname%%"), [recipient(1)], "k")
    assert double.messages["reader1@example.com"][0].subject == "Hi %%nickname%%"


def test_mailgun_sends_one_form_with_recipient_variables(
    provider_for: Callable[..., Provider], double: DoubleServer
) -> None:
    provider_for("mailgun").send(message(), recipients(2), "lp-12-1-abc")
    [sent] = double.requests
    fields = sent.form()
    to = [v for n, v in fields if n == "to"]
    assert to == ["Reader 1 <reader1@example.com>", "Reader 2 <reader2@example.com>"]
    values = dict(fields)
    assert values["subject"] == "Hello %recipient.name%"
    assert values["h:List-Unsubscribe"] == "%recipient.h_list_unsubscribe%"
    assert values["h:List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert values["o:tag"] == "vitamin-k2"
    assert values["v:letterpress-batch"] == "lp-12-1-abc"
    assert values["v:letterpress-issue"] == "12"
    variables = json.loads(values["recipient-variables"])
    assert variables["reader2@example.com"]["h_list_unsubscribe"] == (
        "<https://news.example.org/unsubscribe/token-2>"
    )
    assert sent.headers["Idempotency-Key"] == "lp-12-1-abc"


def test_sendgrid_sends_one_personalization_per_recipient(
    provider_for: Callable[..., Provider], double: DoubleServer
) -> None:
    provider_for("sendgrid").send(message(), recipients(2), "lp-12-1-abc")
    [sent] = double.requests
    body = sent.json()
    assert sent.headers["Authorization"] == f"Bearer {double.sendgrid_key}"
    assert sent.headers["Idempotency-Key"] == "lp-12-1-abc"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["categories"] == ["vitamin-k2"]
    assert body["headers"] == {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    second = body["personalizations"][1]
    assert second["to"] == [{"email": "reader2@example.com", "name": "Reader 2"}]
    assert second["substitutions"]["%%name%%"] == "Reader 2"
    assert second["custom_args"] == {
        "letterpress_batch": "lp-12-1-abc",
        "letterpress_issue": "12",
        "subscriber": "2",
    }


def test_postmark_sends_personalised_messages_with_metadata(
    provider_for: Callable[..., Provider], double: DoubleServer
) -> None:
    provider_for("postmark", postmark_message_stream="news").send(
        message(), recipients(2), "lp-12-1-abc"
    )
    [sent] = double.requests
    batch = sent.json()
    assert sent.headers["X-Postmark-Server-Token"] == double.postmark_token
    to = [m["To"] for m in batch]
    assert to == ["Reader 1 <reader1@example.com>", "Reader 2 <reader2@example.com>"]
    assert batch[0]["MessageStream"] == "news"
    assert batch[0]["Tag"] == "vitamin-k2"
    assert batch[0]["From"] == "The Letter <news@example.org>"
    assert batch[0]["Metadata"] == {"letterpress-batch": "lp-12-1-abc", "letterpress-issue": "12"}
    assert {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"} in batch[1][
        "Headers"
    ]


def test_a_text_only_message(provider_for: Callable[..., Provider], double: DoubleServer) -> None:
    for name in HTTP_PROVIDERS:
        provider_for(name).send(message(html=""), [recipient(1)], f"k-{name}")
    kept = double.messages["reader1@example.com"]
    assert [m.html for m in kept] == ["", "", ""]
    assert all(m.text.startswith("Dear Reader 1,") for m in kept)


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_a_repeated_key_is_not_sent_twice_by_an_idempotent_provider(
    provider_for: Callable[..., Provider], double: DoubleServer, name: str
) -> None:
    provider = provider_for(name, provider_idempotency=True)
    first = provider.send(message(), recipients(3), "lp-1-1-x")
    again = provider.send(message(), recipients(3), "lp-1-1-x")
    assert first == again
    assert double.stats()["accepted"] == 3
    assert double.stats()["replayed"] == 1


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_an_empty_batch_sends_nothing(
    provider_for: Callable[..., Provider], double: DoubleServer, name: str
) -> None:
    assert provider_for(name).send(message(), [], "k") == BatchResult()
    assert double.stats()["requests"] == 0


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_a_full_batch_goes_in_one_call(
    provider_for: Callable[..., Provider], double: DoubleServer, name: str
) -> None:
    provider = provider_for(name)
    result = provider.send(message(), recipients(provider.max_batch), "lp-1-2-x")
    assert len(result.accepted) == provider.max_batch
    assert double.stats()["requests"] == 1
    assert double.stats()["unique"] == provider.max_batch


# Error mapping


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_throttling_carries_the_providers_hint(
    provider_for: Callable[..., Provider], double: DoubleServer, name: str
) -> None:
    double.set_faults(Fault("throttle", retry_after=4))
    with pytest.raises(Throttled) as caught:
        provider_for(name).send(message(), recipients(2), "k")
    assert caught.value.retry_after is not None
    assert 2.5 <= caught.value.retry_after <= 5
    assert isinstance(caught.value, Transient)
    assert double.stats()["accepted"] == 0


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_transient(
    provider_for: Callable[..., Provider], double: DoubleServer, name: str, status: int
) -> None:
    double.set_faults(Fault("error", status=status, count=1))
    provider = provider_for(name)
    with pytest.raises(Transient, match=f"{name} answered {status}") as caught:
        provider.send(message(), recipients(2), "k")
    assert not isinstance(caught.value, Throttled)
    assert len(provider.send(message(), recipients(2), "k").accepted) == 2  # and it passes


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_a_connection_dropped_after_acceptance_is_ambiguous(
    provider_for: Callable[..., Provider], double: DoubleServer, name: str
) -> None:
    double.set_faults(Fault("drop", count=1))
    provider = provider_for(name)
    with pytest.raises(Ambiguous, match="may have been accepted"):
        provider.send(message(), recipients(2), "k")
    assert double.stats()["accepted"] == 2  # it was: resending blindly would duplicate
    provider.send(message(), recipients(2, start=5), "k2")  # the session recovers
    assert double.stats()["accepted"] == 4


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_a_read_timeout_is_ambiguous(
    provider_for: Callable[..., Provider], double: DoubleServer, name: str
) -> None:
    double.set_faults(Fault("slow", delay=2, count=1))
    with pytest.raises(Ambiguous, match="no answer in time"):
        provider_for(name, http_timeout=0.2).send(message(), recipients(1), "k")


@pytest.mark.parametrize(
    ("name", "setting", "variable"),
    [
        ("mailgun", "mailgun_api_key", "MAILGUN_API_KEY"),
        ("sendgrid", "sendgrid_api_key", "SENDGRID_API_KEY"),
        ("postmark", "postmark_server_token", "POSTMARK_SERVER_TOKEN"),
    ],
)
def test_a_wrong_key_is_rejected_and_names_the_setting(
    provider_for: Callable[..., Provider], name: str, setting: str, variable: str
) -> None:
    with pytest.raises(Rejected, match=f"{name} answered 401.*check {variable}"):
        provider_for(name, **{setting: "wrong"}).send(message(), recipients(1), "k")


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_a_refused_connection_is_transient(
    provider_for: Callable[..., Provider], name: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    provider = provider_for(
        name, mailgun_base_url=url, sendgrid_base_url=url, postmark_base_url=url
    )
    with pytest.raises(Transient, match="cannot connect"):
        provider.send(message(), recipients(1), "k")


def test_a_bad_request_is_rejected_with_the_providers_words(
    provider_for: Callable[..., Provider], double: DoubleServer, specs: Specs
) -> None:
    bad = message(from_email="not-an-address")
    with pytest.raises(Rejected, match="sendgrid answered 400: The from object"):
        provider_for("sendgrid").send(bad, recipients(1), "k")
    with pytest.raises(Rejected, match="postmark answered 422: ErrorCode 300"):
        provider_for("postmark", batch_size=1000).send(message(), recipients(501), "k")
    assert specs.check(double.requests[0]) == ["'not-an-address' is not a 'email'"]
    double.reset()  # broken on purpose: keep them from the fixture's schema check


def test_postmark_reports_each_refused_message(
    provider_for: Callable[..., Provider], double: DoubleServer
) -> None:
    double.set_faults(Fault("reject", addresses=("reader2@example.com",)))
    result = provider_for("postmark").send(message(), recipients(3), "k")
    assert set(result.accepted) == {1, 3}
    assert list(result.rejected) == [2]
    assert result.rejected[2].startswith("ErrorCode 406: You tried to send to recipient(s)")
    assert double.recipients() == {"reader1@example.com": 1, "reader3@example.com": 1}


class _CutOffServer:
    """Answers every connection with a chunked body that stops in the middle."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                conn.recv(1 << 20)
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def test_an_answer_cut_off_is_ambiguous(provider_for: Callable[..., Provider]) -> None:
    server = _CutOffServer()
    try:
        provider = provider_for("sendgrid", sendgrid_base_url=server.url)
        with pytest.raises(Ambiguous):
            provider.send(message(), recipients(1), "k")
    finally:
        server.close()


def _response(
    status: int, headers: dict[str, str] | None = None, body: str = ""
) -> requests.Response:
    """An answer as requests builds one from the wire."""
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response.raw = io.BytesIO(body.encode())
    return response


def test_retry_after_reads_every_hint() -> None:
    now = 1_700_000_000.0
    assert retry_after(_response(429, {"Retry-After": "12"}), now) == 12
    later = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert retry_after(_response(429, {"Retry-After": later}), now) == 30
    assert retry_after(_response(429, {"X-RateLimit-Reset": str(int(now) + 9)}), now) == 9
    body = '{"message": "Domain x is not allowed to send: try again after 120 seconds"}'
    assert retry_after(_response(429, body=body), now) == 120
    assert retry_after(_response(429, {"X-RateLimit-Reset": str(int(now) - 5)}), now) == 0
    assert retry_after(_response(429), now) is None


def test_mailgun_420_is_throttling_too(
    provider_for: Callable[..., Provider], double: DoubleServer
) -> None:
    double.set_faults(Fault("throttle", status=420, retry_after=3, provider="mailgun"))
    with pytest.raises(Throttled, match="mailgun answered 420") as caught:
        provider_for("mailgun").send(message(), recipients(1), "k")
    assert caught.value.retry_after == 3


def test_other_statuses() -> None:
    assert isinstance(error_for_response("x", _response(408), "K"), Transient)
    assert isinstance(error_for_response("x", _response(413), "K"), Rejected)
    redirect = error_for_response("x", _response(302, {"Location": "https://y"}), "K")
    assert isinstance(redirect, Rejected) and "https://y" in str(redirect)
    assert isinstance(error_for_response("x", _response(420), "K"), Rejected)  # not Mailgun


# accepted()


def test_mailgun_accepted_pages_through_the_event_log(
    provider_for: Callable[..., Provider], double: DoubleServer
) -> None:
    provider = provider_for("mailgun")
    since = datetime.now(UTC) - timedelta(seconds=2)
    provider.send(message(), recipients(650), "lp-1-1-a")  # three pages of events
    provider.send(message(), [recipient(900, "Other@Example.com")], "lp-1-2-b")
    found = provider.accepted("lp-1-1-a", since)
    assert found == {f"reader{n}@example.com" for n in range(1, 651)}
    assert provider.accepted("lp-1-2-b", since) == {"other@example.com"}
    assert provider.accepted("lp-1-3-c", since) == set()
    assert provider.accepted("lp-1-1-a", datetime.now(UTC) + timedelta(minutes=1)) == set()
    pages = [r for r in double.requests if "/events" in r.path]
    assert len(pages) == 4 * 3 + 1  # 651 events: 300, 300, 51, then an empty page


def test_postmark_accepted_searches_by_metadata(
    provider_for: Callable[..., Provider], double: DoubleServer
) -> None:
    provider = provider_for("postmark")
    since = datetime.now(UTC)
    double.idempotency = False  # the same key twice: more than one page of results
    provider.send(message(), recipients(500), "lp-1-1-a")
    provider.send(message(), recipients(200, start=501), "lp-1-1-a")
    provider.send(message(), [recipient(999)], "lp-1-2-b")
    assert provider.accepted("lp-1-1-a", since) == {f"reader{n}@example.com" for n in range(1, 701)}
    assert provider.accepted("lp-1-2-b", since) == {"reader999@example.com"}
    assert provider.accepted("nothing", since) == set()


def test_sendgrid_cannot_tell_what_it_accepted(provider_for: Callable[..., Provider]) -> None:
    assert provider_for("sendgrid").accepted("k", datetime.now(UTC)) is None


# ---------------------------------------------------------------------------
# Validation against the official schemas


def test_the_schemas_accept_what_the_adapters_send(
    provider_for: Callable[..., Provider], double: DoubleServer, specs: Specs
) -> None:
    provider_for("mailgun").send(message(), recipients(3), "k")
    provider_for("sendgrid").send(message(), recipients(3), "k")
    captured = double.requests
    assert len(captured) == 2
    assert [specs.check(c) for c in captured] == [[], []]


def test_the_schemas_refuse_broken_requests(
    provider_for: Callable[..., Provider], double: DoubleServer, specs: Specs
) -> None:
    provider_for("mailgun").send(message(), recipients(2), "k")
    provider_for("sendgrid").send(message(), recipients(2), "k")
    mailgun, sendgrid = double.requests
    fields = mailgun.form()
    assert specs.mailgun_errors(fields) == []
    no_from = [(n, v) for n, v in fields if n != "from"]
    assert "'from' is a required property" in specs.mailgun_errors(no_from)
    two_subjects = [*fields, ("subject", "again")]
    assert any("is not of type 'string'" in e for e in specs.mailgun_errors(two_subjects))
    too_many = [*fields, *[("to", f"x{i}@example.com") for i in range(1000)]]
    assert any("over 1000" in e for e in specs.mailgun_errors(too_many))

    body = sendgrid.json()
    assert specs.sendgrid_errors(body) == []
    assert "'to' is a required property" in specs.sendgrid_errors(
        {**body, "personalizations": [{"substitutions": {}}]}
    )
    assert specs.sendgrid_errors({**body, "categories": "vitamin-k2"})
    assert specs.sendgrid_errors({**body, "from": {"email": "nobody"}})
    assert specs.sendgrid_errors({**body, "content": [{"type": "text/plain", "value": ""}]})
    assert specs.sendgrid_errors({**body, "personalizations": body["personalizations"] * 501})


# ---------------------------------------------------------------------------
# The outbox


@pytest.fixture
def outbox(
    make_settings: Callable[..., Settings], tmp_path: Path, providers: list[Provider]
) -> OutboxProvider:
    provider = create(make_settings(provider="outbox", outbox_dir=tmp_path / "outbox"))
    providers.append(provider)
    assert isinstance(provider, OutboxProvider)
    return provider


def read_eml(path: Path) -> EmailMessage:
    parsed = email.message_from_bytes(path.read_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_outbox_writes_one_personalised_file_per_recipient(
    outbox: OutboxProvider, tmp_path: Path
) -> None:
    result = outbox.send(message(), recipients(3), "lp-12-1-a")
    assert set(result.accepted) == {1, 2, 3}
    folder = tmp_path / "outbox" / "issue-12"
    assert sorted(p.name for p in folder.iterdir()) == ["1.eml", "2.eml", "3.eml"]
    mail = read_eml(folder / "2.eml")
    assert mail["To"] == "Reader 2 <reader2@example.com>"
    assert mail["From"] == "The Letter <news@example.org>"
    assert mail["Subject"] == "Hello Reader 2"
    assert mail["Message-ID"] == result.accepted[2]
    assert mail["List-Unsubscribe"] == "<https://news.example.org/unsubscribe/token-2>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["X-Letterpress-Batch"] == "lp-12-1-a"
    body = mail.get_body(("plain",))
    assert body is not None and "token-2" in body.get_content()


def test_outbox_replaces_a_file_written_again(outbox: OutboxProvider, tmp_path: Path) -> None:
    outbox.send(message(), recipients(2), "lp-12-1-a")
    outbox.send(message(subject="Again %%name%%"), recipients(2), "lp-12-1-b")
    folder = tmp_path / "outbox" / "issue-12"
    assert sorted(p.name for p in folder.iterdir()) == ["1.eml", "2.eml"]  # no temp files
    assert read_eml(folder / "1.eml")["Subject"] == "Again Reader 1"
    assert outbox.idempotent is True


def test_outbox_accepted_reads_the_batch_key_back(outbox: OutboxProvider) -> None:
    since = datetime.now(UTC)
    outbox.send(message(), recipients(3), "lp-12-1-a")
    outbox.send(message(), [recipient(7, "Seven@Example.com")], "lp-12-2-b")
    outbox.send(message(metadata={"issue": "13"}), [recipient(8)], "lp-13-1-c")
    assert outbox.accepted("lp-12-1-a", since) == {
        "reader1@example.com",
        "reader2@example.com",
        "reader3@example.com",
    }
    assert outbox.accepted("lp-12-2-b", since) == {"seven@example.com"}
    assert outbox.accepted("lp-13-1-c", since) == {"reader8@example.com"}
    assert outbox.accepted("lp-12-1-a", since + timedelta(minutes=5)) == set()


# ---------------------------------------------------------------------------
# MIME


def test_mime_message_shape() -> None:
    mail = build(message(), recipient(4, name="Zoë"))
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert (
        text["Content-Transfer-Encoding"]
        == html["Content-Transfer-Encoding"]
        == ("quoted-printable")
    )
    assert str(mail["Message-ID"]).endswith("@example.org>")
    assert mail["MIME-Version"] == "1.0"
    raw = mail.as_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=default_policy)
    assert parsed["Subject"] == "Hello Zoë"
    only_text = build(message(html=""), recipient(4))
    assert only_text.get_content_type() == "text/plain"


# ---------------------------------------------------------------------------
# SMTP against a small real server


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        # Read as UTF-8 text, so an internationalised message's headers (RFC 6532) come out
        # as the characters they are.
        parsed = email.message_from_string(self.data.decode("utf-8"), policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SmtpServer:
    """An SMTP server on asyncio streams, enough for a submission client: EHLO, STARTTLS,
    AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT, and ways to fail.

    ``reject`` / ``defer``: addresses answered 550 / 451 at RCPT. ``drop_at_mail``: the
    n-th MAIL command (counting from 1) gets the connection closed instead of an answer;
    ``drop_after_data``: the n-th message is taken, then the connection closed before
    the answer."""

    tls: ssl.SSLContext | None = None
    implicit_tls: bool = False
    auth: tuple[str, str] | None = None
    reject: set[str] = field(default_factory=set)
    defer: set[str] = field(default_factory=set)
    drop_at_mail: int | None = None
    drop_after_data: int | None = None
    smtputf8: bool = False  # offer SMTPUTF8 (RFC 6531)
    mail_options: list[str] = field(default_factory=list)  # what each MAIL asked for
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    mails: int = 0
    datas: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    def start(self) -> SmtpServer:
        self._thread.start()
        ssl_arg = self.tls if self.implicit_tls else None
        start = asyncio.start_server(self._session, "127.0.0.1", 0, ssl=ssl_arg)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.wait_for(self._server.wait_closed(), 5)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def close_idle_connections(self) -> None:
        """What a server does to a client that stayed quiet too long."""

        async def close() -> None:
            for writer in list(self._writers):
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        deadline = time.monotonic() + 5
        while self._writers and time.monotonic() < deadline:
            time.sleep(0.01)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        secure = self.implicit_tls
        sender: str | None = None
        rcpts: list[str] = []

        async def say(*lines: str) -> None:
            writer.write("".join(f"{line}\r\n" for line in lines).encode())
            await writer.drain()

        try:
            await say("220 test.local ESMTP ready")
            while True:
                line = await reader.readline()
                if not line:
                    return
                command = line.decode("utf-8", "replace").rstrip("\r\n")
                verb, _, argument = command.partition(" ")
                verb = verb.upper()
                if verb in ("EHLO", "HELO"):
                    features = ["8BITMIME", "SIZE 35882577"]
                    if self.smtputf8:
                        features.append("SMTPUTF8")
                    if self.tls is not None and not secure:
                        features.append("STARTTLS")
                    if self.auth is not None:
                        features.append("AUTH PLAIN")
                    lines = ["test.local", *features]
                    await say(*[f"250-{x}" for x in lines[:-1]], f"250 {lines[-1]}")
                elif verb == "STARTTLS" and self.tls is not None and not secure:
                    await say("220 go ahead")
                    await writer.start_tls(self.tls)
                    secure = True
                    sender, rcpts = None, []
                elif verb == "AUTH" and self.auth is not None:
                    mechanism, _, initial = argument.partition(" ")
                    decoded = base64.b64decode(initial).split(b"\0")
                    if mechanism.upper() == "PLAIN" and decoded[1:] == [
                        self.auth[0].encode(),
                        self.auth[1].encode(),
                    ]:
                        await say("235 2.7.0 Authentication successful")
                    else:
                        await say("535 5.7.8 Authentication credentials invalid")
                elif verb == "MAIL":
                    self.mails += 1
                    if self.mails == self.drop_at_mail:
                        return
                    path, _, options = argument.split(":", 1)[1].strip().partition(" ")
                    self.mail_options.append(options)
                    if "SMTPUTF8" in options.upper() and not self.smtputf8:
                        await say("555 5.5.4 SMTPUTF8 not offered")
                        continue
                    sender, rcpts = path.strip("<>"), []
                    await say("250 2.1.0 OK")
                elif verb == "RCPT":
                    address = argument.split(":", 1)[1].strip().strip("<>")
                    if address in self.reject:
                        await say("550 5.1.1 No such user")
                    elif address in self.defer:
                        await say("451 4.3.0 Try again later")
                    else:
                        rcpts.append(address)
                        await say("250 2.1.5 OK")
                elif verb == "DATA":
                    await say("354 End data with <CR><LF>.<CR><LF>")
                    data = bytearray()
                    while True:
                        chunk = await reader.readline()
                        if chunk in (b".\r\n", b""):
                            break
                        data += chunk[1:] if chunk.startswith(b"..") else chunk
                    self.datas += 1
                    self.received.append(Received(sender or "", rcpts, bytes(data)))
                    sender, rcpts = None, []
                    if self.datas == self.drop_after_data:
                        return
                    await say(f"250 2.0.0 OK queued as {self.datas}")
                elif verb == "RSET":
                    sender, rcpts = None, []
                    await say("250 2.0.0 OK")
                elif verb == "NOOP":
                    await say("250 2.0.0 OK")
                elif verb == "QUIT":
                    await say("221 2.0.0 Bye")
                    return
                else:
                    await say("502 5.5.2 Command not recognized")
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
                await writer.wait_closed()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def client_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    started: list[SmtpServer] = []

    def start(**options: Any) -> SmtpServer:
        server = SmtpServer(**options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp_provider(
    make_settings: Callable[..., Settings], providers: list[Provider]
) -> Callable[..., SmtpProvider]:
    def make(url: str, context: ssl.SSLContext | None = None, **overrides: Any) -> SmtpProvider:
        provider = SmtpProvider(
            make_settings(provider="smtp", smtp_url=url, **overrides), ssl_context=context
        )
        providers.append(provider)
        return provider

    return make


def test_smtp_sends_one_personalised_message_per_recipient(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server()
    provider = smtp_provider(f"smtp://127.0.0.1:{server.port}")
    people = [recipient(1), recipient(2, name="Doe, Jane"), recipient(3, name=".dot first")]
    text = ".leading dot\n" + message().text
    result = provider.send(message(text=text), people, "k")
    assert set(result.accepted) == {1, 2, 3}
    assert [r.recipients for r in server.received] == [[p.email] for p in people]
    assert all(r.sender == "news@example.org" for r in server.received)
    mail = server.received[1].message
    assert mail["To"] == '"Doe, Jane" <reader2@example.com>'
    assert mail["Subject"] == "Hello Doe, Jane"
    assert mail["List-Unsubscribe"] == "<https://news.example.org/unsubscribe/token-2>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Message-ID"] == result.accepted[2]
    plain = mail.get_body(("plain",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n").startswith(".leading dot\nDear Doe, Jane,")
    assert provider.idempotent is False
    assert provider.accepted("k", datetime.now(UTC)) is None


def test_smtp_keeps_the_connection_across_batches(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server()
    provider = smtp_provider(f"smtp://127.0.0.1:{server.port}")
    provider.send(message(), recipients(3), "a")
    provider.send(message(), recipients(3, start=4), "b")
    assert len(server.received) == 6
    assert server.connections == provider.connections == 1


def test_smtp_reconnects_once_when_an_idle_connection_was_dropped(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server()
    provider = smtp_provider(f"smtp://127.0.0.1:{server.port}")
    provider.send(message(), recipients(1), "a")
    server.close_idle_connections()
    result = provider.send(message(), recipients(2, start=2), "b")
    assert set(result.accepted) == {2, 3}
    assert server.connections == 2


def test_smtp_starttls_and_login(
    smtp_server: Callable[..., SmtpServer],
    smtp_provider: Callable[..., SmtpProvider],
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
) -> None:
    server = smtp_server(tls=server_tls, auth=("ada", "p@ss:word"))
    url = f"smtp://ada:p%40ss%3Aword@127.0.0.1:{server.port}?starttls=require"
    result = smtp_provider(url, client_tls).send(message(), recipients(2), "k")
    assert set(result.accepted) == {1, 2}
    assert len(server.received) == 2


def test_smtp_implicit_tls(
    smtp_server: Callable[..., SmtpServer],
    smtp_provider: Callable[..., SmtpProvider],
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
) -> None:
    server = smtp_server(tls=server_tls, implicit_tls=True)
    result = smtp_provider(f"smtps://127.0.0.1:{server.port}", client_tls).send(
        message(), recipients(1), "k"
    )
    assert set(result.accepted) == {1}


def test_smtp_refuses_an_untrusted_certificate(
    smtp_server: Callable[..., SmtpServer],
    smtp_provider: Callable[..., SmtpProvider],
    server_tls: ssl.SSLContext,
) -> None:
    server = smtp_server(tls=server_tls)
    with pytest.raises(Rejected, match="not trusted"):
        smtp_provider(f"smtp://127.0.0.1:{server.port}").send(message(), recipients(1), "k")
    assert server.received == []


def test_smtp_require_starttls_when_the_server_has_none(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server()
    provider = smtp_provider(f"smtp://127.0.0.1:{server.port}?starttls=require")
    with pytest.raises(Rejected, match="does not offer STARTTLS"):
        provider.send(message(), recipients(1), "k")
    assert server.received == []


def test_smtp_wrong_password_is_rejected(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server(auth=("ada", "right"))
    provider = smtp_provider(f"smtp://ada:wrong@127.0.0.1:{server.port}")
    with pytest.raises(Rejected, match="check the user and password in SMTP_URL"):
        provider.send(message(), recipients(1), "k")


def test_smtp_refused_connection_is_transient(
    smtp_provider: Callable[..., SmtpProvider],
) -> None:
    provider = smtp_provider(f"smtp://127.0.0.1:{free_port()}")
    with pytest.raises(Transient, match="cannot connect"):
        provider.send(message(), recipients(1), "k")


def test_smtp_permanent_refusal_rejects_that_recipient(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server(reject={"reader2@example.com"})
    result = smtp_provider(f"smtp://127.0.0.1:{server.port}").send(message(), recipients(3), "k")
    assert set(result.accepted) == {1, 3}
    assert result.rejected == {2: "550 5.1.1 No such user"}


def test_smtp_temporary_refusal_is_transient_with_what_was_accepted(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server(defer={"reader3@example.com"})
    provider = smtp_provider(f"smtp://127.0.0.1:{server.port}")
    with pytest.raises(Transient, match="451") as caught:
        provider.send(message(), recipients(4), "k")
    assert caught.value.partial is not None
    assert set(caught.value.partial.accepted) == {1, 2}
    assert len(server.received) == 2
    provider.send(message(), recipients(1, start=4), "k")  # the connection is still good
    assert server.connections == 1


def test_smtp_break_mid_batch_carries_what_was_accepted(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server(drop_at_mail=3)
    provider = smtp_provider(f"smtp://127.0.0.1:{server.port}")
    with pytest.raises(Transient, match="connection broke") as caught:
        provider.send(message(), recipients(4), "k")
    assert not isinstance(caught.value, Ambiguous)
    partial = caught.value.partial
    assert partial is not None and set(partial.accepted) == {1, 2}
    assert len(server.received) == 2
    result = provider.send(message(), recipients(2, start=3), "k")  # a new connection
    assert set(result.accepted) == {3, 4}
    assert server.connections == 2


def test_smtp_break_while_the_data_answer_is_due_is_ambiguous(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server(drop_after_data=2)
    provider = smtp_provider(f"smtp://127.0.0.1:{server.port}")
    with pytest.raises(Ambiguous, match=re.escape("reader2@example.com")) as caught:
        provider.send(message(), recipients(3), "k")
    partial = caught.value.partial
    assert partial is not None and set(partial.accepted) == {1}
    assert len(server.received) == 2  # the server did take the second one


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://host", "must look like smtp://"),
        ("smtp://", "has no host"),
        ("smtp://host:port", "invalid port"),
        ("smtp://host?tls=yes", "unknown option tls"),
        ("smtp://host?starttls=maybe", "starttls must be auto, require or never"),
    ],
)
def test_smtp_url_problems(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_url(url)


def test_smtp_url_parts_and_the_password_stays_hidden() -> None:
    target = parse_url("smtp://user%40x:s%3Acret@mail.example.org?starttls=require")
    assert (target.host, target.port, target.implicit_tls, target.starttls) == (
        "mail.example.org",
        587,
        False,
        "require",
    )
    assert (target.username, target.password) == ("user@x", "s:cret")
    assert "s:cret" not in repr(target)
    assert parse_url("smtps://mail.example.org").port == 465


def test_smtp_knows_which_hosts_are_this_machine() -> None:
    """A password may go without TLS only to these (see SmtpProvider._connect)."""
    assert parse_url("smtp://u:p@localhost").loopback
    assert parse_url("smtp://u:p@127.0.0.2").loopback
    assert parse_url("smtp://u:p@[::1]").loopback
    assert not parse_url("smtp://u:p@192.0.2.1").loopback
    assert not parse_url("smtp://u:p@mail.example.org").loopback


def test_provider_errors_carry_no_partial_by_default() -> None:
    assert ProviderError("x").partial is None
    assert Throttled("x", 3).partial is None
    partial = BatchResult(accepted={1: "id"})
    assert Ambiguous("x", partial=partial).partial is partial


# ---------------------------------------------------------------------------
# International addresses (RFC 6530-6533), and one recipient that cannot be built

IDN = "ann@bücher.de"  # as stored: the domain in Unicode
IDN_WIRE = "ann@xn--bcher-kva.de"
UTF8_LOCAL = "zoë@example.org"


def international() -> list[Recipient]:
    return [recipient(1), recipient(2, IDN, "Ann Bücher"), recipient(3, UTF8_LOCAL, "Zoë")]


def parse_utf8(data: bytes) -> EmailMessage:
    parsed = email.message_from_string(data.decode("utf-8"), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_http_providers_send_international_addresses_where_they_can(
    provider_for: Callable[..., Provider], double: DoubleServer, name: str
) -> None:
    result = provider_for(name).send(message(), international(), "lp-12-1-intl")
    kept = double.messages
    # Every provider takes an IDN domain in its xn-- form.
    assert 2 in result.accepted
    [got] = kept[IDN_WIRE]
    assert got.subject == "Hello Ann Bücher"
    if name == "mailgun":  # Mailgun offers SMTPUTF8: the address goes as it is
        assert set(result.accepted) == {1, 2, 3}
        [zoe] = kept[UTF8_LOCAL]
        assert zoe.subject == "Hello Zoë"
        assert zoe.headers["List-Unsubscribe"].endswith("token-3>")
    else:  # SendGrid and Postmark take ASCII addresses only
        assert set(result.accepted) == {1, 2}
        assert "SMTPUTF8" in result.rejected[3] and name in result.rejected[3]
        assert UTF8_LOCAL not in kept
    assert set(kept) <= {"reader1@example.com", IDN_WIRE, UTF8_LOCAL}


def test_outbox_writes_valid_messages_for_international_addresses(
    outbox: OutboxProvider, tmp_path: Path
) -> None:
    result = outbox.send(message(), international(), "lp-12-1-intl")
    assert set(result.accepted) == {1, 2, 3}
    folder = tmp_path / "outbox" / "issue-12"
    idn = read_eml(folder / "2.eml")
    assert idn["To"].addresses[0].addr_spec == IDN_WIRE
    assert (folder / "2.eml").read_bytes().isascii()  # an ordinary message
    raw = (folder / "3.eml").read_bytes()
    assert UTF8_LOCAL.encode() in raw  # RFC 6532: the header is UTF-8, not encoded words
    zoe = parse_utf8(raw)
    assert str(zoe["To"]) == f"Zoë <{UTF8_LOCAL}>"
    assert zoe["Subject"] == "Hello Zoë"
    body = zoe.get_body(("plain",))
    assert body is not None and "token-3" in body.get_content()
    assert outbox.accepted("lp-12-1-intl", datetime.now(UTC) - timedelta(minutes=1)) == {
        "reader1@example.com",
        IDN_WIRE,
        UTF8_LOCAL,
    }


def test_smtp_sends_international_addresses_with_smtputf8_when_offered(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server(smtputf8=True)
    result = smtp_provider(f"smtp://127.0.0.1:{server.port}").send(message(), international(), "k")
    assert set(result.accepted) == {1, 2, 3} and result.rejected == {}
    by_rcpt = {tuple(r.recipients): r for r in server.received}
    assert set(by_rcpt) == {("reader1@example.com",), (IDN_WIRE,), (UTF8_LOCAL,)}
    # Only the transaction that needs it asks for SMTPUTF8.
    assert server.mail_options == ["", "", "SMTPUTF8 BODY=8BITMIME"]
    zoe = by_rcpt[(UTF8_LOCAL,)].message
    assert zoe["To"].addresses[0].username == "zoë"
    assert zoe["Subject"] == "Hello Zoë"
    assert by_rcpt[(IDN_WIRE,)].data.isascii()


def test_smtp_without_smtputf8_fails_only_that_recipient(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server()
    result = smtp_provider(f"smtp://127.0.0.1:{server.port}").send(message(), international(), "k")
    assert set(result.accepted) == {1, 2}
    assert "SMTPUTF8" in result.rejected[3] and "127.0.0.1" in result.rejected[3]
    assert [r.recipients for r in server.received] == [["reader1@example.com"], [IDN_WIRE]]
    assert "SMTPUTF8" not in " ".join(server.mail_options)


def unbuildable() -> list[Recipient]:
    """A batch with two recipients in the middle that no channel can build a message for:
    a name that is not Unicode (bytes decoded with surrogateescape) and a header value
    with a line break (a header injection)."""
    bad_name = recipient(2, "eve@example.com", "Eve \udce9")
    good = recipient(3, "mallory@example.com")
    injected = Recipient(
        subscriber_id=3,
        email=good.email,
        name=good.name,
        fields=good.fields,
        headers={"List-Unsubscribe": "<https://x.example/u>\r\nBcc: victim@example.org"},
    )
    bad_domain = recipient(4, "ann@bü_cher.de")  # not a valid IDN, stored before checks
    return [recipient(1), bad_name, injected, bad_domain, recipient(5)]


def _check_unbuildable(result: BatchResult) -> None:
    assert set(result.accepted) == {1, 5}
    assert set(result.rejected) == {2, 3, 4}
    assert "UnicodeEncodeError" in result.rejected[2]
    assert "line break" in result.rejected[3]
    assert "IDN" in result.rejected[4]


@pytest.mark.parametrize("name", HTTP_PROVIDERS)
def test_one_recipient_that_cannot_be_built_never_stops_an_http_batch(
    provider_for: Callable[..., Provider], double: DoubleServer, name: str
) -> None:
    result = provider_for(name).send(message(), unbuildable(), "lp-12-1-bad")
    _check_unbuildable(result)
    assert set(double.messages) == {"reader1@example.com", "reader5@example.com"}


def test_one_recipient_that_cannot_be_built_never_stops_an_outbox_batch(
    outbox: OutboxProvider, tmp_path: Path
) -> None:
    _check_unbuildable(outbox.send(message(), unbuildable(), "lp-12-1-bad"))
    folder = tmp_path / "outbox" / "issue-12"
    assert sorted(p.name for p in folder.iterdir()) == ["1.eml", "5.eml"]


def test_one_recipient_that_cannot_be_built_never_stops_an_smtp_batch(
    smtp_server: Callable[..., SmtpServer], smtp_provider: Callable[..., SmtpProvider]
) -> None:
    server = smtp_server(smtputf8=True)
    provider = smtp_provider(f"smtp://127.0.0.1:{server.port}")
    _check_unbuildable(provider.send(message(), unbuildable(), "k"))
    assert [r.recipients for r in server.received] == [
        ["reader1@example.com"],
        ["reader5@example.com"],
    ]
    assert all(b"victim" not in r.data for r in server.received)


# ---------------------------------------------------------------------------
# DKIM


@pytest.fixture(scope="session")
def dkim_key() -> bytes:
    from pipeline.sending import dkim

    return dkim.new_key()


def dkim_settings(dkim_key: bytes, tmp_path: Path, **values: Any) -> dict[str, Any]:
    path = tmp_path / "dkim.pem"
    path.write_bytes(dkim_key)
    return {"dkim_private_key": str(path), "dkim_selector": "lp1", **values}


def dkim_verifies(data: bytes, dkim_key: bytes, selector: str = "lp1") -> bool:
    import dkim as dkimpy

    from pipeline.sending import dkim

    record = dkim.public_record_value(dkim_key).encode()

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{selector}._domainkey.example.org.".encode() else None

    return bool(dkimpy.verify(data, dnsfunc=dns))


def signed_headers(data: bytes) -> set[str]:
    parsed = email.message_from_bytes(data, policy=default_policy)
    signature = " ".join(str(parsed["DKIM-Signature"]).split())
    h = re.search(r"\bh=([^;]+)", signature)
    assert h is not None
    return {name.strip().lower() for name in h.group(1).split(":")}


def test_outbox_mail_is_dkim_signed_and_an_edit_breaks_the_signature(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    dkim_key: bytes,
    providers: list[Provider],
) -> None:
    outbox = create(
        make_settings(**dkim_settings(dkim_key, tmp_path, outbox_dir=tmp_path / "outbox"))
    )
    providers.append(outbox)
    outbox.send(message(), international(), "lp-12-1-dkim")
    folder = tmp_path / "outbox" / "issue-12"
    for n in (1, 2, 3):
        data = (folder / f"{n}.eml").read_bytes()
        assert data.startswith(b"DKIM-Signature:")
        assert dkim_verifies(data, dkim_key), n
    data = (folder / "1.eml").read_bytes()
    assert signed_headers(data) >= {
        "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
        "list-unsubscribe", "list-unsubscribe-post",
    }  # fmt: skip
    assert b"d=example.org" in data and b"s=lp1" in data
    for old, new in [
        (b"Subject: Hello Reader 1", b"Subject: Hello Reader 9"),
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"),
        (b"token-1>", b"token-9>"),
    ]:
        assert old in data
        assert not dkim_verifies(data.replace(old, new), dkim_key), old
    assert not dkim_verifies(data, dkim_key, selector="other")


def test_smtp_mail_is_dkim_signed(
    smtp_server: Callable[..., SmtpServer],
    smtp_provider: Callable[..., SmtpProvider],
    tmp_path: Path,
    dkim_key: bytes,
) -> None:
    server = smtp_server(smtputf8=True)
    provider = smtp_provider(f"smtp://127.0.0.1:{server.port}", **dkim_settings(dkim_key, tmp_path))
    assert set(provider.send(message(), international(), "k").accepted) == {1, 2, 3}
    assert len(server.received) == 3
    for received in server.received:
        assert dkim_verifies(received.data, dkim_key)
        assert {"list-unsubscribe", "list-unsubscribe-post"} <= signed_headers(received.data)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("/nonexistent/dkim.pem", "cannot be read"),
        ("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----", "not an unencrypted"),
    ],
)
def test_a_bad_dkim_key_is_a_clear_configuration_error(
    make_settings: Callable[..., Settings], tmp_path: Path, value: str, problem: str
) -> None:
    settings = make_settings(dkim_private_key=value, dkim_selector="lp1", outbox_dir=tmp_path / "o")
    with pytest.raises(ConfigError, match=problem):
        create(settings)


def test_a_dkim_key_without_a_selector_is_refused(
    make_settings: Callable[..., Settings], tmp_path: Path, dkim_key: bytes
) -> None:
    values = dkim_settings(dkim_key, tmp_path, dkim_selector="")
    with pytest.raises(ConfigError, match="dkim_selector"):
        create(make_settings(**values))
