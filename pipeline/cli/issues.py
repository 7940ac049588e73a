"""Editor and operator commands: ``db``, ``issue``, ``status``, ``metrics``, ``beat``."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from pipeline.broker import dispatcher_for
from pipeline.cli.common import Context, pass_ctx, run_or_exit
from pipeline.errors import ConfigError, LetterpressError
from pipeline.people import audit
from pipeline.replies import digest
from pipeline.sending import issues, machinery, preflight, recover
from pipeline.sending.batches import Dispatcher
from pipeline.sending.parts import SendingParts, enqueue
from pipeline.sending.preview import render_issue
from pipeline.sending.recover import reconcile
from pipeline.statuses import BatchStatus
from pipeline.store import db


def dispatcher(ctx: Context, rt: SendingParts, progress: Any = None) -> Dispatcher:
    """Celery when REDIS_URL is set; otherwise the batches are sent here and now."""
    return dispatcher_for(rt, ctx.broker(), progress)


def workers_online(ctx: Context) -> list[str] | None:
    broker = ctx.broker()
    return None if broker is None else broker.workers_online()


# -- db ---------------------------------------------------------------------------------


@click.group("db")
def db_group() -> None:
    """The SQL database (DATABASE_URL; a SQLite file by default)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_ctx
def db_upgrade(ctx: Context, revision: str) -> None:
    """Create or migrate the tables (safe to run again)."""

    def run() -> None:
        url = ctx.settings().database_url
        db.upgrade(url, revision)
        click.echo(f"database {db._safe(url)} is at migration {db.current_revision(url)}")

    run_or_exit(run)


# -- issue ------------------------------------------------------------------------------


@click.group("issue")
def issue_group() -> None:
    """Create, preview, test, schedule and steer newsletter issues."""


@issue_group.command("create")
@click.option("--subject", required=True, help="The subject line.")
@click.option(
    "--articles",
    required=True,
    help="Slugs in order, comma-separated; slug:full or slug:teaser (the first is"
    " full by default).",
)
@click.option("--audience", multiple=True, help="A subscriber list (repeatable; default all).")
@click.option("--preheader", default="", help="The preview text.")
@click.option("--intro", default="", help="An introduction above the articles (HTML allowed).")
@pass_ctx
def issue_create(
    ctx: Context, subject: str, articles: str, audience: tuple[str, ...], preheader: str, intro: str
) -> None:
    """Create a draft issue and print its id."""

    def run() -> None:
        rt = SendingParts(ctx.settings())
        issue_id = issues.create(
            rt.engine,
            subject=subject,
            articles=issues.parse_articles(articles),
            audience=[a for part in audience for a in part.split(",") if a],
            preheader=preheader,
            intro=intro,
            catalog=rt.catalog(),
        )
        click.echo(issue_id)

    run_or_exit(run)


@issue_group.command("list")
@pass_ctx
def issue_list(ctx: Context) -> None:
    """Every issue, newest first."""

    def run() -> None:
        rt = SendingParts(ctx.settings())
        rows = issues.list_issues(rt.engine)
        if not rows:
            click.echo("no issues yet: `letterpress issue create --subject … --articles …`")
        for i in rows:
            when = f"{i.local_send_at:%Y-%m-%d %H:%M %Z}" if i.local_send_at else "-"
            click.echo(
                f"{i.id:>5}  {i.status:9}  {when:22}  {i.progress.sent:>9,} sent  {i.subject}"
            )

    run_or_exit(run)


@issue_group.command("show")
@click.argument("issue_id", type=int)
@pass_ctx
def issue_show(ctx: Context, issue_id: int) -> None:
    """Status and progress of one issue."""

    def run() -> None:
        rt = SendingParts(ctx.settings())
        i = issues.get(rt.engine, issue_id)
        p = i.progress
        click.echo(f"issue {i.id}: {i.subject}")
        click.echo(
            f"  status     {i.status}" + (f" ({i.status_reason})" if i.status_reason else "")
        )
        if i.preheader:
            click.echo(f"  preheader  {i.preheader}")
        click.echo(
            "  articles   "
            + ", ".join(f"{a.slug} ({'full' if a.full else 'teaser'})" for a in i.articles)
        )
        click.echo(f"  audience   {', '.join(i.audience) or 'every active subscriber'}")
        if i.local_send_at:
            click.echo(f"  send at    {i.local_send_at:%Y-%m-%d %H:%M %Z} ({i.time_zone})")
        if i.started_at:
            at = db.now()
            click.echo(
                f"  recipients {p.recipients:,}: sent {p.sent:,}, failed {p.failed:,},"
                f" skipped {p.skipped:,}, queued {p.queued:,}"
            )
            batches = ", ".join(f"{k} {v}" for k, v in sorted(p.batches.items()))
            click.echo(f"  batches    {batches or 'none'}")
            click.echo(f"  rate       {i.rate(at):,.0f}/s")
            if p.ambiguous:
                click.echo(
                    f"  ATTENTION  {p.ambiguous} ambiguous batch(es): letterpress issue"
                    f" reconcile {i.id}"
                )
        for row in reversed(issues.events(rt.engine, issue_id, limit=5)):
            click.echo(f"  {row['at']:%Y-%m-%d %H:%M:%S} {row['level']}: {row['message']}")

    run_or_exit(run)


