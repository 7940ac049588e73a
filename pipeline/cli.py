"""The ``letterpress`` command."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import click

from . import hot
from .check import check as check_content
from .cli_common import Context, pass_ctx
from .cli_common import run_or_exit as _run
from .content import FileContentStore
from .errors import LetterpressError
from .pool import Pool, ProcessPool, SerialPool
from .settings import Settings
from .site import Builder

SEEDS = (
    "vitamin-k2-for-directing-calcium-to-bones",
    "the-role-of-vitamin-k2-in-calcium-distribution",
)


content_option = click.option(
    "--content",
    "content_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The article folder (default: content_dir setting, ./content).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    ctx.obj = Context(config)


@main.command()
@content_option
@pass_ctx
def check(ctx: Context, content_dir: Path | None) -> None:
    """Report every problem in the articles as path:line: message (exit 1 if any)."""

    def run() -> None:
        settings = ctx.settings()
        catalog, problems = check_content(settings, content_dir)
        for problem in problems:
            click.echo(str(problem))
        count = len(catalog.articles)
        if problems:
            click.echo(f"{len(problems)} problem(s) in {content_dir or settings.content_dir}",
                       err=True)  # fmt: skip
            sys.exit(1)
        click.echo(f"{count} article(s) OK in {content_dir or settings.content_dir}")

    _run(run)


def _pool(settings: Settings, choice: str, articles: int) -> Pool:
    if choice == "serial":
        return SerialPool()
    if choice == "processes":
        return ProcessPool(os.cpu_count() or 1)
    if choice in ("celery", "auto") and settings.redis_url:
        from workers.app import create_app
        from workers.pool import CeleryPool

        app = create_app(settings)
        if CeleryPool.workers_online(app):
            return CeleryPool(app)
        if choice == "celery":
            raise LetterpressError("--pool celery: no Celery worker answered (letterpress worker)")
    if choice == "celery":
        raise LetterpressError("--pool celery needs REDIS_URL and a running letterpress worker")
    return ProcessPool(os.cpu_count() or 1) if articles >= 200 else SerialPool()


@main.command()
@content_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Where the site goes.")  # fmt: skip
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
        settings = ctx.settings()
        folder = content_dir or settings.content_dir
        count = sum(1 for _ in folder.rglob("*.md")) if folder.is_dir() else 0
        builder = Builder(
            settings,
            out_dir,
            content_dir=folder,
            engagement=hot.Engagement.from_settings(settings),
            pool=_pool(settings, pool, count),
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
            click.echo(f"{len(report.problems)} problem(s): those articles were not built",
                       err=True)  # fmt: skip
            sys.exit(1)

    _run(run)


@main.command()
@click.argument("slugs", nargs=-1, required=True)
@content_option
@click.option("--subject", default=None, help="Subject line (default: the first title).")
@click.option("--preheader", default=None, help="Preview text (default: first summary).")
@click.option("--full", type=int, default=None,
              help="How many articles go in full (default: email_full_articles, 1).")  # fmt: skip
@click.option("--to", default="preview@example.com", show_default=True,
              help="To: address of message.eml.")  # fmt: skip
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
    from .emails import EmailRenderer, mime_message
    from .site import atomic_write

    catalog = FileContentStore(content_dir or settings.content_dir, settings).catalog()
    scores = hot.current_scores(hot.Engagement.from_settings(settings))
    email = EmailRenderer(settings).render(
        catalog, list(slugs), subject=subject, preheader=preheader, full_articles=full,
        scores=scores,
    )  # fmt: skip
    paths = [out_dir / "email.html", out_dir / "email.txt", out_dir / "message.eml"]
    atomic_write(paths[0], email.html)
    atomic_write(paths[1], email.text)
    atomic_write(paths[2], mime_message(email, settings, to=to).as_bytes())
    for path in paths:
        click.echo(str(path))
    limit = settings.email_clip_bytes
    click.echo(f"    {email.size:,} bytes of HTML (Gmail clips at {limit:,})")
    return paths


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("out"), show_default=True)  # fmt: skip
@pass_ctx
def demo(ctx: Context, out_dir: Path) -> None:
    """The main job on the embedded defaults: check, build the site, render an email."""

    def run() -> None:
        started = time.perf_counter()
        settings = ctx.settings()
        click.echo(f"1/3 checking {settings.content_dir}")
        catalog, problems = check_content(settings)
        for problem in problems:
            click.echo(f"    {problem}")
        if problems:
            sys.exit(1)
        click.echo(f"    {len(catalog.articles)} article(s) OK")
        click.echo(f"2/3 building the site into {out_dir / 'site'}")
        report = Builder(settings, out_dir / "site",
                         engagement=hot.Engagement.from_settings(settings)).build()  # fmt: skip
        for problem in report.problems:
            click.echo(f"    {problem}")
        if report.problems:
            sys.exit(1)
        click.echo(f"    {out_dir / 'site' / 'index.html'}")
        for page in report.written:
            if page.startswith("articles/"):
                click.echo(f"    {out_dir / 'site' / page}")
        click.echo(f"3/3 rendering the seed articles as an email into {out_dir / 'email'}")
        _preview(settings, list(SEEDS), None, None, None, None, "preview@example.com",
                 out_dir / "email")  # fmt: skip
        click.echo(f"done in {time.perf_counter() - started:.1f} s")

    _run(run)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def worker(ctx: Context, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker (extra options go to Celery, e.g. --concurrency 2)."""
    from workers.app import create_app

    app = _run(lambda: create_app(ctx.settings()))
    app.worker_main(["worker", *celery_args])
