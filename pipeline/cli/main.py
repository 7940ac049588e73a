"""The ``letterpress`` command."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pydantic import SecretStr

from pipeline.broker import Broker, Edge
from pipeline.cli.common import Context, pass_ctx
from pipeline.cli.common import run_or_exit as _run
from pipeline.content.check import check as check_content
from pipeline.content.store import FileContentStore
from pipeline.errors import ConfigError, LetterpressError
from pipeline.render import hot
from pipeline.settings import Settings
from pipeline.site.build import Builder
from pipeline.site.pool import Pool, ProcessPool, SerialPool

if TYPE_CHECKING:
    from pipeline.sending.parts import SendingParts

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
    ctx.obj = Context(config, ctx.obj if isinstance(ctx.obj, Edge) else None)


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
            click.echo(
                f"{len(problems)} problem(s) in {content_dir or settings.content_dir}", err=True
            )
            sys.exit(1)
        click.echo(f"{count} article(s) OK in {content_dir or settings.content_dir}")

    _run(run)


def _pool(ctx: Context, choice: str, articles: int) -> Pool:
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


@main.command()
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


@main.command()
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
    from pipeline.files import atomic_write
    from pipeline.merge import personalise
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


@main.command()
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
    from pipeline.sending import issues
    from pipeline.sending.parts import SendingParts
    from pipeline.settings import load_settings
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


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def worker(ctx: Context, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker (extra options go to Celery, e.g. --concurrency 2)."""
    from pipeline.sending.preflight import require

    def broker() -> Broker:
        require(ctx.settings(), "start a worker")
        found = ctx.broker()
        if found is None:
            raise ConfigError("REDIS_URL is not set: the workers need Redis as their broker")
        return found

    _run(broker).run_worker(celery_args)


@main.command()
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


def _register() -> None:
    from pipeline.cli.issues import COMMANDS
    from pipeline.cli.serve import serve
    from pipeline.cli.subscribers import subscribers
    from pipeline.cli.users import users

    for command in [*COMMANDS, subscribers, users, serve]:
        main.add_command(command)


_register()
