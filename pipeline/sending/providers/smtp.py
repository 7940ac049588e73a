"""SMTP: one message per recipient over one connection kept open between batches.

``SMTP_URL`` is ``smtp://user:password@host:587`` (STARTTLS whenever the server
offers it; ``?starttls=require`` refuses to go on without it, ``?starttls=never``
never tries) or ``smtps://user:password@host:465`` (TLS from the first byte). User
and password are percent-encoded in the URL; without a port, 587 and 465 are used.

Per recipient: a 5xx to RCPT or DATA rejects that recipient; a 4xx stops the batch
(Transient). When the connection breaks, the error carries what was already accepted
(``partial``); a break while the answer to DATA was still due is Ambiguous, since the
server may have taken that message. SMTP has no idempotency key and no way to ask
what was accepted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pipeline.audience.addresses import wire
from pipeline.errors import ConfigError
from pipeline.sending import dkim
from pipeline.sending.providers import mime
from pipeline.sending.providers.base import (
    Ambiguous,
    BatchResult,
    Message,
    Recipient,
    Rejected,
    Transient,
    build_each,
)
from pipeline.settings import Settings

LIMIT = 100  # messages per batch: they go one by one
_LEADING_DOT = re.compile(rb"(?m)^\.")

StartTls = Literal["auto", "require", "never"]


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    starttls: StartTls
    username: str
    password: str = ""

    def __repr__(self) -> str:  # never show the password
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}@" if self.username else ""
        return f"SmtpTarget({scheme}://{user}{self.host}:{self.port}, starttls={self.starttls})"

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_url(url: str) -> SmtpTarget:
    """``SMTP_URL`` as a target; a ConfigError (without the password) when it is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError(
            "SMTP_URL must look like smtp://user:password@host:587 or smtps://host:465"
            f" (it starts with {parts.scheme or 'nothing'}://)"
        )
    if not parts.hostname:
        raise ConfigError(f"SMTP_URL has no host ({parts.scheme}://…)")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"SMTP_URL has an invalid port ({parts.scheme}://{parts.hostname})"
        ) from None
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"starttls"}
    if unknown:
        raise ConfigError(f"SMTP_URL: unknown option {sorted(unknown)[0]} (only starttls)")
    starttls = query.get("starttls", "auto")
    if starttls not in ("auto", "require", "never"):
        raise ConfigError(f"SMTP_URL: starttls must be auto, require or never (not {starttls})")
    implicit = parts.scheme == "smtps"
    return SmtpTarget(
        host=parts.hostname,
        port=port or (465 if implicit else 587),
        implicit_tls=implicit,
        starttls=starttls,  # type: ignore[arg-type]
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )


def _data(message: bytes) -> bytes:
    """The DATA payload: lines starting with a dot doubled, then the final dot."""
    stuffed = _LEADING_DOT.sub(b"..", message)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


