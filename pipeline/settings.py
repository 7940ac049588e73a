"""One typed settings object, read once at the edge and passed down.

Sources, strongest first: keyword overrides (tests, CLI flags), the environment
(``LETTERPRESS_*``, plus ``REDIS_URL``), the TOML file named by ``--config`` or
``LETTERPRESS_CONFIG`` (default ``letterpress.toml`` in the working directory, when
present), then the defaults below. Nothing in Letterpress reads the environment at
import time.
"""

from __future__ import annotations

import contextvars
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pipeline.errors import ConfigError
from pipeline.statuses import Role

_FILE_VALUES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "letterpress_file_values", default=None
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_DISCLOSURE = (
    "Affiliate disclosure: This post may contain affiliate links. If you buy through them, "
    "I may earn a small commission at no extra cost to you."
)
DEFAULT_DISCLAIMER = (
    "This content is for educational purposes only and does not replace professional "
    "medical advice."
)

# Hosts (and their subdomains) of the common affiliate networks: every link to them is
# an affiliate link. ``host?param`` means: a link to that host carrying that query
# parameter. ``*`` in a host matches one or more labels.
DEFAULT_AFFILIATE_RULES = [
    "amazon.*?tag",  # Amazon Associates
    "amzn.to",
    "amzn.eu",
    "a.co",
    "awin1.com",  # Awin
    "*?awc",
    "shareasale.com",  # ShareASale
    "shrsl.com",
    "*?sscid",
    "anrdoezrs.net",  # CJ (Commission Junction)
    "dpbolvw.net",
    "jdoqocy.com",
    "kqzyfj.com",
    "tkqlhce.com",
    "emjcd.com",
    "sjv.io",  # Impact
    "pxf.io",
    "*?irclickid",
    "click.linksynergy.com",  # Rakuten Advertising
    "*?ranmid",
    "go.skimresources.com",  # Skimlinks
    "go.redirectingat.com",
    "prf.hn",  # Partnerize
    "tidd.ly",  # Tradedoubler
    "clk.tradedoubler.com",
    "redirect.viglink.com",  # Sovrn Commerce
    "rstyle.me",  # LTK
    "geni.us",
    "*?aff_id",
    "*?affiliate_id",
    "*?affid",
]

# Link shorteners hide where they lead, so a link through one is treated as an
# affiliate link: better a disclosure too many than one missing.
DEFAULT_SHORTENERS = [
    "bit.ly",
    "tinyurl.com",
    "t.co",
    "ow.ly",
    "is.gd",
    "buff.ly",
    "rebrand.ly",
    "cutt.ly",
    "shorturl.at",
    "t.ly",
    "lnkd.in",
    "tiny.cc",
]

# User agents of the link scanners that mail gateways and chat apps run on every link:
# their requests are not a reader's click. Matched as substrings, ignoring case; an
# empty user agent counts as a scanner too.
DEFAULT_SCANNERS = [
    "bot",
    "crawler",
    "spider",
    "preview",
    "barracuda",
    "mimecast",
    "proofpoint",
    "urldefense",
    "safelinks",
    "messagelabs",
    "symantec",
    "forcepoint",
    "trendmicro",
    "sophos",
    "ironport",
    "fortiguard",
    "google-safety",
    "googleimageproxy",
    "yahoomailproxy",
    "facebookexternalhit",
    "slack",
    "discord",
    "whatsapp",
    "python-requests",
    "python-urllib",
    "curl/",
    "wget/",
    "go-http-client",
    "headlesschrome",
]


# The settings that shape web pages and emails. The build keys its cache on these alone
# and sends only these to its workers: no secret, no database URL, nothing of sending
# travels through the broker, and changing a send setting re-renders nothing.
RENDER_FIELDS = frozenset(
    {
        "base_url", "site_name", "site_tagline", "language", "default_author",
        "content_dir", "templates_dir", "max_article_bytes", "iframe_hosts",
        "directory_urls", "favicon", "organization_authors",
        "sender_name", "sender_email", "postal_address",
        "affiliate_disclosure", "affiliate_rules", "affiliate_shorteners",
        "disclaimer_text", "disclaimer_categories",
        "hot_size", "hot_half_life_hours", "hot_view_weight", "hot_click_weight",
        "hot_title_words", "page_view_beacon", "reply_categories", "reply_max_chars",
        "email_full_articles", "email_clip_bytes", "email_oversize", "email_teaser_words",
        "utm_source", "utm_medium",
    }
)  # fmt: skip


