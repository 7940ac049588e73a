"""What the handlers of one server process share: the ``Service`` (settings, database,
Redis, signer, provider, templates, the group writer), the ``service`` dependency that
hands it to them, and the headers of every page.

The routers (``public``, ``pages``, ``hooks``, ``admin``) import this module; ``app`` imports them
and builds the application. Nothing here imports a router or ``app``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from pipeline.audience.tokens import Signer
from pipeline.audience.tracking import LinkCache
from pipeline.broker import Broker, Edge
from pipeline.content.store import FileContentStore
from pipeline.errors import NotFound
from pipeline.render.hot import Engagement
from pipeline.render.policy import replies_open
from pipeline.render.proof import Proofs
from pipeline.render.templating import environment, site_context
from pipeline.sending.parts import SendingParts
from pipeline.sending.providers import create as create_provider
from pipeline.sending.providers.base import Provider
from pipeline.settings import Settings
from pipeline.web.limits import Limits
from pipeline.web.writer import GroupWriter

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, for middleware that must see it before the application;
    None when the client went away first."""
    chunks: list[bytes] = []
    message: Message = {"more_body": True}
    while message.get("more_body"):
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the application ``body`` (already read by middleware),
    then whatever comes after it (the client going away)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)
SLUGS_SECONDS = 300  # how long the published articles' slugs are kept


@dataclass(frozen=True)
class Published:
    """What the service knows of a published article."""

    title: str
    replies: bool  # its page takes replies (``policy.replies_open``)


@dataclass
class Service:
    """What the handlers share in one server process."""

    settings: Settings
    engine: Engine
    redis: Any | None
    provider_override: Provider | None = None
    edge: Edge = field(default_factory=Edge)  # how to reach the workers (workers.edge)
    _articles: tuple[float, dict[str, Published]] = (0.0, {})
    list_names: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # What a page keeps in this process between requests (the dashboard's slow answers).
    kept: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def signer(self) -> Signer:
        return Signer.from_settings(self.settings)

    @cached_property
    def templates(self) -> jinja2.Environment:
        return environment(self.settings.templates_dir)

    @cached_property
    def links(self) -> LinkCache:
        return LinkCache(self.engine)

    @cached_property
    def writer(self) -> GroupWriter:
        return GroupWriter(self.engine, self.settings, self.engagement)

    @cached_property
    def limits(self) -> Limits:
        return Limits(
            self.redis, self.settings.redis_prefix, self.settings.secret_key.get_secret_value()
        )

    @cached_property
    def engagement(self) -> Engagement | None:
        return Engagement(self.redis, self.settings) if self.redis is not None else None

    @cached_property
    def proofs(self) -> Proofs:
        """The console's previews of unsaved drafts, for their frames to load."""
        return Proofs(self.redis, self.settings.redis_prefix)

    @cached_property
    def broker(self) -> Broker | None:
        """The workers' queue when ``REDIS_URL`` is set (``pipeline.broker``), else None."""
        return self.edge.broker(self.settings)

    @cached_property
    def sending(self) -> SendingParts:
        """What sends batches in this process when there is no broker."""
        return SendingParts(self.settings, self.provider_override)

    @cached_property
    def provider(self) -> Provider:
        return self.provider_override or create_provider(self.settings)

    def articles(self) -> dict[str, Published]:
        """The published articles by slug (page views count for these only, replies go
        to these only), re-read from the content store every five minutes."""
        loaded, articles = self._articles
        if time.monotonic() - loaded < SLUGS_SECONDS and loaded:
            return articles
        with self._lock:
            try:
                catalog = FileContentStore(self.settings.content_dir, self.settings).catalog()
                articles = {
                    a.slug: Published(a.title, replies_open(self.settings, a))
                    for a in catalog.published()
                }
            except NotFound:
                articles = {}
            self._articles = (time.monotonic(), articles)
        return articles

    def articles_if_fresh(self) -> dict[str, Published] | None:
        """``articles()`` when it needs no reading of the content store, else None (an
        async handler then reads it in a thread)."""
        loaded, articles = self._articles
        return articles if loaded and time.monotonic() - loaded < SLUGS_SECONDS else None

    def article_slugs(self) -> Collection[str]:
        return self.articles().keys()

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(f"service/{name}").render(
            **site_context(self.settings), **context
        )
        return HTMLResponse(html, status_code=status, headers=page_headers())


def page_headers() -> dict[str, str]:
    return {"content-security-policy": PAGE_CSP, "cache-control": "no-store"}


def current(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


async def service(request: Request) -> Service:
    """The dependency; async, so FastAPI calls it in the event loop, not a thread."""
    return current(request)
