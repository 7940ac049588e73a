"""``letterpress worker`` and ``dns``: a Celery worker, and the records the sending
domain publishes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import SecretStr

from pipeline.cli.common import Context, pass_ctx
from pipeline.cli.common import run_or_exit as _run
from pipeline.errors import ConfigError, LetterpressError

if TYPE_CHECKING:
    from pipeline.broker import Broker


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def worker(ctx: Context, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker: the options after it go to Celery, such as --concurrency 2."""
    from pipeline.sending.preflight import require

    def broker() -> Broker:
        require(ctx.settings(), "start a worker")
        found = ctx.broker()
        if found is None:
            raise ConfigError("REDIS_URL is not set: the workers need Redis as their broker")
        return found

    _run(broker).run_worker(celery_args)


@click.command()
@click.option(
    "--new-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a new 2048-bit DKIM private key to this file (mode 600) first.",
)
@pass_ctx
def dns(ctx: Context, new_key: Path | None) -> None:
    """The DNS records to publish for the sending domain: DKIM, SPF, DMARC."""
    from pipeline.sending import dkim

    def run() -> None:
        settings = ctx.settings()
        if new_key is not None:
            if new_key.exists():
                raise LetterpressError(f"{new_key} exists already: choose another file")
            new_key.touch(mode=0o600)
            new_key.write_bytes(dkim.new_key())
            click.echo(
                f"wrote a new DKIM key to {new_key}: set LETTERPRESS_DKIM_PRIVATE_KEY={new_key}"
                " and a dkim_selector, then publish the DKIM record below",
                err=True,
            )
            settings = settings.model_copy(update={"dkim_private_key": SecretStr(str(new_key))})
        if settings.provider in dkim.SPF_INCLUDES:
            click.echo(
                f"# {settings.provider} signs your mail with the DKIM key of the domain you"
                " verified in its dashboard: publish the records it shows there. SPF and"
                " DMARC below still apply."
            )
        elif not settings.dkim_private_key.get_secret_value().strip():
            click.echo(
                "# no DKIM key: run `letterpress dns --new-key dkim.pem` and set"
                " LETTERPRESS_DKIM_PRIVATE_KEY and dkim_selector to sign SMTP and outbox mail"
            )
        for record in dkim.records(settings):
            click.echo(f"# {record.why}")
            click.echo(f"{record.name}. IN {record.type} {dkim.zone_value(record.value)}")

    _run(run)
