"""``letterpress subscribers``: CSV import and export, and small commands for editors."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.audience import changes, exports, imports, lists
from pipeline.audience import subscribers as domain
from pipeline.cli.common import Context, pass_ctx, run_or_exit
from pipeline.store import db

if TYPE_CHECKING:
    from sqlalchemy import Engine

PROGRESS_BYTES = 1_000_000  # files at least this large get a progress bar


def _engine(ctx: Context) -> Engine:
    return db.require_current(ctx.settings().database_url)


def _list_name(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """Check --list values (one, or a tuple of them) before anything runs."""
    names = value if isinstance(value, tuple) else (value,)
    try:
        checked = tuple(None if n is None else lists.check_list_name(n) for n in names)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return checked if isinstance(value, tuple) else checked[0]


status_option = click.option(
    "--status",
    type=click.Choice([s.value for s in domain.STATUSES]),  # values: click matches enums by name
    default=None,
    help="Only subscribers with this status.",
)


@click.group("subscribers")
def subscribers() -> None:
    """Subscribers and their lists: CSV import and export, one-off additions."""


@subscribers.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--list",
    "list_name",
    metavar="NAME",
    callback=_list_name,
    help="Also put everyone imported on this list (created if needed).",
)
@pass_ctx
def import_(ctx: Context, file: Path, list_name: str | None) -> None:
    """Import subscribers from a CSV FILE whose first row names the columns.

    An email column is required; name, time_zone, lists (separated by ;), status,
    created_at and confirmed_at are optional, and any other column becomes an
    attribute. Imported people are active (they consented elsewhere) unless a status
    column says otherwise; anyone who unsubscribed, bounced or complained stays so.
    Importing the same file again changes nothing.

    Each bad row is reported as FILE:LINE: message on stderr, and the other rows are
    imported; the exit status is 1 if any row was bad.
    """

    def run() -> int:
        engine = _engine(ctx)
        with _progress(file) as progress:
            report = imports.import_csv(engine, file, list_name=list_name, progress=progress)
        for problem in report.problems:
            click.echo(str(problem), err=True)
        click.echo(report.summary())
        return 1 if report.problems else 0

    if run_or_exit(run):
        sys.exit(1)


@contextmanager
def _progress(file: Path) -> Iterator[Any]:
    """A progress callback drawing click's progress bar on stderr, for large files."""
    if file.stat().st_size < PROGRESS_BYTES:
        yield None
        return
    with file.open("rb") as handle:
        lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    done = 0
    with click.progressbar(
        length=max(lines - 1, 1),
        label=f"importing {file.name}",
        file=sys.stderr,
        show_pos=True,
    ) as bar:

        def progress(rows: int) -> None:
            nonlocal done
            bar.update(rows - done)
            done = rows

        yield progress


@subscribers.command("export")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the CSV to this file (default: standard output).",
)
@click.option("--list", "list_name", metavar="NAME", help="Only subscribers on this list.")
@status_option
@pass_ctx
def export(ctx: Context, out: Path | None, list_name: str | None, status: str | None) -> None:
    """Write subscribers as CSV (UTF-8), one column per attribute.

    The file imports back into the same subscribers, lists, statuses and times.
    """

    def run() -> None:
        engine = _engine(ctx)
        if out is None:
            count = exports.export_csv(engine, sys.stdout, list_name=list_name, status=status)
        else:
            partial = out.with_name(f".{out.name}.partial")
            try:
                with partial.open("w", encoding="utf-8", newline="") as handle:
                    count = exports.export_csv(engine, handle, list_name=list_name, status=status)
                os.replace(partial, out)
            finally:
                partial.unlink(missing_ok=True)
        where = f" to {out}" if out else ""
        click.echo(f"exported {count:,} subscriber{'' if count == 1 else 's'}{where}", err=True)

    run_or_exit(run)


def _email(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        return domain.normalise_email(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@subscribers.command("add")
@click.argument("email", callback=_email)
@click.option("--name", default="", help="The subscriber's name.")
@click.option(
    "--list",
    "lists",
    multiple=True,
    metavar="NAME",
    callback=_list_name,
    help="A list to put them on (repeatable; created if needed).",
)
@click.option(
    "--status",
    type=click.Choice(["active", "pending"]),
    default="pending",
    show_default=True,
    help="active if they already confirmed; pending waits for confirmation.",
)
@pass_ctx
def add(ctx: Context, email: str, name: str, lists: tuple[str, ...], status: str) -> None:
    """Add one subscriber (an existing one is only added to the lists)."""

    def run() -> None:
        engine = _engine(ctx)
        try:
            added = changes.add(
                engine, email, via=changes.COMMAND_LINE, name=name, lists=lists, status=status
            )
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        found = domain.get(engine, added.subscriber_id)
        assert found is not None
        on = f", lists: {', '.join(found.lists)}" if found.lists else ""
        verb = "added" if added.new else "already subscribed"
        click.echo(f"{verb}: {found.email} (id {found.id}, {found.status}{on})")

    run_or_exit(run)


@subscribers.command("count")
@click.option("--list", "list_name", metavar="NAME", help="Only subscribers on this list.")
@status_option
@pass_ctx
def count(ctx: Context, list_name: str | None, status: str | None) -> None:
    """Print how many subscribers there are (on a list, with a status)."""

    def run() -> None:
        click.echo(str(domain.count(_engine(ctx), list_name=list_name, status=status)))

    run_or_exit(run)
