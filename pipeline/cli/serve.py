"""``letterpress serve``: the subscriber service on uvicorn."""

from __future__ import annotations

import logging
import os
import re

import click

from pipeline.audience.tokens import Signer
from pipeline.cli.common import Context, pass_ctx, run_or_exit
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.store import db

# Path segments that are credentials (signed tokens): never written to a log.
_TOKEN_PATH = re.compile(r"/(unsubscribe|preferences|confirm|export|delete|r)/[^/?\s]+")


class RedactTokens(logging.Filter):
    """Access log lines with the signed tokens in paths replaced by ``…``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_PATH.sub(r"/\1/…", a) if isinstance(a, str) else a for a in record.args
            )
        return True


LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "pipeline.cli.serve.RedactTokens"}},
    "formatters": {
        "default": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "default": {
            "class": "logging.StreamHandler",
            "formatter": "default",
            "stream": "ext://sys.stderr",
            "filters": ["redact"],
        },
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "pipeline": {"handlers": ["default"], "level": "INFO", "propagate": False},
    },
}


def processes_for(settings: Settings, asked: int | None) -> int:
    """How many server processes to run. Without Redis, the rate limits and the
    console's previews live in the process that counted or made them, so two processes
    would each allow the whole limit and lose each other's previews: one process, then,
    and asking for more on the command line is an error that says what to do."""
    wanted = asked or settings.serve_workers
    if settings.redis_url is not None or wanted == 1:
        return wanted
    if asked:
        raise ConfigError(
            f"--workers {asked} needs REDIS_URL: without Redis each process keeps its own"
            " rate limits and console previews, so run one process (--workers 1) or set"
            " REDIS_URL"
        )
    click.echo(
        f"letterpress serve: one process, not serve_workers ({wanted}), since REDIS_URL is"
        " not set (the rate limits and console previews are kept in the process)",
        err=True,
    )
    return 1


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0: any free).")
@click.option("--workers", type=int, default=None, help="Processes [setting serve_workers].")
@click.option("--access-log/--no-access-log", default=True, show_default=True)
@pass_ctx
def serve(ctx: Context, host: str, port: int, workers: int | None, access_log: bool) -> None:
    """Run the subscriber service: sign-up, unsubscribe, preferences, webhooks, click
    tracking, the issue archive and the admin API (OpenAPI at /openapi.json).

    With site_dir set, it serves that built site too, on the same origin."""

    def check() -> int:
        settings = ctx.settings()
        Signer.from_settings(settings)  # a clear error before listening
        db.require_current(settings.database_url)
        if settings.site_dir is not None and not settings.site_dir.is_dir():
            raise ConfigError(
                f"site_dir {settings.site_dir} is not a folder: build the site into it first"
                f" (letterpress build --out {settings.site_dir}), or unset site_dir"
            )
        return processes_for(settings, workers)

    processes = run_or_exit(check)
    import uvicorn

    if ctx.config is not None:  # the worker processes read the settings themselves
        os.environ["LETTERPRESS_CONFIG"] = str(ctx.config.resolve())
    uvicorn.run(
        ctx.edge.service_app,
        factory=True,
        host=host,
        port=port,
        workers=processes,
        proxy_headers=True,
        forwarded_allow_ips=ctx.settings().forwarded_allow_ips,
        server_header=False,
        access_log=access_log,
        log_config=LOG_CONFIG,
        timeout_graceful_shutdown=10,
    )