@issue_group.command("preview")
@click.argument("issue_id", type=int)
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True)
@pass_ctx
def issue_preview(ctx: Context, issue_id: int, out_dir: Path) -> None:
    """Write email.html, email.txt and message.eml as subscribers will get them."""

    def run() -> None:
        from pipeline.files import atomic_write
        from pipeline.merge import personalise
        from pipeline.render.emaillint import email_warnings
        from pipeline.render.emails import RenderedEmail, mime_message, preview_fields

        rt = SendingParts(ctx.settings())
        email: RenderedEmail = render_issue(rt, issue_id)
        fields = preview_fields(rt.settings)
        paths = [out_dir / "email.html", out_dir / "email.txt", out_dir / "message.eml"]
        atomic_write(paths[0], personalise(email.html, fields))
        atomic_write(paths[1], personalise(email.text, fields))
        message = mime_message(email, rt.settings, to="preview@example.com", fields=fields)
        atomic_write(paths[2], message.as_bytes())
        for path in paths:
            click.echo(str(path))
        for warning in email_warnings(email.html):  # what Gmail or Outlook cannot show
            click.echo(warning, err=True)

    run_or_exit(run)


@issue_group.command("test")
@click.argument("issue_id", type=int)
@click.option(
    "--to",
    "addresses",
    multiple=True,
    required=True,
    help="An address to send the test to (repeatable).",
)
@pass_ctx
def issue_test(ctx: Context, issue_id: int, addresses: tuple[str, ...]) -> None:
    """Send the issue to these addresses only, subject prefixed [TEST]."""

    def run() -> None:
        from pipeline.sending import testsend

        rt = SendingParts(ctx.settings())
        try:
            targets = testsend.addresses(addresses)
        except ConfigError as exc:
            raise ConfigError(f"--to: {exc}") from None
        done = testsend.send_test(rt, issue_id, targets)
        for warning in done.warnings:  # what Gmail or Outlook cannot show
            click.echo(warning, err=True)
        for address, reason in done.refused.items():
            click.echo(f"refused {address}: {reason}", err=True)
        if done.sent:
            click.echo(
                f"sent a test of issue {issue_id} to {', '.join(done.sent)} through {done.provider}"
            )
        if done.refused:
            sys.exit(1)

    run_or_exit(run)


@issue_group.command("schedule")
@click.argument("issue_id", type=int)
@click.option("--at", "at", required=True, help="now, or an ISO-8601 time (2026-12-01T08:00).")
@click.option(
    "--tz",
    default="UTC",
    show_default=True,
    help="Time zone of --at when it has no offset (IANA name).",
)
@pass_ctx
def issue_schedule(ctx: Context, issue_id: int, at: str, tz: str) -> None:
    """Schedule a draft; the beat starts it when its time comes."""

    def run() -> None:
        rt = SendingParts(ctx.settings())
        when: datetime | None = None
        if at != "now":
            try:
                when = datetime.fromisoformat(at)
            except ValueError:
                raise ConfigError(
                    f"--at {at!r}: use now or ISO-8601, e.g. 2026-12-01T08:00"
                ) from None
        moment = rt.schedule(issue_id, when, tz)
        local = moment.astimezone(issues.zone(tz))
        click.echo(f"issue {issue_id} scheduled for {local:%Y-%m-%d %H:%M %Z}")
        broker = ctx.broker()
        if at == "now" and broker is not None:
            broker.start_due_now()  # rather than at the next beat

    run_or_exit(run)


def _steer(name: str, doc: str) -> None:
    @issue_group.command(name, help=doc)
    @click.argument("issue_id", type=int)
    @pass_ctx
    def command(ctx: Context, issue_id: int) -> None:
        def run() -> None:
            rt = SendingParts(ctx.settings())
            if name == "pause":
                issues.pause(rt.engine, issue_id)
                click.echo(f"issue {issue_id} paused: batches in flight finish, no new ones start")
            elif name == "cancel":
                issues.cancel(rt.engine, issue_id)
                click.echo(f"issue {issue_id} cancelled")
            elif name == "resume":
                batches = issues.resume(rt.engine, issue_id)
                enqueue(rt.engine, dispatcher(ctx, rt), batches)
                click.echo(f"issue {issue_id} resumed: {len(batches)} batch(es) to send")
            elif name == "retry-failed":
                batches = issues.retry_failed(rt.engine, issue_id, rt.batch_size)
                enqueue(rt.engine, dispatcher(ctx, rt), batches)
                click.echo(f"issue {issue_id}: {len(batches)} retry batch(es) queued")

        run_or_exit(run)


