"""Cross-site request forgery: every POST, PUT, PATCH and DELETE under ``/admin`` must
come from a console page of this site, or it is refused with 403 before its handler
runs, and nothing changes.

Two checks, both needed:

- the request's ``Origin`` (its ``Referer`` when a browser sent no Origin) is the
  origin of the setting ``base_url``; a request with neither is refused;
- it carries a token, as the form field ``csrf`` or the header ``X-CSRF-Token``
  (htmx sends it from ``hx-headers``), compared in constant time: the session's own
  token once signed in (``protect``); on the sign-in forms, before there is a session,
  a token tied to a signed cookie set by the sign-in page (``protect_sign_in``, a
  double submit: a forger can neither read the cookie nor make a token for it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.responses import Response

from pipeline.web.console.auth import (
    Current,
    Refused,
    SignInFirst,
    Svc,
    came_from,
    cookie_name,
    secure,
    sign_in_url,
)
from pipeline.web.console.views import is_htmx
from pipeline.web.service import Service

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FIELD = "csrf"
HEADER = "x-csrf-token"
PRE_COOKIE = "lp_console_pre"

FORGED = "This request did not come from a page of the console"
FORGED_WHY = (
    "It did not carry this site's origin and the token of your console page, so nothing"
    " was done. Go back, reload the page and try again."
)
EXPIRED = "This sign-in form has expired"
EXPIRED_WHY = "Nothing was done. Open the sign-in page again and sign in from there."

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, lower case, without a default port."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    return (
        f"{scheme}://{host}"
        if port in (None, _DEFAULT_PORTS[scheme])
        else f"{scheme}://{host}:{port}"
    )


def same_origin(request: Request, svc: Service) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # some browsers send no Origin: then the Referer must say it
        referer = request.headers.get("referer")
        if not referer:
            return False
        origin = referer
    found = origin_of(origin)
    return found is not None and found == origin_of(svc.settings.base_url)


async def _given(request: Request) -> str:
    header = request.headers.get(HEADER)
    if header is not None:
        return header
    form = await request.form()  # parsed once: the handler's Form fields reuse it
    value = form.get(FIELD)
    return value if isinstance(value, str) else ""


def _equal(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


async def protect(request: Request, svc: Svc, found: Current) -> None:
    """The check of every state-changing request of a signed-in user."""
    if request.method not in UNSAFE:
        return
    if not same_origin(request, svc):
        raise Refused(403, FORGED, FORGED_WHY, found)
    if found is None:
        raise SignInFirst(came_from(request), is_htmx(request))
    if not _equal(await _given(request), found.csrf):
        raise Refused(403, FORGED, FORGED_WHY, found)


# -- before signing in: a signed cookie and a token made from it -------------------------------


def _mac(svc: Service, purpose: str, nonce: str) -> str:
    key = svc.settings.secret_key.get_secret_value().encode()
    return hmac.new(key, f"console-{purpose}|{nonce}".encode(), hashlib.sha256).hexdigest()


def _nonce(svc: Service, cookie: str | None) -> str | None:
    nonce, _, mac = (cookie or "").partition(".")
    if not nonce or len(nonce) > 64 or not _equal(mac, _mac(svc, "pre-cookie", nonce)):
        return None
    return nonce


def sign_in_token(svc: Service, request: Request) -> tuple[str, str | None]:
    """The token for a sign-in form, and the cookie to set for it when the browser has
    none yet (``set_sign_in_cookie``)."""
    nonce = _nonce(svc, request.cookies.get(cookie_name(svc, PRE_COOKIE)))
    cookie = None
    if nonce is None:
        nonce = secrets.token_urlsafe(24)
        cookie = f"{nonce}.{_mac(svc, 'pre-cookie', nonce)}"
    return _mac(svc, "pre-form", nonce), cookie


def set_sign_in_cookie(response: Response, svc: Service, cookie: str | None) -> None:
    if cookie is not None:
        response.set_cookie(
            cookie_name(svc, PRE_COOKIE),
            cookie,
            path="/admin",
            secure=secure(svc),
            httponly=True,
            samesite="lax",
        )


async def protect_sign_in(request: Request, svc: Svc) -> None:
    """The check of the sign-in forms, which have no session yet."""
    if request.method not in UNSAFE:
        return
    if not same_origin(request, svc):
        raise Refused(403, FORGED, FORGED_WHY)
    nonce = _nonce(svc, request.cookies.get(cookie_name(svc, PRE_COOKIE)))
    if nonce is None or not _equal(await _given(request), _mac(svc, "pre-form", nonce)):
        raise Refused(403, EXPIRED, EXPIRED_WHY, link=sign_in_url("/admin/"))


Protected = Annotated[None, Depends(protect)]
