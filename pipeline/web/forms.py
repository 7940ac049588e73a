"""Form bodies must be UTF-8: a field that is not is refused with 400, before any handler.

Starlette decodes an ``application/x-www-form-urlencoded`` body with ``errors="replace"``
(and a ``multipart/form-data`` part that is not UTF-8 as Latin-1), so invalid bytes would
reach a handler as other characters, and be stored. ``Utf8Forms`` reads a form body
(``BodyLimit``, outside it, has bounded its size), checks every field's name and value,
and either answers 400 naming the field or hands the body on to the application. A
multipart body is split by python-multipart, the parser Starlette uses, so the parts
checked are the parts the handler gets (a part's Content-Transfer-Encoding means
nothing to either). Raw UTF-8 bytes in a urlencoded body (``curl -d name=Zoë``), which
Starlette would read as Latin-1, are percent-encoded first, so they arrive as sent.
The JSON endpoints refuse invalid UTF-8 on their own; provider webhooks are left as the
providers send them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from fastapi.responses import JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from pipeline.web.service import read_body, replaying

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

    from pipeline.web.service import ASGIApp, Receive, Scope, Send, Service

FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")
# File uploads, up to ``import_max_bytes`` (``BodyLimit``): Starlette spools them to disk
# as it parses them; they are not read into memory here. Their one text field that is
# stored, a list name, is checked by ``lists.check_list_name``.
UPLOADS = frozenset({"/admin/imports"})


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def undecodable_field(content_type: bytes, body: bytes) -> str | None:
    """The first field (its name, as far as it can be read) whose name or value is not
    UTF-8, or None when every field is. File parts of a multipart body are not text and
    are not checked."""
    if content_type.split(b";")[0].strip().lower() == FORM_TYPES[0]:
        for pair in body.split(b"&"):
            raw_name, _, raw_value = pair.partition(b"=")
            name = _text(unquote_to_bytes(raw_name.replace(b"+", b" ")))
            value = _text(unquote_to_bytes(raw_value.replace(b"+", b" ")))
            if name is None or value is None:
                return name if name is not None else repr(raw_name.decode("latin-1"))
        return None
    return _undecodable_part(content_type, body)


class _Parts:
    """The callbacks of python-multipart's parser, as Starlette's ``MultiPartParser``
    has them, keeping the first field that is not UTF-8."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self._begin()

    def _begin(self) -> None:
        self.header = b""
        self.value = b""
        self.disposition = b""
        self.name = ""
        self.file = False
        self.data = bytearray()

    def on_part_begin(self) -> None:
        self._begin()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def on_header_end(self) -> None:
        if self.header.lower() == b"content-disposition":
            self.disposition = self.value
        self.header = self.value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        raw = options.get(b"name", b"")
        name = _text(raw)
        if name is None and self.problem is None:
            self.problem = repr(raw.decode("latin-1"))
        self.name = name or ""
        self.file = b"filename" in options  # a file is not text

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.file:
            self.data += data[start:end]

    def on_part_end(self) -> None:
        if not self.file and self.problem is None and _text(bytes(self.data)) is None:
            self.problem = self.name


def _undecodable_part(content_type: bytes, body: bytes) -> str | None:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        return None  # the application answers a body it cannot read
    parts = _Parts()
    callbacks: MultipartCallbacks = {
        "on_part_begin": parts.on_part_begin,
        "on_part_data": parts.on_part_data,
        "on_part_end": parts.on_part_end,
        "on_header_field": parts.on_header_field,
        "on_header_value": parts.on_header_value,
        "on_header_end": parts.on_header_end,
        "on_headers_finished": parts.on_headers_finished,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError:
        pass  # malformed: the application answers it, unless a field was already bad
    return parts.problem


_RAW = re.compile(rb"[\x80-\xff]")


def as_sent(content_type: bytes, body: bytes) -> bytes:
    """The body the application is given: a urlencoded one with its raw non-ASCII bytes
    percent-encoded (Starlette reads those as Latin-1; %XX it reads as UTF-8)."""
    if body.isascii() or content_type.split(b";")[0].strip().lower() != FORM_TYPES[0]:
        return body
    return _RAW.sub(lambda m: b"%%%02X" % m[0][0], body)


class Utf8Forms:
    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"")
        path = str(scope["path"])
        if (
            not content_type.lower().startswith(FORM_TYPES)
            or path.startswith("/webhooks/")
            or path in UPLOADS
        ):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:  # the client went away
            return
        field = undecodable_field(content_type, body)
        if field is not None:
            await self._refuse(scope, receive, send, field, headers)
            return
        given = as_sent(content_type, body)
        if given != body:
            length = str(len(given)).encode("ascii")
            scope = {
                **scope,
                "headers": [
                    (k, length if k == b"content-length" else v) for k, v in scope["headers"]
                ],
            }
        await self.app(scope, replaying(given, receive), send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, field: str, headers: dict[bytes, bytes]
    ) -> None:
        problem = (
            f"the form field {field} is not valid UTF-8: nothing was saved. Send the form"
            " again from its page (every page of this service is UTF-8), or encode the"
            " values as UTF-8"
        )
        if b"text/html" in headers.get(b"accept", b""):
            page = self.service.page("error.html", 400, message=problem)
            await page(scope, receive, send)
            return
        await JSONResponse({"detail": problem}, 400)(scope, receive, send)