class SmtpProvider:
    name = "smtp"
    idempotent = False

    def __init__(self, settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.target = parse_url(settings.smtp_url.get_secret_value())
        self.timeout = settings.http_timeout
        self.max_batch = min(LIMIT, settings.batch_size or LIMIT)
        self.context = ssl_context or ssl.create_default_context()
        self.signer = dkim.signer(settings)
        self.connections = 0  # opened so far
        self._conn: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    # The connection

    def _connect(self) -> smtplib.SMTP:
        target = self.target
        where = f"smtp: {target.host}:{target.port}"
        conn: smtplib.SMTP | None = None
        try:
            # Connecting in the constructor also tells smtplib the host name to check
            # the certificate against.
            if target.implicit_tls:
                conn = smtplib.SMTP_SSL(
                    target.host,
                    target.port,
                    local_hostname=socket.gethostname(),
                    timeout=self.timeout,
                    context=self.context,
                )
            else:
                conn = smtplib.SMTP(
                    target.host,
                    target.port,
                    local_hostname=socket.gethostname(),
                    timeout=self.timeout,
                )
            conn.ehlo()
            secure = target.implicit_tls
            if not secure and target.starttls != "never" and conn.has_extn("starttls"):
                conn.starttls(context=self.context)
                conn.ehlo()
                secure = True
            if not secure and target.starttls == "require":
                raise Rejected(
                    f"{where} does not offer STARTTLS, and SMTP_URL says starttls=require"
                )
            if target.username:
                if not secure and not target.loopback:
                    raise Rejected(
                        f"{where} offers no TLS: the password in SMTP_URL would travel in"
                        " clear text; use smtps:// or a server with STARTTLS"
                    )
                conn.login(target.username, target.password)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, smtplib.SMTPAuthenticationError):
                raise Rejected(
                    f"{where} refused the login ({exc.smtp_code}): check the user and"
                    " password in SMTP_URL"
                ) from exc
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise Rejected(f"{where}: its TLS certificate is not trusted: {exc}") from exc
            if isinstance(exc, OSError | smtplib.SMTPException):
                raise Transient(f"{where}: cannot connect: {exc}") from exc
            raise
        self.connections += 1
        return conn

    def _ready(self) -> smtplib.SMTP:
        """The open connection, or a new one when the server dropped it while idle."""
        if self._conn is not None:
            try:
                code, _ = self._conn.noop()
                if code == 250:
                    return self._conn
            except (smtplib.SMTPException, OSError):
                pass
            self._drop()
        self._conn = self._connect()
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # The provider

    def send(self, message: Message, recipients: Sequence[Recipient], key: str) -> BatchResult:
        with self._lock:
            return self._send(message, recipients)

    def _send(self, message: Message, recipients: Sequence[Recipient]) -> BatchResult:
        result = BatchResult()
        if not recipients:
            return result
        conn = self._ready()
        where = f"smtp: {self.target.host}:{self.target.port}"
        utf8 = conn.has_extn("smtputf8")
        channel = f"the SMTP server {self.target.host}:{self.target.port}"

        def render(recipient: Recipient) -> tuple[str, bytes, str, list[str]]:
            to = wire(recipient.email, utf8=utf8, channel=channel)
            data, message_id = mime.render(
                message, recipient, signer=self.signer, utf8=utf8, channel=channel
            )
            options = []
            if not to.isascii():  # RFC 6531: the transaction says it carries UTF-8
                options.append("SMTPUTF8")
                if conn.has_extn("8bitmime"):
                    options.append("BODY=8BITMIME")
            return to, _data(data), message_id, options

        for recipient, (to, payload, message_id, options) in build_each(
            recipients, render, result.rejected, self.name
        ):
            answer = self._transaction(conn, message, recipient, to, payload, options, result)
            if answer is None:
                continue  # refused for good at MAIL, RCPT or DATA: recorded as rejected
            code, reply = answer
            sid = recipient.subscriber_id
            if code == 250:
                result.accepted[sid] = message_id
            elif 500 <= code < 600:
                result.rejected[sid] = f"{code} {_text(reply)}"
            else:
                if code == 421:
                    self._drop()
                raise Transient(
                    f"{where} deferred the message to {recipient.email}: {code} {_text(reply)}",
                    partial=result,
                )
        return result

    def _transaction(
        self,
        conn: smtplib.SMTP,
        message: Message,
        recipient: Recipient,
        to: str,
        payload: bytes,
        options: list[str],
        result: BatchResult,
    ) -> tuple[int, bytes] | None:
        """MAIL, RCPT and DATA for one recipient: the server's answer to the message, or
        None when it refused the recipient for good before the message was sent."""
        where = f"smtp: {self.target.host}:{self.target.port}"
        sid = recipient.subscriber_id
        code = 0
        waiting_for_data_reply = False
        try:
            # With SMTPUTF8 (only asked for when offered) smtplib sends UTF-8 commands.
            code, reply = conn.mail(message.from_email, options)
            if code != 250:
                conn.rset()
                error = Rejected if 500 <= code < 600 else Transient
                raise error(
                    f"{where} refused the sender {message.from_email}: {code} {_text(reply)}",
                    partial=result,
                )
            for command in ("RCPT", "DATA"):
                code, reply = conn.rcpt(to) if command == "RCPT" else conn.docmd("DATA")
                if code in ((250, 251) if command == "RCPT" else (354,)):
                    continue
                conn.rset()
                if 500 <= code < 600:
                    result.rejected[sid] = f"{code} {_text(reply)}"
                    return None
                what = f"deferred {recipient.email}" if command == "RCPT" else "refused DATA"
                raise Transient(f"{where} {what}: {code} {_text(reply)}", partial=result)
            conn.send(payload)
            waiting_for_data_reply = True
            code, reply = conn.getreply()
            return code, reply
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            if waiting_for_data_reply:
                raise Ambiguous(
                    f"{where}: the connection broke before the server confirmed the message"
                    f" to {recipient.email}, which it may have taken: {exc}",
                    partial=result,
                ) from exc
            raise Transient(f"{where}: the connection broke: {exc}", partial=result) from exc
        except (Rejected, Transient):
            if code == 421:
                self._drop()
            raise
        finally:
            conn.command_encoding = "ascii"  # the next transaction may be plain ASCII

    def accepted(self, key: str, since: datetime) -> set[str] | None:
        return None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    self._conn.quit()
                self._drop()


def _text(reply: bytes) -> str:
    return reply.decode("utf-8", "replace").replace("\n", " ")
