"""What the HTTP adapters share: one session, timeouts, and the mapping of failures.

Every request has a timeout (5 s to connect, ``http_timeout`` to read), carries an
``Idempotency-Key`` header, and is never retried or redirected by the HTTP library:
the caller decides about retries, from the error raised here.

    connection refused, connect timeout, DNS, TLS handshake   -> Transient (nothing sent)
    read timeout, connection reset or closed after sending    -> Ambiguous
    429 (and Mailgun's 420)                                   -> Throttled, with retry_after
    408, 5xx                                                  -> Transient
    401, 403                                                  -> Rejected: check the key
    other 4xx, 3xx                                            -> Rejected: the provider's words
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

from pipeline.errors import ConfigError
from pipeline.sending.providers.base import Ambiguous, ProviderError, Rejected, Throttled, Transient
from pipeline.settings import Settings

CONNECT_TIMEOUT = 5.0
USER_AGENT = "letterpress"

# Mailgun says when to come back in the body: "... try again after 120 seconds".
_TRY_AGAIN = re.compile(r"try again after (\d+(?:\.\d+)?) seconds?", re.I)


def new_session(pool_size: int = 4) -> requests.Session:
    """A session that never retries on its own (a retried POST could send twice)."""
    session = requests.Session()
    adapter = HTTPAdapter(
        max_retries=Retry(total=0, connect=0, read=0, redirect=0, status=0, other=0),
        pool_connections=pool_size,
        pool_maxsize=pool_size,
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class HttpApi:
    """One provider's HTTP API: the session, the timeouts, auth and the error mapping.

    ``provider`` names the provider in messages; ``key_setting`` is the variable an
    operator checks when the provider refuses the credentials."""

    def __init__(
        self,
        provider: str,
        settings: Settings,
        session: requests.Session | None,
        *,
        key_setting: str,
        throttle_statuses: tuple[int, ...] = (429,),
        auth: tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.provider = provider
        self.key_setting = key_setting
        self.throttle_statuses = throttle_statuses
        self.timeout = (CONNECT_TIMEOUT, settings.http_timeout)
        self._own_session = session is None
        self.session = session if session is not None else new_session()
        self.auth = auth
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}

    def request(
        self,
        method: str,
        url: str,
        *,
        key: str,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        files: list[tuple[str, tuple[None, str]]] | None = None,
        content_type: str | None = None,
    ) -> requests.Response:
        """One call; a 2xx answer is returned, anything else raised as a ProviderError."""
        headers = dict(self.headers)
        headers["Idempotency-Key"] = key
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                data=data,
                files=files,
                headers=headers,
                auth=self.auth,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise error_for_exception(self.provider, exc) from exc
        if not 200 <= response.status_code < 300:
            raise error_for_response(
                self.provider, response, self.key_setting, self.throttle_statuses
            )
        return response

    def close(self) -> None:
        if self._own_session:
            self.session.close()


def error_for_exception(provider: str, exc: requests.RequestException) -> ProviderError:
    """Whether the request could have reached the provider decides Transient or Ambiguous."""
    where = f"{provider}: "
    if isinstance(exc, requests.ConnectTimeout):
        return Transient(f"{where}no connection within {CONNECT_TIMEOUT:g} s: {exc}")
    if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.ProxyError):
        return Transient(f"{where}no connection: {exc}")
    if isinstance(exc, requests.ReadTimeout):
        return Ambiguous(f"{where}no answer in time, the batch may have been accepted: {exc}")
    if isinstance(exc, requests.ConnectionError):
        inner = exc.args[0] if exc.args else None
        if isinstance(inner, MaxRetryError):
            inner = inner.reason
        if isinstance(inner, NewConnectionError):  # refused, unreachable, DNS
            return Transient(f"{where}cannot connect: {inner}")
        return Ambiguous(
            f"{where}connection lost after sending, the batch may have been accepted: {exc}"
        )
    if isinstance(
        exc,
        requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError
        | requests.Timeout,
    ):
        return Ambiguous(f"{where}the answer was cut off, the batch may have been accepted: {exc}")
    return Rejected(f"{where}the request cannot be made ({exc}): check the provider's base URL")


def error_for_response(
    provider: str,
    response: requests.Response,
    key_setting: str,
    throttle_statuses: tuple[int, ...] = (429,),
) -> ProviderError:
    status = response.status_code
    said = provider_message(response)
    head = f"{provider} answered {status}"
    if status in throttle_statuses:
        wait = retry_after(response)
        hint = f", retry after {wait:g} s" if wait is not None else ""
        return Throttled(f"{head} (rate limited{hint}): {said}", retry_after=wait)
    if status == 408 or status >= 500:
        return Transient(f"{head}: {said}")
    if status in (401, 403):
        return Rejected(f"{head}: {said}: check {key_setting}")
    if 300 <= status < 400:
        where = response.headers.get("Location", "?")
        return Rejected(f"{head} (a redirect to {where}): check the base URL")
    return Rejected(f"{head}: {said}")


def provider_message(response: requests.Response, limit: int = 500) -> str:
    """The provider's own words: Mailgun ``message``, SendGrid ``errors``, Postmark ``Message``."""
    text = response.text.strip()
    try:
        body: Any = json.loads(text)
    except ValueError:
        return text[:limit] or response.reason or "no details"
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            parts = []
            for error in errors:
                if isinstance(error, dict):
                    field = f" ({error['field']})" if error.get("field") else ""
                    parts.append(f"{error.get('message', '')}{field}")
            return "; ".join(parts)[:limit]
        for name in ("message", "Message"):
            said = body.get(name)
            if isinstance(said, str):
                code = body.get("ErrorCode")
                return (f"ErrorCode {code}: " if code is not None else "") + said[:limit]
    return text[:limit]


def retry_after(response: requests.Response, now: float | None = None) -> float | None:
    """Seconds to wait: ``Retry-After`` (seconds or an HTTP date), SendGrid's
    ``X-RateLimit-Reset`` (epoch seconds), or Mailgun's "try again after N seconds"."""
    now = time.time() if now is None else now
    value = response.headers.get("Retry-After", "").strip()
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(when.timestamp() - now, 0.0)
    value = response.headers.get("X-RateLimit-Reset", "").strip()
    if value:
        try:
            return max(float(value) - now, 0.0)
        except ValueError:
            pass
    match = _TRY_AGAIN.search(response.text)
    if match:
        return float(match.group(1))
    return None


def json_body(response: requests.Response) -> Any:
    """The decoded JSON answer, or None when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def base_url(url: str, setting: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{setting} must start with http:// or https:// (it is {url!r})")
    return url.rstrip("/")


def required(value: str, setting: str, why: str) -> str:
    if not value.strip():
        raise ConfigError(f"{setting} is not set: {why}")
    return value
