"""Email addresses on the wire: international ones included (RFC 6530-6533).

An address is stored in one normal form (``subscribers.normalise_email``): the domain
in Unicode and lower case (``ann@bücher.de``, whether it was typed so or as
``ann@xn--bcher-kva.de``), the local part NFC-normalised. What goes out depends on
what the address needs and what the channel can carry:

- an ASCII local part at any domain travels as plain ASCII everywhere: the domain is
  written in its IDNA (``xn--``) form, which every provider and server takes;
- a non-ASCII local part (``zoë@example.org``) cannot be written in ASCII at all. It
  needs an SMTPUTF8 channel (RFC 6531) and a message whose headers are UTF-8
  (RFC 6532). Where the channel has none, the recipient fails with
  ``AddressNotSupported``, which says so; the rest of the batch goes on.
"""

from __future__ import annotations

from email.utils import formataddr

import idna

from pipeline.errors import LetterpressError


class AddressNotSupported(LetterpressError):
    """This address cannot be carried by this channel (its words say why)."""


def split(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AddressNotSupported("the address has no local part or no domain")
    return local, domain


def ascii_domain(domain: str) -> str:
    """``bücher.de`` -> ``xn--bcher-kva.de``; an ASCII domain as it is."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise AddressNotSupported(f"the address's domain is not a valid IDN: {exc}") from None


def wire(address: str, *, utf8: bool, channel: str) -> str:
    """The address as the channel must carry it.

    ``utf8``: the channel carries UTF-8 addresses (SMTPUTF8). ``channel`` names it in
    the error for an address it cannot carry."""
    local, domain = split(address)
    if local.isascii():
        return f"{local}@{ascii_domain(domain)}"
    if not utf8:
        raise AddressNotSupported(
            f"{channel} cannot deliver to this address: its local part (before the @) is"
            " not ASCII and needs SMTPUTF8 (RFC 6531), which it does not offer"
        )
    return address


def mailbox(name: str, address: str) -> str:
    """The To header for ``address``, already in its wire form: for an ASCII address the
    usual form (the name RFC 2047-encoded when it needs it); for a UTF-8 one, the form of
    a message whose headers are UTF-8 (RFC 6532): ``"Name" <address>``, or ``<address>``."""
    if address.isascii():
        return formataddr((name, address))
    if not name:
        return f"<{address}>"
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'
