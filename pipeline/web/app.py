"""The application: the routers and what every answer gets (size limit, security
headers, errors without a stack trace), around one ``Service`` per process
(``pipeline.web.service``).

``create_app(settings)`` builds it for tests and embedding; ``letterpress serve`` runs
``app_from_environment`` in uvicorn's worker processes, which read the settings the
same way every other command does.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.broker import Edge
from pipeline.errors import ConfigError
from pipeline.ops import health
from pipeline.sending.providers.base import Provider
from pipeline.settings import Settings, load_settings
from pipeline.web import admin, console, hooks, pages, public, replies
from pipeline.web.forms import UPLOADS, Utf8Forms
from pipeline.web.service import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    Service,
    current,
    read_body,
    replaying,
)

log = logging.getLogger(__name__)

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    # Tokens are in the URLs: no page may pass its address on to another site.
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
UPLOAD_FRAMING = 64 * 1024


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (``webhook_limit`` under /webhooks/:
    providers post events in batches; ``upload_limit`` for the console's CSV upload)
    with 413, before a handler reads them; add the security headers to every answer."""

    def __init__(self, app: ASGIApp, limit: int, webhook_limit: int, upload_limit: int) -> None:
        self.app = app
        self.default_limit = limit
        self.webhook_limit = webhook_limit
        self.upload_limit = upload_limit  # the console's CSV upload (``forms.UPLOADS``)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = self.webhook_limit if path.startswith("/webhooks/") else self.default_limit
        if path in UPLOADS:
            limit = self.upload_limit
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
_REPLY = re.compile(r"/api/replies/([a-z0-9]+(?:-[a-z0-9]+)*)")


class FastPaths:
    """The paths traffic hammers, GET /r/… and POST /unsubscribe/… (mail) and POST
    /api/replies/… (readers), answered without the framework's routing and dependency
    injection, by the same functions as their routes (``public.follow``,
    ``public.one_click``, ``replies.answer_post``, given a body validated by the
    route's own model). Only a request that is exactly right is answered here; anything
    else (a bad token, an unknown link, a body the model refuses, an article not known
    yet) goes on to the application, which answers it."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if method == "GET" and (m := _CLICK.fullmatch(path)):
                agent = dict(scope.get("headers") or []).get(b"user-agent", b"")
                url = await public.follow(
                    self.service, m.group(1), int(m.group(2)), agent.decode("latin-1")
                )
                if url is not None:
                    redirect = RedirectResponse(url, 302, headers=public.REDIRECT_HEADERS)
                    await redirect(scope, receive, send)
                    return
            elif method == "POST" and (m := _UNSUBSCRIBE.fullmatch(path)):
                claim = self.service.signer.verify("unsubscribe", m.group(1))
                if claim is not None:
                    message = await receive()  # the body (List-Unsubscribe=One-Click)
                    while message.get("more_body"):
                        message = await receive()
                    page = await public.one_click(self.service, claim)
                    await page(scope, receive, send)
                    return
            elif method == "POST" and (m := _REPLY.fullmatch(path)):
                articles = self.service.articles_if_fresh() or {}
                kind = dict(scope.get("headers") or []).get(b"content-type", b"")
                found = articles.get(m.group(1))
                if found is not None and found.replies and kind.startswith(b"application/json"):
                    await self._reply(scope, receive, send, m.group(1))
                    return
        await self.app(scope, receive, send)

    async def _reply(self, scope: Scope, receive: Receive, send: Send, slug: str) -> None:
        body = await read_body(receive)
        if body is None:  # the client went away
            return
        try:
            valid = replies.ReplyIn.model_validate_json(body)
        except ValidationError:  # the application answers it (422, in its words)
            await self.app(scope, replaying(body, receive), send)
            return
        answer = await replies.answer_post(self.service, Request(scope), slug, valid)
        await answer(scope, receive, send)


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


def create_app(
    settings: Settings, provider: Provider | None = None, edge: Edge | None = None
) -> FastAPI:
    """The application for these settings (the database must be migrated); ``edge``
    says how to reach the workers (``workers.edge`` hands it in)."""
    engine = health.database(settings)
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
    app.state.service = Service(settings, engine, redis, provider, edge or Edge())
    app.state.service.broker  # noqa: B018 -- REDIS_URL without the Celery side fails here, not later
    app.include_router(public.hot)
    app.include_router(public.router)
    app.include_router(pages.router)
    app.include_router(replies.router)
    app.include_router(hooks.router)
    app.include_router(admin.router)
    app.include_router(console.router)
    if settings.site_dir is not None:  # last: only what no route answers
        if not settings.site_dir.is_dir():
            raise ConfigError(
                f"site_dir {settings.site_dir} is not a folder: build the site into it first"
                f" (letterpress build --out {settings.site_dir}), or unset site_dir"
            )
        app.mount("/", pages.SiteFiles(directory=settings.site_dir, html=True), name="site")
    _answer_errors(app)
    console.handle_errors(app)
    app.add_middleware(Utf8Forms, service=app.state.service)
    app.add_middleware(FastPaths, service=app.state.service)
    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        webhook_limit=settings.webhook_max_body_bytes,
        # the form's other fields and its multipart framing come on top of the file
        upload_limit=settings.import_max_bytes + UPLOAD_FRAMING,
    )
    return app


def _answer_errors(app: FastAPI) -> None:
    """Errors as JSON for the API and webhooks, as a page for a browser; a bare 500 for
    anything unexpected."""

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


def app_from_environment(edge: Edge | None = None) -> FastAPI:
    """The factory uvicorn's workers call (``letterpress serve``, through
    ``workers.edge.service_from_environment``, which hands in the edge)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return create_app(load_settings(), edge=edge)
