"""``letterpress check``, ``build`` and ``preview``: the commands of the articles and
the site. They read files and write files; none of them needs SQL, and ``build``
asks Celery's workers to share the work only with ``REDIS_URL`` and ``--pool`` auto or
celery."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline.cli.common import Context, pass_ctx
from pipeline.cli.common import run_or_exit as _run
from pipeline.errors import LetterpressError

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.site.pool import Pool

content_option = click.option(
    "--content",
    "content_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The article folder (default: content_dir setting, ./content).",
)


@click.command()
@content_option
@pass_ctx
def check(ctx: Context, content_dir: Path | None) -> None:
    """Report every problem in the articles as path:line: message (exit 1 if any)."""

    def run() -> None:
        from pipeline.content.check import check as check_content

        settings = ctx.settings()
        catalog, problems = check_content(settings, content_dir)
        for problem in problems:
            click.echo(str(problem))
        count = len(catalog.articles)
        if problems:
            click.echo(
                f"{len(problems)} problem(s) in {content_dir or settings.content_dir}", err=True
            )
            sys.exit(1)
        click.echo(f"{count} article(s) OK in {content_dir or settings.content_dir}")

    _run(run)


def _pool(ctx: Context, choice: str, articles: int) -> Pool:
    from pipeline.site.pool import ProcessPool, SerialPool

    if choice == "serial":
        return SerialPool()
    if choice == "processes":
        return ProcessPool(os.cpu_count() or 1)
    broker = ctx.broker() if choice in ("celery", "auto") else None
    if broker is not None:
        pool = broker.build_pool()
        if pool is not None:
            return pool
        if choice == "celery":
            raise LetterpressError("--pool celery: no Celery worker answered (letterpress worker)")
    if choice == "celery":
        raise LetterpressError("--pool celery needs REDIS_URL and a running letterpress worker")
    return ProcessPool(os.cpu_count() or 1) if articles >= 200 else SerialPool()


@click.command()
@content_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Where the site goes.",
)
@click.option("--force", is_flag=True, help="Render every page again.")
@click.option(
    "--pool",
    type=click.Choice(["auto", "serial", "processes", "celery"]),
    default="auto",
    show_default=True,
    help="How to spread the work: auto uses Celery workers when any answer.",
)
@pass_ctx
def build(ctx: Context, content_dir: Path | None, out_dir: Path, force: bool, pool: str) -> None:
    """Build the web site: articles, home, categories, series, feed and sitemap."""

    def run() -> None:
        from pipeline.render import hot
        from pipeline.site.build import Builder

        settings = ctx.settings()
        folder = content_dir or settings.content_dir
        count = sum(1 for _ in folder.rglob("*.md")) if folder.is_dir() else 0
        builder = Builder(
            settings,
            out_dir,
            content_dir=folder,
            engagement=hot.Engagement.from_settings(settings),
            pool=_pool(ctx, pool, count),
        )
        report = builder.build(force=force)
        for problem in sorted(report.problems):
            click.echo(str(problem), err=True)
        click.echo(
            f"built {report.articles} article(s) into {out_dir}: {len(report.written)} page(s)"
            f" written, {report.unchanged} unchanged, {len(report.removed)} removed"
            f" in {report.seconds:.2f} s ({report.pool})"
        )
        if report.problems:
            click.echo(
                f"{len(report.problems)} problem(s): those articles were not built", err=True
            )
            sys.exit(1)

    _run(run)


@click.command()
@click.argument("slugs", nargs=-1, required=True)
@content_option
@click.option("--subject", default=None, help="Subject line (default: the first title).")
@click.option("--preheader", default=None, help="Preview text (default: first summary).")
@click.option(
    "--full",
    type=int,
    default=None,
    help="How many articles go in full (default: email_full_articles, 1).",
)
@click.option(
    "--to", default="preview@example.com", show_default=True, help="To: address of message.eml."
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True)
@pass_ctx
def preview(
    ctx: Context,
    slugs: tuple[str, ...],
    content_dir: Path | None,
    subject: str | None,
    preheader: str | None,
    full: int | None,
    to: str,
    out_dir: Path,
) -> None:
    """Render one email from articles: email.html, email.txt and message.eml."""
    _run(
        lambda: _preview(ctx.settings(), slugs, content_dir, subject, preheader, full, to, out_dir)
    )


def _preview(
    settings: Settings,
    slugs: tuple[str, ...] | list[str],
    content_dir: Path | None,
    subject: str | None,
    preheader: str | None,
    full: int | None,
    to: str,
    out_dir: Path,
) -> list[Path]:
    from pipeline.content.store import FileContentStore
    from pipeline.files import atomic_write
    from pipeline.merge import personalise
    from pipeline.render import hot
    from pipeline.render.emaillint import email_warnings
    from pipeline.render.emails import EmailRenderer, mime_message, preview_fields

    catalog = FileContentStore(content_dir or settings.content_dir, settings).catalog()
    scores = hot.current_scores(hot.Engagement.from_settings(settings))
    email = EmailRenderer(settings).render(
        catalog,
        list(slugs),
        subject=subject,
        preheader=preheader,
        full_articles=full,
        scores=scores,
    )
    paths = [out_dir / "email.html", out_dir / "email.txt", out_dir / "message.eml"]
    fields = preview_fields(settings)
    atomic_write(paths[0], personalise(email.html, fields))
    atomic_write(paths[1], personalise(email.text, fields))
    atomic_write(paths[2], mime_message(email, settings, to=to, fields=fields).as_bytes())
    for path in paths:
        click.echo(str(path))
    limit = settings.email_clip_bytes
    click.echo(f"    {email.size:,} bytes of HTML (Gmail clips at {limit:,})")
    for warning in email_warnings(email.html):  # what Gmail or Outlook cannot show
        click.echo(warning, err=True)
    return paths
