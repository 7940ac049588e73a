"""``letterpress subscribers``: import, export, add and count."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import db
from . import subscribers as subs
from .cli_common import Context, pass_ctx, run_or_exit
from .errors import ConfigError

STATUSES = click.Choice(list(db.SUBSCRIBER_STATUSES))


@click.group("subscribers")
def subscribers() -> None:
    """The subscriber lists: import and export CSV, add one, count."""


@subscribers.command("import")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--list", "list_name", default=None, help="Put every row on this list.")
@pass_ctx
def import_command(ctx: Context, path: Path, list_name: str | None) -> None:
    """Import FILE.csv (header row with an email column); bad rows are reported as
    FILE:LINE: message and every other row is imported. Exit 1 if any row was bad."""

    def run() -> subs.ImportReport:
        engine = db.require_current(ctx.settings().database_url)
        size = path.stat().st_size
        if size < 1_000_000:
            return subs.import_csv(engine, path, list_name=list_name)
        # The bar counts rows; the total is estimated from the file's size.
        with path.open("rb") as f:
            sample = f.read(1_000_000)
        estimate = max(int(size / max(len(sample), 1) * sample.count(b"\n")), 1)
        with click.progressbar(length=estimate, label="importing", file=sys.stderr) as bar:
            done = [0]

            def advance(rows: int) -> None:
                bar.update(max(min(rows, estimate) - done[0], 0))
                done[0] = min(rows, estimate)

            return subs.import_csv(engine, path, list_name=list_name, progress=advance)

    report = run_or_exit(run)
    for problem in report.problems:
        click.echo(str(problem), err=True)
    click.echo(report.summary())
    if report.problems:
        sys.exit(1)


@subscribers.command("export")
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write here instead of standard output.",
)
@click.option("--list", "list_name", default=None, help="Only this list.")
@click.option("--status", type=STATUSES, default=None, help="Only this status.")
@pass_ctx
def export_command(
    ctx: Context, out: Path | None, list_name: str | None, status: str | None
) -> None:
    """Write the subscribers as CSV, in the format `import` reads."""

    def run() -> int:
        engine = db.require_current(ctx.settings().database_url)
        if out is None:
            return subs.export_csv(engine, sys.stdout, list_name=list_name, status=status)
        with out.open("w", encoding="utf-8", newline="") as f:
            return subs.export_csv(engine, f, list_name=list_name, status=status)

    written = run_or_exit(run)
    if out is not None:
        click.echo(f"exported {written:,} subscriber(s) to {out}")


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name.")
@click.option("--list", "lists", multiple=True, help="A list to join (repeatable).")
@click.option(
    "--status",
    type=click.Choice(["active", "pending"]),
    default="pending",
    show_default=True,
    help="active: consent is already recorded elsewhere.",
)
@pass_ctx
def add_command(ctx: Context, email: str, name: str, lists: tuple[str, ...], status: str) -> None:
    """Add one subscriber (or put an existing one on more lists); prints the id."""

    def run() -> int:
        engine = db.require_current(ctx.settings().database_url)
        try:
            address = subs.normalise_email(email)
        except ValueError as exc:
            raise ConfigError(f"{email}: {exc}") from None
        return subs.add(engine, address, name=name, lists=lists, status=status)

    click.echo(run_or_exit(run))


@subscribers.command("count")
@click.option("--list", "list_name", default=None, help="Only this list.")
@click.option("--status", type=STATUSES, default=None, help="Only this status.")
@pass_ctx
def count_command(ctx: Context, list_name: str | None, status: str | None) -> None:
    """How many subscribers there are (on a list, with a status)."""

    def run() -> int:
        engine = db.require_current(ctx.settings().database_url)
        return subs.count(engine, list_name, status)

    click.echo(f"{run_or_exit(run):,}")
