"""Webhook requests refused for their signature or credentials (401, 403: unsigned, forged,
stale, replayed, wrong credentials), counted per provider in ``webhook_failures``.

The web service counts; ``letterpress metrics``, another process, reads the counts as the
counter ``letterpress_webhook_signature_failures_total``. A rising count means someone is
posting forged requests, or the provider's key was rotated and ours was not.

Storage is bounded: one row per provider (the routes name the provider, the request
does not), however many requests are refused. A request refused for its body (400) is
not counted: its signature was never in question.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.audience.webhooks import PROVIDERS, WebhookRefused
from pipeline.store import db

log = logging.getLogger(__name__)
SIGNATURE_STATUSES = (401, 403)


def record(engine: Engine, provider: str, refusal: WebhookRefused) -> None:
    """Count ``refusal`` if it is about the signature or the credentials. The request is
    refused whatever happens here: a database error is logged, not raised."""
    if refusal.status not in SIGNATURE_STATUSES:
        return
    try:
        count(engine, provider)
    except sa.exc.SQLAlchemyError as exc:
        log.error("%s webhook: the refusal was not counted: %s", provider, exc)


def count(engine: Engine, provider: str) -> None:
    """One more refused request for ``provider`` (one of ``PROVIDERS``)."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    at = db.now()
    table = db.webhook_failures
    with engine.begin() as conn:
        conn.execute(
            db.insert(conn, table)
            .values(provider=provider, refused=1, last_at=at)
            .on_conflict_do_update(
                index_elements=["provider"],
                set_={"refused": table.c.refused + 1, "last_at": at},
            )
        )


def counts(engine: Engine) -> dict[str, int]:
    """Refused requests so far, for every provider (0 for one never refused)."""
    found = {provider: 0 for provider in PROVIDERS}
    with engine.connect() as conn:
        for provider, refused in conn.execute(
            sa.select(db.webhook_failures.c.provider, db.webhook_failures.c.refused)
        ):
            found[provider] = int(refused)
    return found
