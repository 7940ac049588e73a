"""A stand-in for Mailgun, SendGrid and Postmark: a real HTTP server on loopback.

It speaks the parts of their APIs that Letterpress uses, as documented by each:

    POST /v3/{domain}/messages      Mailgun, multipart/form-data (or urlencoded), Basic auth
    GET  /v3/{domain}/events        Mailgun's event log (``accepted`` events, paging.next)
    POST /v3/mail/send              SendGrid v3, JSON, Bearer auth, 202 + X-Message-Id
    POST /email/batch               Postmark batch, JSON, X-Postmark-Server-Token
    GET  /messages/outbound         Postmark's message search (count, offset, metadata_*)

(one module each: ``mailgun``, ``sendgrid``, ``postmark``) and records every recipient
it accepts: a count per address (in lower case, so a second copy to one address shows
as a duplicate), and, with ``keep_messages``, the message each address received after
the provider's own personalisation (Mailgun ``%recipient.x%``, SendGrid
``substitutions``, Postmark as sent). Without it, memory grows by about one dictionary
entry per distinct address.

A request with an ``Idempotency-Key`` that was already answered with success gets the
same answer again and changes nothing. Faults make it misbehave the way the real
services do (see ``faults.Fault``). Control endpoints, for tests and for a person with
curl:

    GET  /_double/health   /_double/stats   /_double/recipients   /_double/messages
    POST /_double/reset    /_double/faults  (JSON: {"faults": [...], "seed": 1})

From Python: ``with DoubleServer() as double: ... double.url ... double.stats()``.
From a shell: ``python -m letterpress_testing --port 8025``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

from letterpress_testing import mailgun, postmark, sendgrid
from letterpress_testing.faults import Fault
from letterpress_testing.state import Answer, CapturedRequest, DoubleState, KeptMessage

# ---------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], state: DoubleState) -> None:
        self.state = state
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def url_host(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!r}:{port}" if isinstance(host, bytes) else f"{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # the client went away
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "letterpress-double"
    sys_version = ""
    wbufsize = 1 << 16  # one write per answer; flushed after each request
    disable_nagle_algorithm = True

    @property
    def double(self) -> _Server:
        return cast(_Server, self.server)

    def setup(self) -> None:
        super().setup()
        with self.double.connections_lock:
            self.double.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.double.connections_lock:
                self.double.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        body = self._body()
        if body is None:
            return
        path, _, query = self.path.partition("?")
        headers = {name.lower(): value for name, value in self.headers.items()}
        state = self.double.state
        if path.startswith("/_double/"):
            self._write(self._control(path, body))
            return
        if state.keep_requests:
            with state.lock:
                captured = CapturedRequest(
                    self.command, self.path, dict(self.headers.items()), body
                )
                state.captured.append(captured)
        answer = self._route(path, query, headers, body)
        with state.lock:
            state.requests += 1
            if answer.drop:
                state.dropped += 1
            else:
                state.statuses[str(answer.status)] += 1
        if answer.delay and state.stopping.wait(answer.delay):
            answer.drop = True  # the server is stopping: do not wait any longer
        if answer.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(answer)

    def _body(self) -> bytes | None:
        """The request body, or None once a refusal is written (no usable length)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._write(Answer.of(411, {"message": "Content-Length is required"}))
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._write(Answer.of(400, {"message": "bad Content-Length"}))
            return None
        return self.rfile.read(length) if length else b""

    def _route(self, path: str, query: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """``headers`` have lower-case names."""
        state = self.double.state
        method = self.command
        if path == sendgrid.SEND_PATH:
            return sendgrid.send(state, headers, body) if method == "POST" else _not_allowed()
        if path == postmark.BATCH_PATH:
            return postmark.batch(state, headers, body) if method == "POST" else _not_allowed()
        if path == postmark.SEARCH_PATH:
            return postmark.search(state, headers, query) if method == "GET" else _not_allowed()
        match = mailgun.SEND_PATH.fullmatch(path)
        if match:
            if method != "POST":
                return _not_allowed()
            return mailgun.send(state, match.group(1), headers, body)
        match = mailgun.EVENTS_PATH.fullmatch(path)
        if match:
            if method != "GET":
                return _not_allowed()
            base = f"http://{headers.get('host') or self.double.url_host}"
            return mailgun.events(state, match.group(1), match.group(2), headers, query, base)
        return Answer.of(404, {"message": f"no such endpoint: {method} {path}"})

    def _control(self, path: str, body: bytes) -> Answer:
        state = self.double.state
        method = self.command
        if path == "/_double/health" and method == "GET":
            return Answer.of(200, {"ok": True})
        if path == "/_double/stats" and method == "GET":
            return Answer.of(200, state.stats())
        if path == "/_double/recipients" and method == "GET":
            return Answer.of(200, state.recipients())
        if path == "/_double/messages" and method == "GET":
            with state.lock:
                kept = {a: [asdict(m) for m in ms] for a, ms in state.messages.items()}
            return Answer.of(200, kept)
        if path == "/_double/reset" and method == "POST":
            state.reset()
            return Answer.of(200, {"ok": True})
        if path == "/_double/faults":
            return self._faults(body)
        return Answer.of(404, {"message": f"no such endpoint: {method} {path}"})

    def _faults(self, body: bytes) -> Answer:
        """GET: the faults; POST: replace them (a list, or {"faults": [...], "seed": n})."""
        state = self.double.state
        if self.command == "POST":
            try:
                data = json.loads(body or b"{}")
                items = data if isinstance(data, list) else data.get("faults", [])
                seed = None if isinstance(data, list) else data.get("seed")
                state.set_faults([Fault.from_json(item) for item in items], seed=seed)
            except (ValueError, TypeError, AttributeError) as exc:
                return Answer.of(400, {"message": f"bad faults: {exc}"})
        elif self.command != "GET":
            return _not_allowed()
        with state.lock:
            return Answer.of(200, {"faults": [f.to_json() for f in state.faults]})

    def _write(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)


def _not_allowed() -> Answer:
    return Answer.of(405, {"message": "method not allowed"})


# ---------------------------------------------------------------------------
# The Python API


class DoubleServer:
    """The double in a background thread on 127.0.0.1 (``port=0``: any free port)."""

    def __init__(
        self,
        *,
        port: int = 0,
        keep_messages: bool = False,
        keep_requests: bool = False,
        idempotency: bool = True,
        seed: int | None = None,
        mailgun_key: str = "key-double",
        sendgrid_key: str = "SG.double",
        postmark_token: str = "postmark-double",
    ) -> None:
        self.port = port
        self.state = DoubleState(
            mailgun_key=mailgun_key,
            sendgrid_key=sendgrid_key,
            postmark_token=postmark_token,
            keep_messages=keep_messages,
            keep_requests=keep_requests,
            idempotency=idempotency,
            seed=seed,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def idempotency(self) -> bool:
        """Whether a repeated ``Idempotency-Key`` gets the stored answer."""
        return self.state.idempotency

    @idempotency.setter
    def idempotency(self, value: bool) -> None:
        self.state.idempotency = value

    @property
    def mailgun_key(self) -> str:
        return self.state.mailgun_key

    @property
    def sendgrid_key(self) -> str:
        return self.state.sendgrid_key

    @property
    def postmark_token(self) -> str:
        return self.state.postmark_token

    def start(self) -> DoubleServer:
        if self._server is None:
            self.state.stopping.clear()
            self._server = _Server(("127.0.0.1", self.port), self.state)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="provider-double",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.state.stopping.set()
        server.shutdown()
        thread.join()
        server.close_connections()
        server.server_close()  # waits for the connection threads
        self._server = self._thread = None

    def __enter__(self) -> DoubleServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the double is not running: start() it first")
        return f"http://{self._server.url_host}"

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def recipients(self) -> dict[str, int]:
        return self.state.recipients()

    @property
    def messages(self) -> dict[str, list[KeptMessage]]:
        """Address -> what it received (``keep_messages``); a copy."""
        with self.state.lock:
            return {a: list(ms) for a, ms in self.state.messages.items()}

    @property
    def requests(self) -> list[CapturedRequest]:
        """Every provider request as it arrived (``keep_requests``); a copy."""
        with self.state.lock:
            return list(self.state.captured)

    def set_faults(self, *faults: Fault | Mapping[str, Any], seed: int | None = None) -> None:
        """Replace the faults (none: behave)."""
        self.state.set_faults(
            [f if isinstance(f, Fault) else Fault.from_json(f) for f in faults], seed=seed
        )

    def reset(self) -> None:
        """Forget everything: recipients, counters, stored answers, messages, faults."""
        self.state.reset()
