"""The parts a sending process needs, built once from the settings and kept.

A worker process, the CLI, the demo and (without a broker) the service each wire one
``SendingParts``: the
database engine, the mail provider (its HTTP or SMTP connections are reused), the
shared rate limit (in Redis when ``REDIS_URL`` is set, in-process otherwise) and the
``Sender``. The steps of a send (start the due issues, sweep) are here too, so the
Celery tasks and the inline demo run the same code.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy.engine import Engine

from pipeline.content.store import Catalog, FileContentStore
from pipeline.errors import ConfigError
from pipeline.render import hot
from pipeline.sending import issues, preflight, recover
from pipeline.sending.batches import Dispatcher, Outcome, mark_enqueued
from pipeline.sending.prepare import prepare
from pipeline.sending.providers import create as create_provider
from pipeline.sending.providers.base import Provider
from pipeline.sending.ratelimit import Limiter, LocalRateLimiter, RateLimiter
from pipeline.sending.sender import Sender
from pipeline.settings import Settings
from pipeline.store import db
from pipeline.store.keys import Keys

log = logging.getLogger(__name__)


class SendingParts:
    def __init__(self, settings: Settings, provider: Provider | None = None) -> None:
        self.settings = settings
        self._provider = provider

    @cached_property
    def engine(self) -> Engine:
        return db.require_current(self.settings.database_url)

    @cached_property
    def provider(self) -> Provider:
        return self._provider or create_provider(self.settings)

    @cached_property
    def redis(self) -> Any:
        if not self.settings.redis_url:
            return None
        import redis

        return redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=10, socket_connect_timeout=5
        )

    @cached_property
    def limiter(self) -> Limiter:
        s = self.settings
        if self.redis is None:
            return LocalRateLimiter(s.send_rate, s.send_burst)
        key = Keys(s.redis_prefix).rate(account(s))
        return RateLimiter(self.redis, key, s.send_rate, s.send_burst)

    @cached_property
    def sender(self) -> Sender:
        preflight.require(self.settings, "send")
        return Sender(self.engine, self.settings, self.provider, self.limiter)

    def send_batch(self, batch_id: int, worker: str = "") -> Outcome:
        """Send one batch (``worker``: the Celery worker's name, for its lease); when the
        settings make sending impossible, the batch's issue pauses with the reason
        instead of failing batch after batch."""
        try:
            sender = self.sender
        except ConfigError as exc:
            log.error("batch %s: %s", batch_id, exc)
            recover.pause_for_configuration(self.engine, batch_id, str(exc))
            return Outcome(batch_id, "released", detail=str(exc))
        return sender.send_batch(batch_id, worker)

    def schedule(self, issue_id: int, at: datetime | None, tz: str = "UTC") -> datetime:
        """``issues.schedule``, once the settings can send it."""
        preflight.require(self.settings, f"schedule issue {issue_id}")
        return issues.schedule(self.engine, issue_id, at, tz)

    @property
    def batch_size(self) -> int:
        return self.provider.max_batch

    def catalog(self) -> Catalog:
        return FileContentStore(self.settings.content_dir, self.settings).catalog()

    def scores(self) -> dict[str, float]:
        return hot.current_scores(hot.Engagement.from_settings(self.settings))

    def start_due(self, dispatcher: Dispatcher) -> list[int]:
        """Claim the issues whose time has come, freeze them, enqueue their batches."""
        late = timedelta(hours=self.settings.late_after_hours)
        started = issues.claim_due(self.engine, late)
        for issue_id in started:
            self.prepare(issue_id, dispatcher)
        return started

    def prepare(self, issue_id: int, dispatcher: Dispatcher) -> list[int]:
        batches = prepare(
            self.engine, self.settings, self.catalog(), issue_id, self.batch_size, self.scores()
        )
        enqueue(self.engine, dispatcher, batches)
        return batches

    def sweep(self, dispatcher: Dispatcher, queue_empty: bool) -> recover.Sweep:
        found = recover.sweep(
            self.engine, self.settings, self.provider.idempotent, queue_empty=queue_empty
        )
        for issue_id in found.prepare:
            self.prepare(issue_id, dispatcher)
        enqueue(self.engine, dispatcher, found.requeue)
        return found

    def close(self) -> None:
        if self._provider is None and "provider" in self.__dict__:
            self.provider.close()


def enqueue(engine: Engine, dispatcher: Dispatcher, batch_ids: Sequence[int]) -> None:
    """Record when, then hand the batches to the queue (after the commit, always)."""
    if batch_ids:
        mark_enqueued(engine, batch_ids)
        dispatcher.enqueue(batch_ids)


def account(settings: Settings) -> str:
    """The provider account a rate limit belongs to (never the secret itself)."""

    def digest(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()[:12]

    match settings.provider:
        case "mailgun":
            return f"mailgun:{settings.mailgun_domain}"
        case "sendgrid":
            return f"sendgrid:{digest(settings.sendgrid_api_key.get_secret_value())}"
        case "postmark":
            return f"postmark:{digest(settings.postmark_server_token.get_secret_value())}"
        case "smtp":
            return f"smtp:{digest(settings.smtp_url.get_secret_value())}"
        case _:
            return "outbox"