_steer("pause", "Pause a scheduled or sending issue (resume picks up where it stopped).")
_steer("resume", "Resume a paused issue from where it stopped.")
_steer("cancel", "Cancel an issue that has not finished; unsent batches are dropped.")
_steer("retry-failed", "Send again to the recipients whose delivery failed.")


@issue_group.command("reconcile")
@click.argument("issue_id", type=int)
@click.option(
    "--assume",
    type=click.Choice(["sent", "unsent"]),
    default=None,
    help="For batches the provider cannot tell about: count them as sent, or send them again.",
)
@click.option(
    "--batch",
    "batch_id",
    type=int,
    default=None,
    help="Only this batch (its id): an ambiguous one, or one whose lease ran out.",
)
@pass_ctx
def issue_reconcile(ctx: Context, issue_id: int, assume: str | None, batch_id: int | None) -> None:
    """Settle ambiguous batches (the provider may or may not have taken them)."""

    def run() -> None:
        rt = SendingParts(ctx.settings())
        if batch_id is not None:
            done = recover.reconcile_batch(rt.engine, issue_id, batch_id, rt.provider, assume)
            _batch_done(ctx, rt, "reconciled", done)
            if done.unknown and assume is None:
                click.echo(
                    f"batch {batch_id} is held as ambiguous: {rt.settings.provider} cannot say"
                    f" what it accepted; settle it with `letterpress issue settle-batch"
                    f" {issue_id} {batch_id} --as sent` (risk: some miss it) or --as unsent"
                    " (risk: some get it twice)",
                    err=True,
                )
                sys.exit(1)
            return
        result = reconcile(rt.engine, issue_id, rt.provider, assume)
        enqueue(rt.engine, dispatcher(ctx, rt), result.requeued)
        click.echo(
            f"issue {issue_id}: {result.batches} ambiguous batch(es); {result.sent:,}"
            f" recipient(s) confirmed sent; {len(result.requeued)} batch(es) sent again"
        )
        if result.unknown:
            click.echo(
                f"{len(result.unknown)} batch(es) remain: {rt.settings.provider} cannot say what"
                " it accepted; choose with --assume sent (risk: some miss it) or --assume unsent"
                " (risk: some get it twice)",
                err=True,
            )
            sys.exit(1)

    run_or_exit(run)


def _batch_done(ctx: Context, rt: SendingParts, did: str, done: recover.BatchDone) -> None:
    """Hand on what is to send, write the audit entry, say what happened."""
    enqueue(rt.engine, dispatcher(ctx, rt), done.enqueue)
    said = (
        f"issue {done.issue_id} batch {done.batch_id} {did}: {done.sent:,} recipient(s)"
        f" counted as sent, {done.again:,} to send"
        + (" (it goes when the issue resumes)" if done.again and not done.enqueue else "")
    )
    audit.record(rt.engine, None, f"batch {did}", audit.via(None, said))
    click.echo(said)


@issue_group.command("batches")
@click.argument("issue_id", type=int)
@click.option("--status", type=click.Choice([s.value for s in BatchStatus]), default=None)
@click.option("--after", type=int, default=0, help="Start after this sequence number.")
@click.option("--limit", type=click.IntRange(1, 1000), default=machinery.PAGE, show_default=True)
@pass_ctx
def issue_batches(ctx: Context, issue_id: int, status: str | None, after: int, limit: int) -> None:
    """A send's batches: state, recipients, lease holder and expiry, attempts, errors."""

    def run() -> None:
        rt = SendingParts(ctx.settings())
        found = machinery.page(rt.engine, issue_id, status, after, limit)
        at = db.now()
        click.echo(", ".join(f"{k} {v}" for k, v in sorted(found.statuses.items())) or "none")
        for b in found.batches:
            click.echo(
                f"seq {b.seq:>5} id {b.id:<8} {b.status:<9} {b.first_id}..{b.last_id}"
                f" ({b.people:,} listed) attempts {b.attempts}"
                + (f"; {b.lease_words(at)}" if b.holder else "")
                + (f"; message {b.provider_id}" if b.provider_id else "")
                + (f"; error: {b.error}" if b.error else "")
                + (f"; may: {', '.join(b.actions(at))}" if b.actions(at) else "")
            )
        if found.next_after is not None:
            click.echo(f"more: --after {found.next_after}")

    run_or_exit(run)


