"""``letterpress replies``: readers' replies from the command line (moderation itself is
in the console, ``/admin/replies``)."""

from __future__ import annotations

import click

from pipeline.cli.common import Context, pass_ctx, run_or_exit
from pipeline.replies import digest, moderation
from pipeline.sending.providers import create as create_provider
from pipeline.store import db


@click.group("replies")
def replies() -> None:
    """Readers' replies: the waiting ones, and the moderators' digest."""


@replies.command("tend")
@pass_ctx
def tend(ctx: Context) -> None:
    """Email the moderators the replies that came since the last digest, and purge old
    spam (what the beat does every reply_digest_minutes; for cron without workers)."""

    def run() -> None:
        settings = ctx.settings()
        engine = db.require_current(settings.database_url)
        done = digest.tend(engine, settings, create_provider(settings))
        waiting = moderation.status_counts(engine)["pending"]
        told = (
            f"told {done.moderators} moderators of {done.told} replies"
            if done.told
            else "no digest due"
        )
        click.echo(f"{waiting} replies wait; {told}; {done.purged} spam replies purged")

    run_or_exit(run)


COMMANDS = [replies]
