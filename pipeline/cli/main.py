"""The ``letterpress`` command.

Its commands live in the modules of this package and are imported when one of them
runs, not when the command starts: ``letterpress --help`` imports click and this
module, and ``letterpress build`` never imports the SQL, Celery or web code that other
commands use. ``COMMANDS`` names each command's module and its one-line help, which is
what ``--help`` lists; a test checks that it says what each command's own help says.
"""

from __future__ import annotations

import importlib
import logging
import textwrap
from pathlib import Path
from typing import NamedTuple

import click

from pipeline.broker import Edge
from pipeline.cli.common import Context


class Lazy(NamedTuple):
    """Where a command is (``module:attribute``) and the line ``--help`` lists it with."""

    target: str
    short_help: str


COMMANDS: dict[str, Lazy] = {
    "beat": Lazy(
        "pipeline.cli.issues:beat_command",
        "Start due issues and sweep stalled batches, every few seconds.",
    ),
    "build": Lazy(
        "pipeline.cli.site:build",
        "Build the web site: articles, home, categories, series, feed and sitemap.",
    ),
    "check": Lazy(
        "pipeline.cli.site:check",
        "Report every problem in the articles as path:line: message (exit 1 if any).",
    ),
    "db": Lazy(
        "pipeline.cli.issues:db_group",
        "The SQL database (DATABASE_URL; a SQLite file by default).",
    ),
    "demo": Lazy(
        "pipeline.cli.demo:demo",
        "The main job end to end on the embedded defaults (SQLite, file outbox, no broker):"
        " check the articles, build the site, import a demo list, and send an issue of the "
        "two seed articles to it.",
    ),
    "dns": Lazy(
        "pipeline.cli.delivery:dns",
        "The DNS records to publish for the sending domain: DKIM, SPF, DMARC.",
    ),
    "doctor": Lazy(
        "pipeline.cli.issues:doctor_command",
        "Check the database, Redis and the workers, and say every setting a send uses.",
    ),
    "issue": Lazy(
        "pipeline.cli.issues:issue_group",
        "Create, preview, test, schedule and steer newsletter issues.",
    ),
    "metrics": Lazy(
        "pipeline.cli.issues:metrics_command",
        "Serve the status figures on /metrics for Prometheus.",
    ),
    "preview": Lazy(
        "pipeline.cli.site:preview",
        "Render one email from articles: email.html, email.txt and message.eml.",
    ),
    "replies": Lazy(
        "pipeline.cli.replies:replies",
        "Readers' replies: the waiting ones, and the moderators' digest.",
    ),
    "serve": Lazy(
        "pipeline.cli.serve:serve",
        "Run the subscriber service: sign-up, unsubscribe, preferences, webhooks, click "
        "tracking, the issue archive and the admin API (OpenAPI at /openapi.json).",
    ),
    "status": Lazy(
        "pipeline.cli.issues:status_command",
        "Queues, workers, each sending issue's progress and recent errors.",
    ),
    "subscribers": Lazy(
        "pipeline.cli.subscribers:subscribers",
        "Subscribers and their lists: CSV import and export, one-off additions.",
    ),
    "users": Lazy(
        "pipeline.cli.users:users",
        "People who sign in to the editors' console, and their roles.",
    ),
    "worker": Lazy(
        "pipeline.cli.delivery:worker",
        "Run a Celery worker: the options after it go to Celery, such as --concurrency 2.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported when they are asked for by name."""

    def __init__(self, *args: object, lazy: dict[str, Lazy], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name].target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[cmd_name].target} is not a click command")
        self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The list of commands from ``lazy``: listing them imports none."""
        limit = formatter.width - 6 - max(len(name) for name in self.lazy)
        rows = [
            (name, textwrap.shorten(self.lazy[name].short_help, max(limit, 30), placeholder="..."))
            for name in self.list_commands(ctx)
            if name in self.lazy
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML settings file (default: $LETTERPRESS_CONFIG or ./letterpress.toml).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens.")
@click.version_option(package_name="letterpress")
@click.pass_context
def main(ctx: click.Context, config: Path | None, verbose: bool) -> None:
    """Letterpress: articles and newsletters from Markdown, for the web and for email."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Context(config, ctx.obj if isinstance(ctx.obj, Edge) else None)
