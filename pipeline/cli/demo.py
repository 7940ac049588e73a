"""``letterpress demo``: the main job end to end on the embedded defaults."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline.cli.common import Context, pass_ctx
from pipeline.cli.common import run_or_exit as _run

if TYPE_CHECKING:
    from pipeline.sending.parts import SendingParts

SEEDS = (
    "vitamin-k2-for-directing-calcium-to-bones",
    "the-role-of-vitamin-k2-in-calcium-distribution",
)


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("out"),
    show_default=True,
)
@click.option(
    "--subscribers", "count", default=2000, show_default=True, help="Size of the demo list."
)
@pass_ctx
def demo(ctx: Context, out_dir: Path, count: int) -> None:
    """The main job end to end on the embedded defaults (SQLite, file outbox, no broker):
    check the articles, build the site, import a demo list, and send an issue of the two
    seed articles to it."""
    _run(lambda: _demo(ctx, out_dir, count))


def _demo_send(rt: SendingParts, count: int) -> int:
    """Create the demo issue and send it here and now, with a progress bar."""
    from pipeline.broker import dispatcher_for
    from pipeline.sending import issues
    from pipeline.sending.batches import Outcome

    issue_id = issues.create(
        rt.engine,
        subject="Vitamin K2: where your calcium goes",
        articles=[issues.ArticleRef(SEEDS[0], True), issues.ArticleRef(SEEDS[1], False)],
        audience=["demo"],
        preheader="Two articles on vitamin K2, calcium and your bones.",
        catalog=rt.catalog(),
    )
    issues.schedule(rt.engine, issue_id, None)
    with click.progressbar(
        length=count, label=f"    issue {issue_id}", show_pos=True, show_eta=True
    ) as bar:

        def advance(outcome: Outcome) -> None:
            bar.update(outcome.sent + outcome.failed + outcome.skipped)

        dispatcher = dispatcher_for(rt, None, advance)  # the demo has no broker
        rt.start_due(dispatcher)
        rt.sweep(dispatcher, queue_empty=True)
    return issue_id


def _demo(ctx: Context, out_dir: Path, count: int) -> None:
    import secrets

    from pipeline.audience.imports import import_csv
    from pipeline.content.check import check as check_content
    from pipeline.render import hot
    from pipeline.sending import issues
    from pipeline.sending.parts import SendingParts
    from pipeline.settings import load_settings
    from pipeline.site.build import Builder
    from pipeline.store import db

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    base = ctx.settings()
    settings = load_settings(
        ctx.config,
        database_url=f"sqlite:///{out_dir / 'letterpress.db'}",
        provider="outbox",
        outbox_dir=out_dir / "outbox",
        redis_url=None,
        secret_key=base.secret_key.get_secret_value() or secrets.token_urlsafe(32),
    )
    click.echo(f"1/5 checking {settings.content_dir}")
    catalog, problems = check_content(settings)
    for problem in problems:
        click.echo(f"    {problem}")
    if problems:
        sys.exit(1)
    click.echo(f"    {len(catalog.articles)} article(s) OK")
    click.echo(f"2/5 building the site into {out_dir / 'site'}")
    report = Builder(
        settings, out_dir / "site", engagement=hot.Engagement.from_settings(settings)
    ).build()
    for problem in report.problems:
        click.echo(f"    {problem}")
    if report.problems:
        sys.exit(1)
    click.echo(f"    {out_dir / 'site' / 'index.html'} and {report.articles} article page(s)")
    click.echo(
        f"3/5 importing a demo list of {count:,} subscribers into {out_dir / 'letterpress.db'}"
    )
    db.upgrade(settings.database_url)
    csv_path = out_dir / "demo-subscribers.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as f:
        f.write("email,name,time_zone\n")
        for n in range(1, count + 1):
            f.write(f"reader{n}@example.com,Reader {n},Europe/London\n")
    imported = import_csv(db.engine(settings.database_url), csv_path, list_name="demo")
    click.echo(f"    {imported.summary()}")
    click.echo("4/5 sending an issue of the two seed articles through the file outbox")
    rt = SendingParts(settings)
    issue_id = _demo_send(rt, count)
    issue = issues.get(rt.engine, issue_id)
    p = issue.progress
    folder = settings.outbox_dir / f"issue-{issue_id}"
    click.echo("5/5 summary")
    click.echo(
        f"    issue {issue_id} {issue.status}: {p.sent:,} sent, {p.failed:,} failed,"
        f" {p.skipped:,} skipped of {p.recipients:,} in {sum(p.batches.values())} batches"
    )
    sample = min(folder.glob("*.eml"), default=None, key=lambda x: int(x.stem))
    click.echo(f"    one .eml per recipient in {folder}" + (f", e.g. {sample}" if sample else ""))
    click.echo(f"done in {time.perf_counter() - started:.1f} s")
    rt.close()
    if issue.status != "sent":
        sys.exit(1)
