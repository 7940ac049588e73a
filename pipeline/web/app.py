"""The application: one ``Service`` (settings, database, Redis, signer, provider) per
process, the routers, and what every answer gets (size limit, security headers, errors
without a stack trace).

``create_app(settings)`` builds it for tests and embedding; ``letterpress serve`` runs
``app_from_environment`` in uvicorn's worker processes, which read the settings the
same way every other command does.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.audience.tokens import Signer
from pipeline.audience.tracking import LinkCache
from pipeline.content.store import FileContentStore
from pipeline.errors import NotFound
from pipeline.render.hot import Engagement
from pipeline.render.templating import environment, site_context
from pipeline.sending.providers import create as create_provider
from pipeline.sending.providers.base import Provider
from pipeline.settings import Settings, load_settings
from pipeline.store import db
from pipeline.web.limits import Limits
from pipeline.web.writer import GroupWriter

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    # Tokens are in the URLs: no page may pass its address on to another site.
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class Service:
    """What the handlers share in one server process."""

    settings: Settings
    engine: Engine
    redis: Any | None
    provider_override: Provider | None = None
    _slugs: tuple[float, frozenset[str]] = (0.0, frozenset())
    list_names: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
    def provider(self) -> Provider:
        return self.provider_override or create_provider(self.settings)

    def article_slugs(self) -> frozenset[str]:
        """The published articles' slugs (page views count for these only), re-read
        from the content store every five minutes."""
        loaded, slugs = self._slugs
        if time.monotonic() - loaded < 300 and loaded:
            return slugs
        with self._lock:
            try:
                catalog = FileContentStore(self.settings.content_dir, self.settings).catalog()
                slugs = frozenset(a.slug for a in catalog.published())
            except NotFound:
                slugs = frozenset()
            self._slugs = (time.monotonic(), slugs)
        return slugs

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


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (``webhook_limit`` under /webhooks/:
    providers post events in batches) with 413, before a handler reads them; add the
    security headers to every answer."""

    def __init__(self, app: ASGIApp, limit: int, webhook_limit: int) -> None:
        self.app = app
        self.default_limit = limit
        self.webhook_limit = webhook_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hook = str(scope.get("path", "")).startswith("/webhooks/")
        limit = self.webhook_limit if hook else self.default_limit
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _too_large(send, limit)
            return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, limited, with_headers)
        except _TooLarge:
            if not started:
                await _too_large(send, limit)


_CLICK = re.compile(r"/r/([A-Za-z0-9_.-]{1,80})/([0-9]{1,4})")
_UNSUBSCRIBE = re.compile(r"/unsubscribe/([A-Za-z0-9_.-]{1,80})")


class FastPaths:
    """The two paths mail traffic hammers, GET /r/… and POST /unsubscribe/…, answered
    without the framework's routing, dependency injection and validation, by the same
    functions as their routes (``public.follow`` and ``public.one_click``). Only a
    request that is exactly right is answered here; anything else (a bad token, an
    unknown link, a malformed path) goes on to the application, which answers it."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        from pipeline.web.public import (  # public imports this module
            REDIRECT_HEADERS,
            follow,
            one_click,
        )

        self.app = app
        self.service = service
        self.follow = follow
        self.one_click = one_click
        self.redirect_headers = REDIRECT_HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if method == "GET" and (m := _CLICK.fullmatch(path)):
                agent = dict(scope.get("headers") or []).get(b"user-agent", b"")
                url = await self.follow(
                    self.service, m.group(1), int(m.group(2)), agent.decode("latin-1")
                )
                if url is not None:
                    redirect = RedirectResponse(url, 302, headers=self.redirect_headers)
                    await redirect(scope, receive, send)
                    return
            elif method == "POST" and (m := _UNSUBSCRIBE.fullmatch(path)):
                claim = self.service.signer.verify("unsubscribe", m.group(1))
                if claim is not None:
                    message = await receive()  # the body (List-Unsubscribe=One-Click)
                    while message.get("more_body"):
                        message = await receive()
                    page = await self.one_click(self.service, claim)
                    await page(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"the request body is larger than {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/webhooks/")) or "text/html" not in request.headers.get(
        "accept", ""
    )


def create_app(settings: Settings, provider: Provider | None = None) -> FastAPI:
    """The application for these settings (the database must be migrated)."""
    engine = db.require_current(settings.database_url)
    redis = None
    if settings.redis_url:
        import redis as redis_lib

        redis = redis_lib.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
    app = FastAPI(
        title=f"{settings.site_name} subscriber service",
        version="1",
        description=(
            "Sign-up with double opt-in, one-click unsubscribe (RFC 8058), preferences,"
            " provider webhooks, click tracking, the issue archive and the admin API."
        ),
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = Service(settings, engine, redis, provider)

    from pipeline.web import admin, hooks, public

    app.include_router(public.hot)
    app.include_router(public.router)
    app.include_router(hooks.router)
    app.include_router(admin.router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if _wants_json(request):
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=headers)
        svc = current(request)
        page = svc.page("error.html", exc.status_code, message=str(exc.detail))
        page.headers.update(headers)
        return page

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()
        ]
        if _wants_json(request):
            return JSONResponse({"detail": problems}, 422)
        text = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)
        return current(request).page("error.html", 422, message=text)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        # uvicorn logs the exception itself; the client learns nothing of it.
        return JSONResponse({"detail": "internal error; it has been logged"}, 500)

    from pipeline.web.forms import Utf8Forms

    app.add_middleware(Utf8Forms, service=app.state.service)
    app.add_middleware(FastPaths, service=app.state.service)
    app.add_middleware(
        BodyLimit, limit=settings.max_body_bytes, webhook_limit=settings.webhook_max_body_bytes
    )
    return app


def app_from_environment() -> FastAPI:
    """The factory uvicorn's workers call (``letterpress serve``)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return create_app(load_settings())
