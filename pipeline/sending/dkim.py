"""DKIM signatures for the mail Letterpress builds itself, and the DNS records to publish.

SMTP and the outbox send complete messages that Letterpress writes, so Letterpress
signs them (RFC 6376, rsa-sha256, relaxed/simple canonicalisation, by dkimpy). Mailgun,
SendGrid and Postmark build and sign the message on their side with the keys of the
domain verified in their dashboards, so nothing here applies to them.

The private key comes from the environment only (``LETTERPRESS_DKIM_PRIVATE_KEY``: the
PEM text itself, or the path of a file holding it); the selector and the signing domain
are settings (``dkim_selector``, and ``dkim_domain``, which defaults to the domain of
each message's From address).

``records`` gives the TXT records a publisher adds to its sending domain: the DKIM
public key under ``<selector>._domainkey.<domain>``, and an SPF and a DMARC record to
start from.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.settings import Settings

# RFC 8058 section 4: the signature must cover both List-Unsubscribe headers.
SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
MIN_KEY_BITS = 1024  # what verifiers accept (dkimpy's own minimum); 2048 is advised

# What each provider's SPF include is, for the record ``records`` suggests.
SPF_INCLUDES = {
    "mailgun": "include:mailgun.org",
    "sendgrid": "include:sendgrid.net",
    "postmark": "include:spf.mtasv.net",
}


@dataclass(frozen=True)
class Record:
    name: str  # the DNS name, fully qualified without the final dot
    type: str
    value: str
    why: str


def load_key(value: str) -> bytes:
    """The PEM bytes of the private key: ``value`` is the PEM itself or a file's path."""
    text = value.strip()
    if not text:
        raise ConfigError("LETTERPRESS_DKIM_PRIVATE_KEY is empty")
    if "-----BEGIN" in text:
        pem = text.replace("\\n", "\n").encode("ascii", "replace")
    else:
        path = Path(text).expanduser()
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"LETTERPRESS_DKIM_PRIVATE_KEY names the file {path}, which cannot be read:"
                f" {exc.strerror or exc}"
            ) from None
    _public_key(pem)  # says what is wrong with it, here rather than at the first send
    return pem


def _public_key(pem: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of an RSA private key in PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"LETTERPRESS_DKIM_PRIVATE_KEY is not an unencrypted PEM private key ({exc});"
            " make one with `letterpress dns --new-key FILE`"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("LETTERPRESS_DKIM_PRIVATE_KEY must be an RSA key (rsa-sha256)")
    if key.key_size < MIN_KEY_BITS:
        raise ConfigError(
            f"LETTERPRESS_DKIM_PRIVATE_KEY has {key.key_size} bits: receivers ignore DKIM keys"
            f" under {MIN_KEY_BITS} bits; use 2048"
        )
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def new_key(bits: int = 2048) -> bytes:
    """A fresh RSA private key in PEM (PKCS#8, unencrypted)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_record_value(pem: bytes) -> str:
    """The DKIM key record: ``v=DKIM1; k=rsa; p=<base64 of the public key>``."""
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(_public_key(pem)).decode("ascii")


class Signer:
    """Signs whole messages (bytes, CRLF line ends) with one key and selector.

    ``domain`` is the signing domain (d=); None signs for the domain of each message's
    From address, which is what DMARC alignment wants."""

    def __init__(self, pem: bytes, selector: str, domain: str | None) -> None:
        self.pem = pem
        self.selector = selector.encode("ascii")
        self.domain = domain

    def sign(self, message: bytes, from_domain: str) -> bytes:
        """``message`` with its ``DKIM-Signature`` header in front."""
        import dkim

        from pipeline.audience.addresses import ascii_domain

        present = {
            line.split(b":", 1)[0].strip().lower()
            for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if line and not line[:1].isspace()
        }
        headers = [h.encode("ascii") for h in SIGNED_HEADERS if h.lower().encode() in present]
        signature = dkim.sign(
            message,
            self.selector,
            ascii_domain(self.domain or from_domain).encode("ascii"),
            self.pem,
            canonicalize=(b"relaxed", b"simple"),
            include_headers=headers,
        )
        return bytes(signature) + message


def signing_domain(settings: Settings) -> str:
    """The domain the records are for: ``dkim_domain``, or the sender's."""
    from pipeline.audience.addresses import ascii_domain

    return ascii_domain(settings.dkim_domain or settings.sender_email.rpartition("@")[2])


def signer(settings: Settings) -> Signer | None:
    """The signer the settings describe, or None when no key is configured."""
    secret = settings.dkim_private_key.get_secret_value()
    if not secret.strip():
        return None
    if not settings.dkim_selector:
        raise ConfigError(
            "LETTERPRESS_DKIM_PRIVATE_KEY is set but dkim_selector is not: set the selector"
            " (the name under which the public key is published, e.g. lp2026)"
        )
    return Signer(load_key(secret), settings.dkim_selector, settings.dkim_domain or None)


def records(settings: Settings) -> list[Record]:
    """The TXT records for the sending domain: DKIM (when a key is set), SPF, DMARC."""
    domain = signing_domain(settings)
    out: list[Record] = []
    secret = settings.dkim_private_key.get_secret_value()
    if secret.strip():
        selector = settings.dkim_selector or "SELECTOR"
        out.append(
            Record(
                f"{selector}._domainkey.{domain}",
                "TXT",
                public_record_value(load_key(secret)),
                "DKIM: the public key receivers check this domain's signatures against",
            )
        )
    include = SPF_INCLUDES.get(settings.provider, "")
    spf = " ".join(part for part in ("v=spf1", "mx", include, "~all") if part)
    out.append(
        Record(
            domain,
            "TXT",
            spf,
            "SPF: which servers may send mail for this domain (add your SMTP relay's"
            " include or ip4: if it is not one of these)",
        )
    )
    out.append(
        Record(
            f"_dmarc.{domain}",
            "TXT",
            f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}; adkim=r; aspf=r",
            "DMARC: what receivers do with mail that fails SPF and DKIM alignment (start at"
            " p=none and read the reports, then move to quarantine or reject)",
        )
    )
    return out


def zone_value(value: str) -> str:
    """A TXT value as a zone file writes it: quoted strings of at most 255 characters."""
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join(f'"{chunk}"' for chunk in chunks)