@issue_group.command("requeue-batch")
@click.argument("issue_id", type=int)
@click.argument("batch_id", type=int)
@pass_ctx
def issue_requeue_batch(ctx: Context, issue_id: int, batch_id: int) -> None:
    """Send again a batch that failed, or whose worker's lease ran out."""

    def run() -> None:
        rt = SendingParts(ctx.settings())
        done = recover.requeue_batch(rt.engine, issue_id, batch_id, rt.provider.idempotent)
        _batch_done(ctx, rt, "re-queued", done)

    run_or_exit(run)


@issue_group.command("settle-batch")
@click.argument("issue_id", type=int)
@click.argument("batch_id", type=int)
@click.option(
    "--as",
    "choice",
    type=click.Choice(["sent", "unsent"]),
    required=True,
    help="sent: count its recipients as sent (some may miss it); unsent: send it again"
    " (some may get it twice).",
)
@pass_ctx
def issue_settle_batch(ctx: Context, issue_id: int, batch_id: int, choice: str) -> None:
    """Settle an ambiguous batch by your choice, without asking the provider."""

    def run() -> None:
        rt = SendingParts(ctx.settings())
        done = recover.settle_batch(rt.engine, issue_id, batch_id, choice)
        _batch_done(ctx, rt, f"settled as {choice}", done)

    run_or_exit(run)


# -- status, metrics, beat --------------------------------------------------------------


@click.command("status")
@pass_ctx
def status_command(ctx: Context) -> None:
    """Queues, workers, each sending issue's progress and recent errors."""

    def run() -> None:
        from pipeline.ops import status

        settings = ctx.settings()
        rt = SendingParts(settings)
        report = status.gather(rt.engine, settings, rt.redis, workers_online(ctx))
        for line in status.format_report(report):
            click.echo(line)

    run_or_exit(run)


@click.command("doctor")
@pass_ctx
def doctor_command(ctx: Context) -> None:
    """Check the database, Redis and the workers, and say every setting a send uses."""

    def run() -> None:
        from pipeline.ops import doctor

        settings = ctx.settings()
        rt = SendingParts(settings)
        try:
            batch_size: int | None = rt.batch_size
        except LetterpressError:  # the provider's settings are wrong: doctor says how
            batch_size = None
        engine = db.engine(settings.database_url)  # not migrated yet: doctor says so
        report = doctor.examine(settings, engine, rt.redis, ctx.broker(), batch_size)
        for line in doctor.lines(report):
            click.echo(line)
        if not report.ok:
            sys.exit(1)

    run_or_exit(run)


@click.command("metrics")
@click.option("--port", default=9108, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
@pass_ctx
def metrics_command(ctx: Context, port: int, host: str) -> None:
    """Serve the status figures on /metrics for Prometheus."""

    def run() -> None:
        from pipeline.ops.metrics import serve

        settings = ctx.settings()
        click.echo(f"serving Prometheus metrics on http://{host}:{port}/metrics")
        serve(SendingParts(settings), lambda: workers_online(ctx), host, port)

    run_or_exit(run)


@click.command("beat", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--once", is_flag=True, help="One tick, then exit (for cron).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def beat_command(ctx: Context, once: bool, celery_args: tuple[str, ...]) -> None:
    """Start due issues and sweep stalled batches, every few seconds.

    With REDIS_URL this is Celery beat, and the workers do the work (run one beat; a
    second is harmless, as claims are atomic). Without it, this process sends, inline.
    Either way the moderators' digest of waiting replies goes out every
    reply_digest_minutes, and old spam replies are purged."""

    def run() -> None:
        settings = ctx.settings()
        preflight.require(settings, "start the beat")
        broker = ctx.broker()
        if broker is not None:
            if once:
                broker.start_due_now()
                broker.sweep_now()
                click.echo("asked the workers to start due issues and sweep")
                return
            broker.run_beat(celery_args)
            return
        rt = SendingParts(settings)
        inline = dispatcher_for(rt, None)
        if not once:
            click.echo(f"sending inline every {settings.beat_seconds:g} s (no REDIS_URL)")
        tended = 0.0
        while True:
            if time.monotonic() - tended >= settings.reply_digest_minutes * 60 or not tended:
                digest.tend(rt.engine, settings, rt.provider)
                tended = time.monotonic()
            for issue_id in rt.start_due(inline):
                issue = issues.get(rt.engine, issue_id)
                click.echo(
                    f"issue {issue_id} {issue.status}: {issue.progress.sent:,} sent,"
                    f" {issue.progress.failed:,} failed"
                )
            rt.sweep(inline, queue_empty=True)
            if once:
                return
            time.sleep(settings.beat_seconds)

    run_or_exit(run)


COMMANDS = [db_group, issue_group, status_command, doctor_command, metrics_command, beat_command]
