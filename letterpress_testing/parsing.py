"""Reading what clients send the double: form bodies, address lists, Basic auth."""

from __future__ import annotations

import base64
import binascii
import secrets
from email.message import Message as MimeMessage
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses
from typing import cast
from urllib.parse import parse_qsl


def parse_form(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """Form fields, in order, from ``multipart/form-data`` or urlencoded bodies."""
    if content_type.lower().startswith("application/x-www-form-urlencoded"):
        return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError(f"unsupported Content-Type {content_type or '(none)'}")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    parsed = BytesParser(policy=compat32).parsebytes(head + body)
    if not parsed.is_multipart():
        raise ValueError("the multipart body has no parts (is the boundary right?)")
    fields = []
    for part in cast(list[MimeMessage], parsed.get_payload()):
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("a form part has no name")
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        charset = part.get_content_charset() or "utf-8"
        fields.append((name, raw.decode(charset, "replace")))
    return fields


def addresses(value: str) -> list[tuple[str, str]]:
    """(name, address) pairs of a header-style address list, empty ones left out."""
    return [(name, addr) for name, addr in getaddresses([value]) if addr]


def valid(address: str) -> bool:
    """Whether the providers would take it as an address (a loose check, as theirs)."""
    local, at, domain = address.rpartition("@")
    return bool(local and at and "." in domain and " " not in address)


def basic_auth_ok(header: str, user: str, password: str) -> bool:
    """Whether an ``Authorization`` header carries exactly these Basic credentials."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        return False
    return secrets.compare_digest(decoded, f"{user}:{password}")