def _env(name: str, default: Any) -> Any:
    """A setting also read from the unprefixed variable ``name`` (``REDIS_URL``)."""
    return Field(default=default, validation_alias=AliasChoices(name, "LETTERPRESS_" + name))


class _FileSource(PydanticBaseSettingsSource):
    """Values from the TOML file, weaker than the environment."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_VALUES.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get() or {})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LETTERPRESS_", extra="forbid", populate_by_name=True, frozen=True
    )

    # The site
    base_url: str = "http://localhost:8000"
    site_name: str = "Letterpress"
    site_tagline: str = ""
    language: str = "en"
    default_author: str = "Editorial Team"
    content_dir: Path = Path("content")
    templates_dir: Path = Field(default_factory=lambda: _default_templates())
    max_article_bytes: int = Field(default=2_000_000, gt=0)
    iframe_hosts: list[str] = Field(
        default_factory=lambda: ["www.youtube-nocookie.com", "www.youtube.com", "player.vimeo.com"]
    )
    # Links between pages end in /index.html (the site opens from disk) or in / (a server).
    directory_urls: bool = False
    favicon: str = ""  # an .svg, .png or .ico file; empty: the one in templates/web
    # Authors typed Organization in JSON-LD (besides site_name); others are a Person.
    organization_authors: list[str] = Field(default_factory=lambda: ["Editorial Team"])

    # Sender (CAN-SPAM wants a valid physical postal address in every commercial email)
    sender_name: str = "Letterpress"
    sender_email: str = "newsletter@localhost"
    postal_address: str = ""

    # Services
    redis_url: str | None = _env("REDIS_URL", None)
    redis_prefix: str = "letterpress"
    database_url: str = _env("DATABASE_URL", "sqlite:///letterpress.db")
    secret_key: SecretStr = SecretStr("")
    # Earlier signing keys, comma-separated: they still verify (links in delivered mail).
    previous_secret_keys: SecretStr = SecretStr("")
    broker_visibility_timeout: int = Field(default=3600, ge=60)

    # Delivery
    provider: Literal["outbox", "mailgun", "sendgrid", "postmark", "smtp"] = "outbox"
    outbox_dir: Path = Path("outbox")
    mailgun_api_key: SecretStr = _env("MAILGUN_API_KEY", SecretStr(""))
    mailgun_domain: str = _env("MAILGUN_DOMAIN", "")
    mailgun_base_url: str = _env("MAILGUN_BASE_URL", "https://api.mailgun.net")
    sendgrid_api_key: SecretStr = _env("SENDGRID_API_KEY", SecretStr(""))
    sendgrid_base_url: str = _env("SENDGRID_BASE_URL", "https://api.sendgrid.com")
    postmark_server_token: SecretStr = _env("POSTMARK_SERVER_TOKEN", SecretStr(""))
    postmark_base_url: str = _env("POSTMARK_BASE_URL", "https://api.postmarkapp.com")
    postmark_message_stream: str = _env("POSTMARK_MESSAGE_STREAM", "broadcast")
    smtp_url: SecretStr = _env("SMTP_URL", SecretStr("smtp://localhost:1025"))
    provider_idempotency: bool = False
    batch_size: int | None = Field(default=None, ge=1)
    send_rate: float = Field(default=100.0, gt=0)
    send_burst: int = Field(default=1000, ge=1)
    http_timeout: float = Field(default=30.0, gt=0)
    retry_attempts: int = Field(default=6, ge=1, le=20)
    retry_base_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    lease_seconds: int = Field(default=900, ge=1)
    late_after_hours: float = Field(default=6.0, gt=0)
    error_threshold: float = Field(default=0.2, gt=0, le=1)
    error_min_recipients: int = Field(default=100, ge=1)
    beat_seconds: float = Field(default=5.0, gt=0)
    sweep_seconds: float = Field(default=15.0, gt=0)
    # Deliverability: DKIM for the mail Letterpress builds itself (SMTP, outbox). The key
    # comes from the environment only (LETTERPRESS_DKIM_PRIVATE_KEY: PEM text or a path).
    dkim_private_key: SecretStr = SecretStr("")
    dkim_selector: str = ""
    dkim_domain: str = ""  # default: the domain of each From address
    # The SMTP server delivers to nobody real (Mailpit): links in its mail may be http.
    # The outbox and HTTP APIs on loopback (the test double) count as such on their own.
    delivery_sandbox: bool = False

    # Subscriber service (letterpress serve)
    admin_token: SecretStr = SecretStr("")
    public_lists: list[str] = Field(default_factory=lambda: ["newsletter"])
    confirm_hours: float = Field(default=72.0, gt=0)
    signed_link_hours: float = Field(default=48.0, gt=0)
    signup_per_ip_per_hour: int = Field(default=20, ge=1)
    signup_per_address_per_day: int = Field(default=3, ge=1)
    click_grace_seconds: float = Field(default=10.0, ge=0)
    scanner_agents: list[str] = Field(default_factory=lambda: list(DEFAULT_SCANNERS))
    soft_bounce_limit: int = Field(default=3, ge=1)
    webhook_max_age_seconds: int = Field(default=300, ge=10)
    mailgun_webhook_signing_key: SecretStr = _env("MAILGUN_WEBHOOK_SIGNING_KEY", SecretStr(""))
    sendgrid_webhook_public_key: str = _env("SENDGRID_WEBHOOK_PUBLIC_KEY", "")
    postmark_webhook_user: str = _env("POSTMARK_WEBHOOK_USER", "")
    postmark_webhook_password: SecretStr = _env("POSTMARK_WEBHOOK_PASSWORD", SecretStr(""))
    max_body_bytes: int = Field(default=65_536, ge=1024)
    webhook_max_body_bytes: int = Field(default=5_000_000, ge=1024)
    serve_workers: int = Field(default=2, ge=1)
    forwarded_allow_ips: str = "127.0.0.1"

    # Editors' console (letterpress serve, /console)
    console_idle_minutes: int = Field(default=720, ge=1)  # signed out after this unused
    console_session_days: int = Field(default=7, ge=1)  # and after this, used or not
    console_signin_per_ip_per_hour: int = Field(default=30, ge=1)
    console_signin_per_account_per_15min: int = Field(default=5, ge=1)
    # Roles whose users must sign in with a TOTP code; empty: a code is each user's choice.
    console_totp_roles: list[Role] = Field(default_factory=list)
    # Files the console keeps (uploaded CSV files and their reports, under imports/):
    # the service and the workers must both see this directory.
    data_dir: Path = Path("data")
    import_max_bytes: int = Field(default=200_000_000, ge=1024)  # largest CSV upload

    # Affiliate links and disclosures
    affiliate_disclosure: str = DEFAULT_DISCLOSURE
    affiliate_rules: list[str] = Field(default_factory=lambda: list(DEFAULT_AFFILIATE_RULES))
    affiliate_shorteners: list[str] = Field(default_factory=lambda: list(DEFAULT_SHORTENERS))

    # Medical disclaimer
    disclaimer_text: str = DEFAULT_DISCLAIMER
    disclaimer_categories: list[str] = Field(default_factory=lambda: ["*"])

    # Hot articles
    hot_size: int = Field(default=4, ge=0, le=50)
    hot_half_life_hours: float = Field(default=72.0, gt=0)
    hot_view_weight: float = Field(default=1.0, ge=0)
    hot_click_weight: float = Field(default=3.0, ge=0)
    hot_title_words: int = Field(default=9, ge=1)
    hot_reply_weight: float = Field(default=5.0, ge=0)  # an approved reply to the article
    # Article pages report a view to the service (POST BASE/v/<slug>) for the ranking.
    page_view_beacon: bool = True

    # Reader replies (pipeline/replies)
    reply_categories: list[str] = Field(default_factory=lambda: ["*"])  # "*": every category
    reply_moderation: Literal["all", "first", "none"] = "first"  # whose replies wait
    reply_max_chars: int = Field(default=5000, ge=100, le=50_000)
    reply_max_links: int = Field(default=2, ge=0)
    reply_min_seconds: float = Field(default=3.0, ge=0)  # between the page's load and the post
    reply_per_ip_per_hour: int = Field(default=10, ge=1)
    reply_per_address_per_hour: int = Field(default=5, ge=1)
    reply_blocklist: list[str] = Field(default_factory=list)  # words that make a reply spam
    reply_spam_days: int = Field(default=30, ge=1)  # spam is purged after this
    # Who is told of waiting replies; empty: the console's owners and editors.
    reply_moderators: list[str] = Field(default_factory=list)
    reply_digest_minutes: int = Field(default=30, ge=1)  # at most one such email per this
    reply_erasure: Literal["remove", "anonymise"] = "remove"
    # When set, ``letterpress serve`` also serves this built site (one origin for both).
    site_dir: Path | None = None

    # Email
    email_full_articles: int = Field(default=1, ge=0)
    email_clip_bytes: int = Field(default=102_000, gt=0)
    email_oversize: Literal["fail", "teaser"] = "fail"
    email_teaser_words: int = Field(default=40, ge=5)
    utm_source: str = "newsletter"
    utm_medium: str = "email"

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _time_budgets(self) -> Settings:
        # A batch's retries must end inside its lease, and the lease inside the broker's
        # visibility timeout, or a slow batch would be taken for a dead one.
        budget = self.retry_attempts * self.retry_max_seconds
        if self.lease_seconds >= self.broker_visibility_timeout:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds}) must be shorter than"
                f" broker_visibility_timeout ({self.broker_visibility_timeout})"
            )
        if budget >= self.lease_seconds:
            raise ValueError(
                f"retry_attempts * retry_max_seconds ({budget:g} s) must be shorter than"
                f" lease_seconds ({self.lease_seconds})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))

    def render_values(self) -> dict[str, Any]:
        """The settings that shape pages and emails, as JSON values (``RENDER_FIELDS``)."""
        return self.model_dump(mode="json", include=set(RENDER_FIELDS))

    @property
    def previous_keys(self) -> list[str]:
        value = self.previous_secret_keys.get_secret_value()
        return [key.strip() for key in value.split(",") if key.strip()]

    @property
    def site_host(self) -> str:
        return self.base_url.split("://", 1)[1].split("/", 1)[0].lower()


def _default_templates() -> Path:
    beside = PROJECT_ROOT / "templates"
    return beside if beside.is_dir() else Path.cwd() / "templates"


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings once, at the edge (the CLI, the worker, a test)."""
    if config is None and os.environ.get("LETTERPRESS_CONFIG"):
        config = Path(os.environ["LETTERPRESS_CONFIG"])
    values: dict[str, Any] = {}
    if config is not None or Path("letterpress.toml").is_file():
        path = config or Path("letterpress.toml")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    secrets = sorted(SECRETS & values.keys())
    if secrets:
        raise ConfigError(
            f"{config or 'letterpress.toml'}: {', '.join(secrets)} must not be in the settings"
            " file: secrets belong in the environment ("
            + ", ".join(_secret_variable(name) for name in secrets)
            + ")"
        )
    token = _FILE_VALUES.set(values)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config)) from None
    finally:
        _FILE_VALUES.reset(token)


SECRETS = {
    "secret_key",
    "previous_secret_keys",
    "dkim_private_key",
    "admin_token",
    "mailgun_api_key",
    "sendgrid_api_key",
    "postmark_server_token",
    "mailgun_webhook_signing_key",
    "postmark_webhook_password",
}


def _secret_variable(name: str) -> str:
    prefixed = ("secret_key", "previous_secret_keys", "admin_token", "dkim_private_key")
    return "LETTERPRESS_" + name.upper() if name in prefixed else name.upper()


def _describe(exc: ValidationError, config: Path | None) -> str:
    lines = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        env_name = "LETTERPRESS_" + name.upper()
        where = f" (environment {env_name}" + (f" or {config}" if config else "") + ")"
        lines.append(f"setting {name}{where}: {err['msg']}")
    return "\n".join(lines)
