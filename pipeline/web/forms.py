"""Form bodies must be UTF-8: a field that is not is refused with 400, before any handler.

Starlette decodes an ``application/x-www-form-urlencoded`` body with ``errors="replace"``
(and a ``multipart/form-data`` part that is not UTF-8 as Latin-1), so invalid bytes would
reach a handler as other characters, and be stored. ``Utf8Forms`` reads a form body
(``BodyLimit``, outside it, has bounded its size), checks every field's name and value,
and either answers 400 naming the field or hands the same bytes on to the application.
The JSON endpoints refuse invalid UTF-8 on their own; provider webhooks are left as the
providers send them.
"""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from .app import ASGIApp, Message, Receive, Scope, Send, Service

FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")


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
    head = b"Content-Type: " + content_type + b"\r\nMIME-Version: 1.0\r\n\r\n"
    parsed = BytesParser(policy=HTTP).parsebytes(head + body)
    for part in parsed.iter_parts() if parsed.is_multipart() else []:
        # The parser keeps header bytes it cannot read as ASCII as surrogate escapes.
        sent = str(part.get_param("name", "?", header="content-disposition"))
        part_name = _text(sent.encode("ascii", "surrogateescape"))
        if part_name is None:
            return repr(sent.encode("ascii", "surrogateescape").decode("latin-1"))
        if part.get_filename() is not None:
            continue  # a file is not text
        payload = part.get_payload(decode=True)
        if _text(payload if isinstance(payload, bytes) else b"") is None:
            return part_name
    return None


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
        if not content_type.lower().startswith(FORM_TYPES) or str(scope["path"]).startswith(
            "/webhooks/"
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        message: Message = {"more_body": True}
        while message.get("more_body"):
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
        body = b"".join(chunks)
        field = undecodable_field(content_type, body)
        if field is not None:
            await self._refuse(scope, receive, send, field, headers)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

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
