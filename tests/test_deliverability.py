"""Deliverability end to end: international addresses and unbuildable recipients through
the sender, what a send needs before it starts (https, the signing key, credentials),
and the DNS records for the sending domain."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner, Result
from pydantic import SecretStr

from letterpress_testing.server import DoubleServer
from pipeline.audience import subscribers
from pipeline.cli.main import main
from pipeline.ops import status
from pipeline.sending import dkim, issues, preflight
from pipeline.sending.issues import ArticleRef
from pipeline.sending.parts import SendingParts
from pipeline.sending.providers.base import BatchResult, Message, Recipient
from pipeline.sending.providers.outbox import OutboxProvider
from pipeline.sending.recover import reconcile
from pipeline.settings import Settings
from pipeline.store import db
from tests.cluster import SECRET, seed_subscribers, wait_for
from tests.conftest import SEEDS
from tests.service import RunningService
from tests.test_delivery import log, runtime_for, send_all, start  # noqa: F401 (a fixture)
from tests.test_providers import SmtpServer, smtp_server  # noqa: F401 (a fixture)
from tests.test_service import service_for  # noqa: F401 (a fixture)

IDN_TYPED = "ann@xn--bcher-kva.de"  # how one person typed it
IDN = "ann@bücher.de"  # as stored
UTF8_LOCAL = "zoë@example.org"
BROKEN = "bad@bü_cher.de"  # not a valid IDN: written by hand, before any check


@pytest.fixture
def double() -> Iterator[DoubleServer]:
    with DoubleServer(keep_messages=True) as server:
        yield server


def international_list(url: str) -> dict[str, int]:
    """Three ordinary subscribers, two international ones and one whose address cannot be
    written on any channel, on the list ``main``; their ids by address."""
    seed_subscribers(url, 3)
    engine = db.engine(url)
    ids = {
        address: subscribers.add(engine, typed, lists=["main"], status="active")
        for address, typed in [(IDN, IDN_TYPED), (UTF8_LOCAL, "Zoë@Example.org")]
    }
    at = datetime.now(UTC)
    with engine.begin() as conn:
        broken = conn.execute(
            sa.insert(db.subscribers)
            .values(
                email=BROKEN,
                name="Broken",
                status="active",
                time_zone="UTC",
                attributes={},
                created_at=at,
                confirmed_at=at,
                updated_at=at,
            )
            .returning(db.subscribers.c.id)
        ).scalar_one()
        list_id = conn.scalar(sa.select(db.lists.c.id).where(db.lists.c.name == "main"))
        conn.execute(
            sa.insert(db.memberships).values(list_id=list_id, subscriber_id=broken, created_at=at)
        )
    ids[BROKEN] = int(broken)
    return ids


def failures(rt: SendingParts, issue_id: int) -> dict[int, str]:
    d = db.deliveries.c
    with rt.engine.connect() as conn:
        rows = conn.execute(
            sa.select(d.subscriber_id, d.reason).where(d.issue_id == issue_id, d.status == "failed")
        )
        return {int(sid): str(reason) for sid, reason in rows}


def test_addresses_are_stored_in_one_normal_form(sqlite_url: str) -> None:
    engine = db.engine(sqlite_url)
    first = subscribers.add(engine, IDN_TYPED)
    assert subscribers.add(engine, "Ann@Bücher.DE") == first
    with engine.connect() as conn:
        assert conn.scalar(sa.select(db.subscribers.c.email)) == IDN
    assert subscribers.normalise_email("Zoë@Example.org") == UTF8_LOCAL


@pytest.mark.parametrize("provider", ["outbox", "mailgun", "sendgrid", "postmark"])
def test_an_issue_reaches_international_addresses_and_a_broken_one_fails_alone(
    database_url: str,
    runtime_for: Callable[..., SendingParts],  # noqa: F811
    double: DoubleServer,
    tmp_path: Path,
    provider: str,
) -> None:
    ids = international_list(database_url)
    rt = runtime_for(database_url, provider=provider, batch_size=100)
    issue_id, batches = start(rt)
    assert len(batches) == 1  # everyone in one batch: the broken address sits in the middle
    [outcome] = send_all(rt, batches)
    assert outcome.status == "sent"
    issue = issues.get(rt.engine, issue_id)
    assert issue.status == "sent"
    failed = failures(rt, issue_id)
    assert "IDN" in failed.pop(ids[BROKEN])
    utf8_channel = provider in ("outbox", "mailgun")
    if utf8_channel:
        assert failed == {}
        assert log(rt, issue_id) == {"sent": 5, "failed": 1}
    else:
        assert "SMTPUTF8" in failed.pop(ids[UTF8_LOCAL])
        assert log(rt, issue_id) == {"sent": 4, "failed": 2}
    if provider == "outbox":
        folder = tmp_path / "outbox" / f"issue-{issue_id}"
        assert {p.stem for p in folder.glob("*.eml")} == {
            str(i) for i in (1, 2, 3, ids[IDN], ids[UTF8_LOCAL])
        }
        raw = (folder / f"{ids[UTF8_LOCAL]}.eml").read_bytes()
        assert f"To: <{UTF8_LOCAL}>".encode() in raw
    else:
        expected = {f"reader{i}@example.com" for i in (1, 2, 3)} | {"ann@xn--bcher-kva.de"}
        assert set(double.messages) == expected | ({UTF8_LOCAL} if utf8_channel else set())


def test_smtp_sends_international_addresses_over_smtputf8(
    sqlite_url: str,
    runtime_for: Callable[..., SendingParts],  # noqa: F811
    smtp_server: Callable[..., SmtpServer],  # noqa: F811
) -> None:
    ids = international_list(sqlite_url)
    server = smtp_server(smtputf8=True)
    rt = runtime_for(
        sqlite_url,
        provider="smtp",
        smtp_url=f"smtp://127.0.0.1:{server.port}",
        delivery_sandbox=True,
        batch_size=100,
    )
    issue_id, batches = start(rt)
    send_all(rt, batches)
    assert issues.get(rt.engine, issue_id).status == "sent"
    assert set(failures(rt, issue_id)) == {ids[BROKEN]}
    assert sorted(r.recipients[0] for r in server.received) == sorted(
        [*(f"reader{i}@example.com" for i in (1, 2, 3)), "ann@xn--bcher-kva.de", UTF8_LOCAL]
    )


def test_a_name_with_line_breaks_is_written_on_one_line(
    sqlite_url: str,
    runtime_for: Callable[..., SendingParts],  # noqa: F811
    tmp_path: Path,
) -> None:
    seed_subscribers(sqlite_url, 1)
    engine = db.engine(sqlite_url)
    with engine.begin() as conn:  # a CSV import keeps names with line breaks
        conn.execute(sa.update(db.subscribers).values(name="Ann\r\nBcc: victim@example.org"))
    rt = runtime_for(sqlite_url, provider="outbox")
    issue_id, batches = start(rt)
    send_all(rt, batches)
    raw = (tmp_path / "outbox" / f"issue-{issue_id}" / "1.eml").read_bytes()
    assert b"\r\nBcc:" not in raw
    assert b'To: "Ann Bcc: victim@example.org" <reader1@example.com>' in raw
    assert log(rt, issue_id) == {"sent": 1}


# -- what a send needs --------------------------------------------------------------------


def make(make_settings: Callable[..., Settings], **values: Any) -> Settings:
    base: dict[str, Any] = {
        "secret_key": SECRET,
        "sender_email": "news@example.org",
        "mailgun_api_key": "key-1",
        "mailgun_domain": "mg.example.org",
    }
    return make_settings(**{**base, **values})


def test_a_real_send_needs_an_https_base_url(make_settings: Callable[..., Settings]) -> None:
    real = make(make_settings, provider="mailgun", base_url="http://news.example.org")
    assert preflight.real_send(real)
    [problem] = preflight.problems(real)
    assert "LETTERPRESS_BASE_URL is http://news.example.org" in problem
    assert "https" in problem and "RFC 8058" in problem
    assert (
        preflight.problems(real.model_copy(update={"base_url": "https://news.example.org"})) == []
    )
    # A sandbox mark is for an SMTP server that delivers to nobody, never for a provider.
    assert preflight.problems(real.model_copy(update={"delivery_sandbox": True})) != []
    # The outbox and the double (an HTTP API on loopback) deliver to nobody.
    assert preflight.problems(real.model_copy(update={"provider": "outbox"})) == []
    double = real.model_copy(update={"mailgun_base_url": "http://127.0.0.1:9999"})
    assert not preflight.real_send(double) and preflight.problems(double) == []
    # A relay on loopback is a real send: it hands the mail on.
    smtp = real.model_copy(
        update={"provider": "smtp", "smtp_url": SecretStr("smtp://127.0.0.1:25")}
    )
    assert preflight.real_send(smtp) and len(preflight.problems(smtp)) == 1
    assert preflight.problems(smtp.model_copy(update={"delivery_sandbox": True})) == []


def test_an_https_real_send_needs_a_valid_sender(make_settings: Callable[..., Settings]) -> None:
    settings = make(
        make_settings, provider="mailgun", base_url="https://news.example.org", sender_email="x"
    )
    [problem] = preflight.problems(settings)
    assert problem.startswith("sender_email:")
    assert preflight.problems(settings.model_copy(update={"sender_email": "a@example.org"})) == []


def test_every_problem_is_named_at_once(make_settings: Callable[..., Settings]) -> None:
    settings = make(
        make_settings,
        provider="mailgun",
        base_url="http://news.example.org",
        secret_key="",
        mailgun_api_key="",
    )
    with pytest.raises(Exception, match="cannot send") as caught:
        preflight.require(settings, "send")
    text = str(caught.value)
    for needle in ("LETTERPRESS_SECRET_KEY", "MAILGUN_API_KEY", "LETTERPRESS_BASE_URL"):
        assert needle in text


def cli(tmp_path: Path, env: dict[str, str], *args: str) -> Result:
    config = tmp_path / "empty.toml"
    config.write_text("")
    return CliRunner().invoke(main, ["--config", str(config), *args], env=env)


def test_schedule_worker_and_beat_refuse_what_cannot_send(
    sqlite_url: str,
    tmp_path: Path,
    runtime_for: Callable[..., SendingParts],  # noqa: F811
) -> None:
    rt = runtime_for(sqlite_url, provider="outbox")
    issue_id = issues.create(
        rt.engine, subject="S", articles=[ArticleRef(SEEDS[0], True)], audience=()
    )
    env = {
        "DATABASE_URL": sqlite_url,
        "LETTERPRESS_SECRET_KEY": "",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # never reached: the check comes first
        "LETTERPRESS_CONTENT_DIR": str(rt.settings.content_dir),
    }
    for args, action in [
        (("issue", "schedule", str(issue_id), "--at", "now"), f"schedule issue {issue_id}"),
        (("worker",), "start a worker"),
        (("beat", "--once"), "start the beat"),
    ]:
        result = cli(tmp_path, env, *args)
        assert result.exit_code == 2, (args, result.output)
        assert f"error: cannot {action}:" in result.output
        assert "LETTERPRESS_SECRET_KEY" in result.output
    assert issues.get(rt.engine, issue_id).status == "draft"
    https = {**env, "LETTERPRESS_SECRET_KEY": SECRET, "LETTERPRESS_PROVIDER": "mailgun",
             "MAILGUN_API_KEY": "k", "MAILGUN_DOMAIN": "mg.example.org"}  # fmt: skip
    result = cli(tmp_path, https, "issue", "schedule", str(issue_id), "--at", "now")
    assert result.exit_code == 2 and "https List-Unsubscribe URL" in result.output
    assert issues.get(rt.engine, issue_id).status == "draft"


@pytest.mark.parametrize(
    ("broken_settings", "named"),
    [
        ({"provider": "outbox", "secret_key": ""}, "LETTERPRESS_SECRET_KEY"),
        (
            {  # never reached: the check comes before any request
                "provider": "mailgun",
                "mailgun_base_url": "https://api.mailgun.net",
                "base_url": "http://news.example.org",
            },
            "https List-Unsubscribe URL",
        ),
    ],
)
def test_a_worker_that_cannot_send_pauses_the_issue_and_says_why(
    sqlite_url: str,
    runtime_for: Callable[..., SendingParts],  # noqa: F811
    tmp_path: Path,
    broken_settings: dict[str, Any],
    named: str,
) -> None:
    seed_subscribers(sqlite_url, 30)
    good = runtime_for(sqlite_url, provider="outbox", batch_size=10)
    issue_id, batches = start(good)
    broken = runtime_for(sqlite_url, batch_size=10, **broken_settings)
    outcomes = [broken.send_batch(b) for b in batches]
    assert [o.status for o in outcomes] == ["released"] * 3
    issue = issues.get(good.engine, issue_id)
    assert issue.status == "paused"
    assert "the workers cannot send" in issue.status_reason
    assert named in issue.status_reason
    assert f"letterpress issue resume {issue_id}" in issue.status_reason
    assert log(good, issue_id) == {}  # nobody was claimed, nobody lost
    report = "\n".join(status.format_report(status.gather(good.engine, good.settings, None, [])))
    assert named in report
    with good.engine.connect() as conn:
        events = [e for (e,) in conn.execute(sa.select(db.issue_events.c.message)) if "cannot" in e]
    assert len(events) == 1  # paused once, not once per batch
    # Fixed and resumed: every batch goes, each recipient once.
    send_all(good, issues.resume(good.engine, issue_id))
    assert issues.get(good.engine, issue_id).status == "sent"
    assert log(good, issue_id) == {"sent": 30}
    assert len(list((tmp_path / "outbox" / f"issue-{issue_id}").glob("*.eml"))) == 30


# -- DNS records --------------------------------------------------------------------------


def test_dns_prints_the_records_for_the_sending_domain(tmp_path: Path) -> None:
    key = tmp_path / "dkim.pem"
    env = {"LETTERPRESS_SENDER_EMAIL": "news@example.org", "LETTERPRESS_PROVIDER": "smtp"}
    made = cli(tmp_path, env, "dns", "--new-key", str(key))
    assert made.exit_code == 0, made.output
    assert key.stat().st_mode & 0o777 == 0o600
    assert "set LETTERPRESS_DKIM_PRIVATE_KEY" in made.output
    again = cli(tmp_path, env, "dns", "--new-key", str(key))
    assert again.exit_code == 1 and "exists already" in again.output
    env |= {"LETTERPRESS_DKIM_PRIVATE_KEY": str(key), "LETTERPRESS_DKIM_SELECTOR": "lp1"}
    result = cli(tmp_path, env, "dns")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    record = next(line for line in lines if line.startswith("lp1._domainkey.example.org. IN TXT"))
    value = "".join(re.findall(r'"([^"]*)"', record))
    assert value == dkim.public_record_value(key.read_bytes())
    assert all(len(chunk) <= 255 for chunk in re.findall(r'"([^"]*)"', record))
    assert 'example.org. IN TXT "v=spf1 mx ~all"' in lines
    assert any(line.startswith('_dmarc.example.org. IN TXT "v=DMARC1; p=none;') for line in lines)
    assert sum(line.startswith("# ") for line in lines) == 3  # one line on what each does
    mailgun = cli(tmp_path, {**env, "LETTERPRESS_PROVIDER": "mailgun"}, "dns")
    assert "mailgun signs your mail" in mailgun.output
    assert 'example.org. IN TXT "v=spf1 mx include:mailgun.org ~all"' in mailgun.output


def test_the_dkim_key_is_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "letterpress.toml"
    config.write_text('dkim_private_key = "/etc/dkim.pem"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "dns"])
    assert result.exit_code == 2
    assert "LETTERPRESS_DKIM_PRIVATE_KEY" in result.output


class FaultyOutbox(OutboxProvider):
    """The outbox with a bug that strikes after its first file: an exception that is not
    a provider error, from the middle of a batch."""

    def send(self, message: Message, recipients: Sequence[Recipient], key: str) -> BatchResult:
        super().send(message, recipients[:1], key)
        raise RuntimeError("a fault in the adapter")


def test_an_adapter_fault_makes_the_batch_ambiguous_and_reconcile_settles_it(
    sqlite_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    seed_subscribers(sqlite_url, 5)
    settings = make_settings(
        database_url=sqlite_url, secret_key=SECRET, outbox_dir=tmp_path / "outbox"
    )
    faulty = SendingParts(settings, provider=FaultyOutbox(settings))
    issue_id, batches = start(faulty)
    [outcome] = send_all(faulty, batches)
    assert outcome.status == "ambiguous"
    assert "RuntimeError" in outcome.detail
    assert issues.get(faulty.engine, issue_id).status == "sending"  # nothing settled blindly
    outbox = OutboxProvider(settings)
    settled = reconcile(faulty.engine, issue_id, outbox)
    assert (settled.sent, settled.requeued) == (1, batches)  # the file written counts as sent
    fixed = SendingParts(settings, provider=outbox)
    send_all(fixed, settled.requeued)
    assert issues.get(fixed.engine, issue_id).status == "sent"
    assert log(fixed, issue_id) == {"sent": 5}
    folder = tmp_path / "outbox" / f"issue-{issue_id}"
    assert sorted(int(p.stem) for p in folder.glob("*.eml")) == [1, 2, 3, 4, 5]


# -- sign-up ------------------------------------------------------------------------------


def test_international_addresses_sign_up_and_confirm(
    sqlite_url: str,
    service_for: Callable[..., RunningService],  # noqa: F811
) -> None:
    svc = service_for(sqlite_url)
    for typed in ("Zoë@Example.org", IDN_TYPED):
        answer = requests.post(
            svc.url + "/api/subscribe", json={"email": typed, "name": "Zoë"}, timeout=10
        )
        assert answer.status_code == 202, answer.text
    folder = svc.settings.outbox_dir / "signup-confirm"
    files = wait_for(
        lambda: sorted(folder.glob("*.eml")) if len(list(folder.glob("*.eml"))) == 2 else None,
        10,
        "the two confirmation emails",
    )
    texts = [f.read_bytes().decode("utf-8") for f in files]
    assert any(f'To: "Zoë" <{UTF8_LOCAL}>' in t for t in texts)
    assert any("<ann@xn--bcher-kva.de>" in t for t in texts)
    for text in texts:
        url = re.search(r"(http://\S+/confirm/[\w.-]+)", text.replace("=\r\n", ""))
        assert url is not None
        assert requests.post(url.group(1), timeout=10).status_code == 200
    with svc.engine.connect() as conn:
        rows = dict(conn.execute(sa.select(db.subscribers.c.email, db.subscribers.c.status)).all())
    assert rows == {UTF8_LOCAL: "active", IDN: "active"}


def test_a_sign_up_the_channel_cannot_carry_is_logged_and_the_service_goes_on(
    sqlite_url: str,
    service_for: Callable[..., RunningService],  # noqa: F811
    smtp_server: Callable[..., SmtpServer],  # noqa: F811
) -> None:
    server = smtp_server()  # no SMTPUTF8
    svc = service_for(sqlite_url, provider="smtp", smtp_url=f"smtp://127.0.0.1:{server.port}")
    for address in (UTF8_LOCAL, "ada@example.com"):
        answer = requests.post(svc.url + "/api/subscribe", json={"email": address}, timeout=10)
        assert answer.status_code == 202
    wait_for(lambda: server.received, 10, "the ASCII address's confirmation")
    assert [r.recipients for r in server.received] == [["ada@example.com"]]
    wait_for(lambda: "needs SMTPUTF8" in svc.output(), 10, "the reason in the service's log")
    assert "Traceback" not in svc.output()
    assert UTF8_LOCAL not in svc.output()  # the log names the subscriber id, not the address
