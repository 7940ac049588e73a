"""Who may use the admin API: every request carries ``Authorization: Bearer <token>``,
the token being the setting ``admin_token`` (``LETTERPRESS_ADMIN_TOKEN``); without that
setting the whole API answers 403."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.web.service import Service, service

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The value of the setting admin_token (LETTERPRESS_ADMIN_TOKEN).",
)
Svc = Annotated[Service, Depends(service)]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def authorised(
    svc: Svc, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """The request carries the admin token (compared in constant time), or 401/403."""
    expected = svc.settings.admin_token.get_secret_value()
    if not expected:
        raise HTTPException(403, "the admin API is off: set LETTERPRESS_ADMIN_TOKEN to enable it")
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(_digest(given), _digest(expected)):
        raise HTTPException(
            401,
            "this needs the admin token: Authorization: Bearer <LETTERPRESS_ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
