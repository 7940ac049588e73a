"""``letterpress users``: the people who sign in to the editors' console.

The first owner is added here; after that an owner can manage users in the console too.
Every change is recorded in the audit log as made from the command line.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from pipeline.cli.common import Context, pass_ctx, run_or_exit
from pipeline.errors import NotFound
from pipeline.people import sessions
from pipeline.people import users as domain
from pipeline.statuses import Role
from pipeline.store import db

if TYPE_CHECKING:
    from sqlalchemy import Engine

ROLES = [r.value for r in Role]  # values: click matches enums by name


def _engine(ctx: Context) -> Engine:
    return db.require_current(ctx.settings().database_url)


def _user(engine: Engine, email: str) -> domain.User:
    found = domain.by_email(engine, email)
    if found is None:
        raise NotFound(f"no user with the address {email}: `letterpress users list` shows them")
    return found


@click.group("users")
def users() -> None:
    """People who sign in to the editors' console, and their roles."""


@users.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What they may do.")
@click.option("--name", default="", help="Their name, as the console shows it.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of asking.",
)
@pass_ctx
def add(ctx: Context, email: str, role: str, name: str, password_stdin: bool) -> None:
    """Add a user who signs in with EMAIL and a password of at least 12 characters.

    Roles: owner (everything, and managing users), editor (composing, testing,
    scheduling, pausing and cancelling issues), author (composing and testing issues),
    viewer (reading).
    """

    def run() -> None:
        engine = _engine(ctx)
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        user = domain.add(engine, email, role, password, name=name)
        click.echo(f"added {user.email} as {user.role} (id {user.id})")

    run_or_exit(run)


@users.command("list")
@pass_ctx
def list_(ctx: Context) -> None:
    """List every user: address, role, name, and whether they use a code or are disabled."""

    def run() -> None:
        found = domain.all_users(_engine(ctx))
        if not found:
            click.echo(
                "no users yet: add the first with `letterpress users add EMAIL --role owner`"
            )
            return
        width = max(len(u.email) for u in found)
        for user in found:
            line = f"{user.email:<{width}}  {user.role:<6}"
            if user.name:
                line += f"  {user.name}"
            notes = [n for n, on in (("TOTP", user.totp), ("disabled", user.disabled)) if on]
            if notes:
                line += f"  ({', '.join(notes)})"
            click.echo(line.rstrip())

    run_or_exit(run)


@users.command("set-role")
@click.argument("email")
@click.argument("role", type=click.Choice(ROLES))
@pass_ctx
def set_role(ctx: Context, email: str, role: str) -> None:
    """Give the user EMAIL another ROLE (the last owner stays one)."""

    def run() -> None:
        engine = _engine(ctx)
        user = _user(engine, email)
        changed = domain.set_role(engine, user.id, role, by=None)
        if changed.role == user.role:
            click.echo(f"{user.email} is {user.role} already")
        else:
            click.echo(f"{user.email}: {user.role} → {changed.role}")

    run_or_exit(run)


@users.command("disable")
@click.argument("email")
@pass_ctx
def disable(ctx: Context, email: str) -> None:
    """Stop EMAIL signing in, and sign them out everywhere now."""

    def run() -> None:
        engine = _engine(ctx)
        user = _user(engine, email)
        if user.disabled:
            click.echo(f"{user.email} is disabled already")
            return
        domain.disable(engine, user.id, by=None)
        click.echo(f"disabled {user.email}: they are signed out and cannot sign in")

    run_or_exit(run)


@users.command("sign-out")
@click.argument("email")
@pass_ctx
def sign_out(ctx: Context, email: str) -> None:
    """End every console session of EMAIL (they can sign in again)."""

    def run() -> None:
        engine = _engine(ctx)
        user = _user(engine, email)
        ended = sessions.end_all(engine, user.id, by=None)
        click.echo(f"signed {user.email} out: {ended} session{'' if ended == 1 else 's'} ended")

    run_or_exit(run)
