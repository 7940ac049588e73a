"""``letterpress doctor``: for a person setting Letterpress up, the checks of ``/readyz``
and every setting a send needs, said in words, with what to do about each problem.

Secrets are never printed: a key, token or password is "set" or "not set".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline.ops import health
from pipeline.sending import preflight
from pipeline.settings import Settings
from pipeline.store import db

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from pipeline.broker import Broker, WorkerInfo

API_KEYS = {
    "mailgun": ("mailgun_api_key", "MAILGUN_API_KEY"),
    "sendgrid": ("sendgrid_api_key", "SENDGRID_API_KEY"),
    "postmark": ("postmark_server_token", "POSTMARK_SERVER_TOKEN"),
}
WEBHOOK_SECRETS = {
    "mailgun": ("mailgun_webhook_signing_key", "MAILGUN_WEBHOOK_SIGNING_KEY"),
    "sendgrid": ("sendgrid_webhook_public_key", "SENDGRID_WEBHOOK_PUBLIC_KEY"),
    "postmark": ("postmark_webhook_password", "POSTMARK_WEBHOOK_PASSWORD"),
}


@dataclass(frozen=True)
class Finding:
    ok: bool
    topic: str
    text: str


@dataclass(frozen=True)
class Report:
    checks: list[health.Check]
    settings: list[Finding]
    problems: list[str]  # what stops a send (``preflight.problems``)
    workers: list[WorkerInfo] | None

    @property
    def ok(self) -> bool:
        return health.ready(self.checks) and not self.problems and all(f.ok for f in self.settings)


def _set(value: Any) -> bool:
    secret = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    return bool(str(secret or "").strip())


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _provider(s: Settings) -> Iterator[Finding]:
    if s.provider == "outbox":
        yield Finding(
            True,
            "provider",
            f"outbox: messages are written as files under {s.outbox_dir}/ and reach nobody;"
            " set provider to mailgun, sendgrid, postmark or smtp to send for real",
        )
        return
    if s.provider == "smtp":
        sandbox = " (a sandbox that delivers to nobody)" if s.delivery_sandbox else ""
        target = _safe_url(s.smtp_url.get_secret_value())
        yield Finding(True, "provider", f"SMTP server {target}{sandbox} (SMTP_URL)")
        return
    field, env = API_KEYS[s.provider]
    base = getattr(s, preflight.HTTP_APIS[s.provider])
    key_set = _set(getattr(s, field))
    yield Finding(
        key_set,
        "provider",
        f"{s.provider} at {base}; {env} is "
        + ("set" if key_set else "not set: set it to the API key"),
    )
    if s.provider == "mailgun":
        yield Finding(
            bool(s.mailgun_domain),
            "provider",
            f"Mailgun sending domain: {s.mailgun_domain or 'not set: set MAILGUN_DOMAIN'}",
        )
    hook_field, hook_env = WEBHOOK_SECRETS[s.provider]
    hook_set = _set(getattr(s, hook_field))
    yield Finding(
        hook_set,
        "webhooks",
        f"{hook_env} is "
        + (
            "set: bounces and complaints are verified and counted"
            if hook_set
            else "not set: the provider's bounce and complaint webhooks are refused, so bounced"
            " and complaining addresses keep being mailed; set it from the provider's webhook page"
        ),
    )


def _sender(s: Settings) -> Iterator[Finding]:
    yield Finding(True, "sender", f"From: {s.sender_name} <{s.sender_email}>")
    yield Finding(
        bool(s.postal_address.strip()),
        "sender",
        f"postal address: {s.postal_address}"
        if s.postal_address.strip()
        else "postal address: not set; CAN-SPAM wants one in every commercial email:"
        " set postal_address",
    )
    https = s.base_url.startswith("https://")
    yield Finding(
        https or not preflight.real_send(s),
        "links",
        f"links and one-click unsubscribe point at {s.base_url}"
        + ("" if https else " (http: fine for a sandbox, refused for a real send)"),
    )


def _signing(s: Settings) -> Iterator[Finding]:
    previous = [k for k in s.previous_secret_keys.get_secret_value().split(",") if k.strip()]
    yield Finding(
        _set(s.secret_key),
        "signing",
        "LETTERPRESS_SECRET_KEY is set"
        + (f"; {len(previous)} earlier key(s) still verify old links" if previous else "")
        if _set(s.secret_key)
        else "LETTERPRESS_SECRET_KEY is not set: links in emails cannot be signed;"
        " set it to a long random value, e.g. the output of"
        " `python -c 'import secrets; print(secrets.token_urlsafe(48))'`",
    )
    if s.provider in ("smtp", "outbox"):
        dkim = _set(s.dkim_private_key) and bool(s.dkim_selector)
        yield Finding(
            True,
            "dkim",
            f"signed with selector {s.dkim_selector} for {s.dkim_domain or 'each From domain'}"
            if dkim
            else "no key, so mail is not signed and is likelier to land in spam: run"
            " `letterpress dns --new-key dkim.pem` and set LETTERPRESS_DKIM_PRIVATE_KEY",
        )
    else:
        yield Finding(True, "dkim", f"{s.provider} signs the mail it sends")


def _pace(s: Settings, batch_size: int | None) -> Iterator[Finding]:
    size = f"{s.batch_size:,}" if s.batch_size else "the provider's largest"
    if batch_size and not s.batch_size:
        size = f"{batch_size:,} (the provider's largest)"
    yield Finding(
        True,
        "pace",
        f"{s.send_rate:,.0f} messages a second, bursts of {s.send_burst:,}; batches of {size};"
        f" a worker's lease on a batch lasts {s.lease_seconds} s",
    )
    yield Finding(
        True,
        "pace",
        f"an issue pauses when over {s.error_threshold:.0%} of its first"
        f" {s.error_min_recipients:,} or more recipients fail",
    )


def _queue(s: Settings, workers: list[WorkerInfo] | None) -> Iterator[Finding]:
    if not s.redis_url:
        yield Finding(
            True,
            "workers",
            "no REDIS_URL: sends run in the process that starts them (`letterpress serve`,"
            " `letterpress issue send`); set REDIS_URL and run `letterpress worker` to send"
            " from workers",
        )
        return
    redis_at = _safe_url(s.redis_url)
    if workers is None:
        yield Finding(False, "workers", f"the broker at {redis_at} does not answer")
    elif not workers:
        yield Finding(
            False,
            "workers",
            f"no worker answers on {redis_at}: start `letterpress worker` (and one"
            " `letterpress beat`) or scheduled issues never start",
        )
    else:
        names = ", ".join(f"{w.name} ({w.concurrency} at once)" for w in workers)
        yield Finding(True, "workers", f"{len(workers)} worker(s) answer on {redis_at}: {names}")


def examine(
    settings: Settings,
    engine: Engine,
    redis_client: Any | None,
    broker: Broker | None,
    batch_size: int | None = None,
) -> Report:
    checks = health.readiness(settings, engine, redis_client, broker)
    workers = broker.workers(timeout=1.0) if broker is not None else None
    found = [
        Finding(True, "database", f"{db._safe(settings.database_url)} (DATABASE_URL)"),
        *_queue(settings, workers),
        *_provider(settings),
        *_sender(settings),
        *_signing(settings),
        *_pace(settings, batch_size),
    ]
    return Report(checks, found, preflight.problems(settings), workers)


def lines(report: Report) -> Iterator[str]:
    yield "Checks (as /readyz makes them):"
    for c in report.checks:
        yield f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}"
    yield ""
    yield "What a send uses:"
    for f in report.settings:
        yield f"  {'ok  ' if f.ok else 'FIX '} {f.topic}: {f.text}"
    yield ""
    if report.problems:
        yield "A send would stop at once:"
        for p in report.problems:
            yield f"  - {p}"
    else:
        yield "Nothing stops a send."
    yield ""
    yield "Ready to send." if report.ok else "Not ready: fix what is marked FAIL or FIX above."
