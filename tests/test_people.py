"""The editors' console's people (pipeline/people): users and their passwords and codes,
what each role may do, sign-in sessions, the audit log, and ``letterpress users``."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from click.testing import CliRunner, Result
from sqlalchemy.engine import Engine

from pipeline.cli.main import main
from pipeline.errors import NotFound
from pipeline.people import audit, sessions, users
from pipeline.people.roles import ALLOWED, Action, can, why_not
from pipeline.people.users import SignInRefused, TotpNeeded, User, UserError
from pipeline.statuses import Role
from pipeline.store import db

PASSWORD = "correct horse battery"
IDLE = timedelta(hours=12)
ABSOLUTE = timedelta(days=7)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Engine:
    return db.engine(database_url)


def add(engine: Engine, email: str, role: Role = Role.EDITOR, by: int | None = None) -> User:
    return users.add(engine, email, role, PASSWORD, by=by)


def stored(engine: Engine, user_id: int) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(sa.select(db.users).where(db.users.c.id == user_id)).one()


def session_rows(engine: Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(db.console_sessions)))


# -- users and passwords ----------------------------------------------------------------------


def test_add_and_authenticate(engine: Engine) -> None:
    olive = users.add(engine, " Olive@Example.ORG ", "owner", PASSWORD, name="  Olive   Oyl ")
    assert (olive.email, olive.name, olive.role) == ("olive@example.org", "Olive Oyl", Role.OWNER)
    assert (olive.totp, olive.disabled) == (False, False)
    assert olive.created_at.tzinfo is not None
    assert users.authenticate(engine, "OLIVE@example.org", PASSWORD) == olive
    assert users.get(engine, olive.id) == olive
    assert users.by_email(engine, "olive@EXAMPLE.org") == olive
    assert users.by_email(engine, "nobody@example.org") is None
    assert users.by_email(engine, "not an address") is None
    assert users.all_users(engine) == [olive]
    with pytest.raises(NotFound, match="no user 999"):
        users.get(engine, 999)
    row = stored(engine, olive.id)
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in row.password_hash


def test_a_wrong_password_and_an_unknown_address_get_the_same_answer(engine: Engine) -> None:
    add(engine, "olive@example.org")
    messages = set()
    for email, password in [
        ("olive@example.org", "the wrong password"),
        ("olive@example.org", ""),
        ("nobody@example.org", PASSWORD),
        ("not an address", PASSWORD),
    ]:
        with pytest.raises(SignInRefused) as refused:
            users.authenticate(engine, email, password)
        messages.add(str(refused.value))
    assert messages == {"wrong address or password"}


def test_add_refuses_short_passwords_duplicates_and_unknown_roles(engine: Engine) -> None:
    with pytest.raises(UserError, match="too short: use at least 12 characters"):
        users.add(engine, "olive@example.org", Role.OWNER, "eleven char")
    olive = users.add(engine, "olive@example.org", Role.OWNER, "twelve chars")
    assert users.authenticate(engine, "olive@example.org", "twelve chars") == olive
    with pytest.raises(UserError, match="a user with this address exists"):
        users.add(engine, "OLIVE@example.org", Role.VIEWER, PASSWORD)
    with pytest.raises(UserError, match="'admin' is not a role: choose one of owner, editor"):
        users.add(engine, "ann@example.org", "admin", PASSWORD)
    with pytest.raises(UserError, match="not a valid email address"):
        users.add(engine, "ann", Role.VIEWER, PASSWORD)
    assert users.all_users(engine) == [olive]
    assert [e.action for e in audit.recent(engine)] == ["user added"]  # nothing for the rest


def test_a_hash_is_renewed_at_sign_in_when_the_parameters_change(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(users, "HASHER", PasswordHasher(time_cost=1, memory_cost=8192))
    olive = add(engine, "olive@example.org")
    old = stored(engine, olive.id).password_hash
    assert "m=8192,t=1" in old
    monkeypatch.setattr(users, "HASHER", PasswordHasher())
    assert users.HASHER.check_needs_rehash(old)
    assert users.authenticate(engine, olive.email, PASSWORD) == olive
    renewed = stored(engine, olive.id).password_hash
    assert renewed.startswith("$argon2id$") and renewed != old
    assert not users.HASHER.check_needs_rehash(renewed)
    assert users.authenticate(engine, olive.email, PASSWORD) == olive


def test_set_password(engine: Engine) -> None:
    owner = add(engine, "olive@example.org", Role.OWNER)
    ann = add(engine, "ann@example.org")
    with pytest.raises(UserError, match="too short"):
        users.set_password(engine, ann.id, "short", by=owner.id)
    token, _ = sessions.start(engine, ann.id, IDLE, ABSOLUTE)
    users.set_password(engine, ann.id, "a new long password", by=owner.id)
    assert sessions.lookup(engine, token, IDLE) is None  # signed out with the old password
    with pytest.raises(SignInRefused, match="wrong address or password"):
        users.authenticate(engine, ann.email, PASSWORD)
    assert users.authenticate(engine, ann.email, "a new long password") == ann
    assert audit.recent(engine)[0] == audit.Entry(
        audit.recent(engine)[0].at, owner.email, "password changed", f"{ann.email}; 1 session ended"
    )
    with pytest.raises(NotFound):
        users.set_password(engine, 999, "a new long password", by=owner.id)


# -- roles ----------------------------------------------------------------------------------

MATRIX = {
    Role.OWNER: {
        "read",
        "compose",
        "test",
        "schedule",
        "steer",
        "watch",
        "reconcile",
        "subscribers",
        "moderate",
        "manage_users",
    },
    Role.EDITOR: {"read", "compose", "test", "schedule", "steer", "moderate"},
    Role.AUTHOR: {"read", "compose", "test"},
    Role.VIEWER: {"read"},
    Role.OPERATOR: {"read", "steer", "watch", "reconcile", "subscribers"},
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_what_each_role_may_do(role: Role, action: Action) -> None:
    allowed = action.value in MATRIX[role]
    assert can(role, action) is allowed
    assert can(role.value, action) is allowed
    assert (why_not(role, action) == "") is allowed


def test_the_role_table_has_every_role_and_action() -> None:
    assert [a.value for a in Action] == [
        "read", "compose", "test", "schedule", "steer", "watch", "reconcile", "subscribers",
        "moderate", "manage_users",
    ]  # fmt: skip
    assert {r: {a.value for a in actions} for r, actions in ALLOWED.items()} == MATRIX
    assert not can("admin", Action.READ)


def test_why_not_names_the_roles_that_may() -> None:
    assert (
        why_not(Role.AUTHOR, Action.SCHEDULE)
        == "Authors can compose and test issues; an editor or owner schedules them."
    )
    assert why_not(Role.EDITOR, Action.MANAGE_USERS) == (
        "Editors can compose, test, schedule and steer issues and moderate replies; only an owner"
        " manages users."
    )
    for role in Role:
        for action in Action:
            sentence = why_not(role, action)
            if not sentence:
                continue
            assert sentence.endswith(".") and sentence[0].isupper()
            who = sentence.split(";", 1)[1]
            named = {r for r in Role if re.search(rf"\b{r.value}\b", who)}
            assert named == {r for r in Role if can(r, action)}, sentence
    assert "not a role" in why_not("admin", Action.COMPOSE)


# -- sessions -------------------------------------------------------------------------------


def test_start_and_lookup(engine: Engine) -> None:
    olive = add(engine, "olive@example.org")
    token, session = sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    assert len(token) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert session.user == olive
    assert session.expires_at == T0 + ABSOLUTE
    assert len(session.csrf) >= 43 and session.csrf != token
    (row,) = session_rows(engine)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in [str(v) for v in row]  # only its hash is stored
    assert sessions.lookup(engine, token, IDLE, now=T0 + timedelta(seconds=30)) == session
    assert session_rows(engine)[0].seen_at == T0  # written at most once a minute
    assert sessions.lookup(engine, token, IDLE, now=T0 + timedelta(minutes=2)) == session
    assert session_rows(engine)[0].seen_at == T0 + timedelta(minutes=2)
    for wrong in ("", "x", token[:-1], token + "x", "a" * 10_000):
        assert sessions.lookup(engine, wrong, IDLE, now=T0) is None
    other, _ = sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    assert other != token and len(session_rows(engine)) == 2
    with pytest.raises(NotFound):
        sessions.start(engine, 999, IDLE, ABSOLUTE)


def test_a_session_unused_for_the_idle_time_ends(engine: Engine) -> None:
    olive = add(engine, "olive@example.org")
    token, _ = sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    at = T0 + IDLE - timedelta(seconds=1)
    assert sessions.lookup(engine, token, IDLE, now=at) is not None  # used: idle from here
    at += IDLE - timedelta(seconds=1)
    assert sessions.lookup(engine, token, IDLE, now=at) is not None
    assert sessions.lookup(engine, token, IDLE, now=at + IDLE) is None
    assert session_rows(engine) == []  # an expired session is deleted
    assert sessions.lookup(engine, token, IDLE, now=at) is None


def test_a_session_ends_at_its_absolute_expiry_however_much_it_is_used(engine: Engine) -> None:
    olive = add(engine, "olive@example.org")
    token, session = sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    at = T0
    while at + timedelta(hours=6) < session.expires_at:
        at += timedelta(hours=6)
        assert sessions.lookup(engine, token, IDLE, now=at) is not None, at
    assert sessions.lookup(engine, token, IDLE, now=session.expires_at) is None
    assert session_rows(engine) == []


def test_start_clears_the_users_expired_sessions(engine: Engine) -> None:
    olive = add(engine, "olive@example.org")
    ann = add(engine, "ann@example.org")
    sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    sessions.start(engine, ann.id, IDLE, ABSOLUTE, now=T0)
    later = T0 + IDLE + timedelta(minutes=1)
    sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=later)
    rows = session_rows(engine)
    assert sorted((r.user_id, r.created_at) for r in rows) == sorted(
        [(olive.id, later), (ann.id, T0)]  # Ann's is hers to clear
    )


def test_end_and_end_all(engine: Engine) -> None:
    owner = add(engine, "owner@example.org", Role.OWNER)
    olive = add(engine, "olive@example.org")
    first, _ = sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    second, _ = sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    third, _ = sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    owners, _ = sessions.start(engine, owner.id, IDLE, ABSOLUTE, now=T0)
    sessions.end(engine, first)
    sessions.end(engine, first)  # again: nothing happens
    sessions.end(engine, "no such token")
    assert sessions.lookup(engine, first, IDLE, now=T0) is None
    assert sessions.lookup(engine, second, IDLE, now=T0) is not None
    assert sessions.end_all(engine, olive.id, by=owner.id) == 2
    assert sessions.lookup(engine, second, IDLE, now=T0) is None
    assert sessions.lookup(engine, third, IDLE, now=T0) is None
    assert sessions.lookup(engine, owners, IDLE, now=T0) is not None
    entry = audit.recent(engine)[0]
    assert (entry.user_email, entry.action, entry.detail) == (
        owner.email,
        "signed out everywhere",
        "olive@example.org; 2 sessions ended",
    )
    with pytest.raises(NotFound):
        sessions.end_all(engine, 999, by=owner.id)


def test_end_others_keeps_only_the_session_asked_for(engine: Engine) -> None:
    owner = add(engine, "owner@example.org", Role.OWNER)
    olive = add(engine, "olive@example.org")
    here, _ = sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    there, _ = sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    owners, _ = sessions.start(engine, owner.id, IDLE, ABSOLUTE, now=T0)
    assert sessions.end_others(engine, olive.id, keep=here) == 1
    assert sessions.lookup(engine, here, IDLE, now=T0) is not None
    assert sessions.lookup(engine, there, IDLE, now=T0) is None
    assert sessions.lookup(engine, owners, IDLE, now=T0) is not None


def test_a_disabled_users_sessions_are_gone_and_they_cannot_sign_in(engine: Engine) -> None:
    owner = add(engine, "owner@example.org", Role.OWNER)
    olive = add(engine, "olive@example.org")
    token, _ = sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    users.disable(engine, olive.id, by=owner.id)
    assert users.get(engine, olive.id).disabled
    assert sessions.lookup(engine, token, IDLE, now=T0) is None
    assert [r.user_id for r in session_rows(engine)] == []
    with pytest.raises(SignInRefused, match="disabled"):
        users.authenticate(engine, olive.email, PASSWORD)
    with pytest.raises(SignInRefused, match=r"^wrong address or password$"):
        users.authenticate(engine, olive.email, "the wrong password")  # says nothing more
    with pytest.raises(UserError, match="disabled"):
        sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    entries = audit.count(engine)
    users.disable(engine, olive.id, by=owner.id)  # again: nothing happens
    assert audit.count(engine) == entries
    with pytest.raises(NotFound):
        users.disable(engine, 999, by=owner.id)


def test_lookup_refuses_a_session_whose_user_is_disabled(engine: Engine) -> None:
    """Even one left over (say, a session started while the user was being disabled)."""
    olive = add(engine, "olive@example.org")
    token, _ = sessions.start(engine, olive.id, IDLE, ABSOLUTE, now=T0)
    with engine.begin() as conn:
        conn.execute(sa.update(db.users).values(disabled_at=T0))
    assert sessions.lookup(engine, token, IDLE, now=T0) is None


def test_deleting_a_user_ends_their_sessions_and_keeps_their_audit_entries(
    engine: Engine,
) -> None:
    owner = add(engine, "owner@example.org", Role.OWNER)
    add(engine, "olive@example.org", by=owner.id)
    sessions.start(engine, owner.id, IDLE, ABSOLUTE, now=T0)
    with engine.begin() as conn:
        conn.execute(sa.delete(db.users).where(db.users.c.id == owner.id))
    assert session_rows(engine) == []
    assert [(e.user_email, e.action) for e in audit.recent(engine)] == [
        (None, "user added"),
        (None, "user added"),
    ]


# -- roles and the last owner -------------------------------------------------------------------


def test_the_last_owner_stays_an_owner(engine: Engine) -> None:
    olive = add(engine, "olive@example.org", Role.OWNER)
    with pytest.raises(UserError, match=r"olive@example\.org is the last owner"):
        users.set_role(engine, olive.id, Role.EDITOR, by=olive.id)
    with pytest.raises(UserError, match="last owner"):
        users.disable(engine, olive.id, by=olive.id)
    ann = add(engine, "ann@example.org", Role.OWNER, by=olive.id)
    assert users.set_role(engine, olive.id, "editor", by=ann.id).role == Role.EDITOR
    with pytest.raises(UserError, match=r"ann@example\.org is the last owner"):
        users.set_role(engine, ann.id, Role.VIEWER, by=ann.id)
    bo = add(engine, "bo@example.org", Role.OWNER, by=ann.id)
    users.disable(engine, bo.id, by=ann.id)  # a disabled owner manages nothing
    with pytest.raises(UserError, match="last owner"):
        users.disable(engine, ann.id, by=ann.id)
    assert users.set_role(engine, bo.id, Role.VIEWER, by=ann.id).role == Role.VIEWER
    assert [u.role for u in users.all_users(engine)] == [Role.OWNER, Role.VIEWER, Role.EDITOR]
    with pytest.raises(UserError, match="not a role"):
        users.set_role(engine, olive.id, "admin", by=ann.id)
    with pytest.raises(NotFound):
        users.set_role(engine, 999, Role.VIEWER, by=ann.id)


def test_two_owners_demoting_each_other_at_once_leave_one_owner(engine: Engine) -> None:
    first = add(engine, "first@example.org", Role.OWNER)
    second = add(engine, "second@example.org", Role.OWNER)
    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def demote(user: User, by: User) -> None:
        barrier.wait()
        try:
            users.set_role(engine, user.id, Role.EDITOR, by=by.id)
            outcomes[user.id] = "demoted"
        except UserError:
            outcomes[user.id] = "refused"

    threads = [
        threading.Thread(target=demote, args=(first, second)),
        threading.Thread(target=demote, args=(second, first)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes.values()) == ["demoted", "refused"]
    assert [u.role for u in users.all_users(engine)].count(Role.OWNER) == 1


# -- the audit log ------------------------------------------------------------------------------


def test_the_audit_log_records_people_changes_newest_first(engine: Engine) -> None:
    owner = add(engine, "owner@example.org", Role.OWNER)  # by None: the command line
    ann = add(engine, "ann@example.org", Role.EDITOR, by=owner.id)
    users.set_role(engine, ann.id, Role.AUTHOR, by=owner.id)
    users.set_role(engine, ann.id, Role.AUTHOR, by=owner.id)  # no change, no entry
    sessions.start(engine, ann.id, IDLE, ABSOLUTE)
    sessions.end_all(engine, ann.id, by=owner.id)
    users.disable(engine, ann.id, by=owner.id)
    audit.record(engine, owner.id, "issue scheduled", "issue 1, Vitamin K2")
    entries = audit.recent(engine)
    assert [(e.user_email, e.action, e.detail) for e in entries] == [
        ("owner@example.org", "issue scheduled", "issue 1, Vitamin K2"),
        ("owner@example.org", "user disabled", "ann@example.org; 0 sessions ended"),
        ("owner@example.org", "signed out everywhere", "ann@example.org; 1 session ended"),
        ("owner@example.org", "role changed", "ann@example.org: editor → author"),
        ("owner@example.org", "user added", "ann@example.org as editor"),
        (None, "user added", "command line: owner@example.org as owner"),
    ]
    assert [e.at for e in entries] == sorted((e.at for e in entries), reverse=True)
    assert all(e.at.tzinfo is not None for e in entries)
    assert audit.count(engine) == 6
    assert [e.action for e in audit.recent(engine, limit=2, offset=1)] == [
        "user disabled",
        "signed out everywhere",
    ]
    assert audit.recent(engine, offset=6) == []
    with engine.begin() as conn:  # inside someone else's transaction: committed with it
        audit.record(conn, None, "issue edited")
        audit.record(conn, None, "issue tested", "to editor@example.org")
    assert audit.count(engine) == 8
    with pytest.raises(ValueError, match="needs an action"):
        audit.record(engine, None, " ")


# -- TOTP -------------------------------------------------------------------------------------


def wrong_code(secret: str) -> str:
    totp = pyotp.TOTP(secret)
    valid = {totp.at(time.time() + step * 30) for step in range(-2, 3)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)


def test_totp(engine: Engine) -> None:
    olive = add(engine, "olive@example.org")
    secret = users.new_totp_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret) and secret != users.new_totp_secret()
    uri = users.totp_uri(secret, olive.email, "Letterpress")
    assert uri.startswith("otpauth://totp/Letterpress:olive%40example.org?")
    assert f"secret={secret}" in uri and "issuer=Letterpress" in uri
    with pytest.raises(UserError, match="wrong code"):
        users.enable_totp(engine, olive.id, secret, wrong_code(secret))
    with pytest.raises(UserError, match="not a TOTP secret"):
        users.enable_totp(engine, olive.id, "not base32!", "123456")
    assert not users.get(engine, olive.id).totp
    assert users.authenticate(engine, olive.email, PASSWORD).totp is False  # no code yet

    totp = pyotp.TOTP(secret)
    enabling = totp.at(time.time() - 30)  # the last step's code
    users.enable_totp(engine, olive.id, secret, enabling)
    assert users.get(engine, olive.id).totp
    for missing in (None, "", "  "):
        with pytest.raises(TotpNeeded):
            users.authenticate(engine, olive.email, PASSWORD, missing)
    with pytest.raises(SignInRefused, match=r"^wrong code$"):
        users.authenticate(engine, olive.email, PASSWORD, wrong_code(secret))
    with pytest.raises(SignInRefused, match=r"^wrong code$"):
        users.authenticate(engine, olive.email, PASSWORD, "not a code")
    with pytest.raises(SignInRefused, match=r"^wrong address or password$"):
        users.authenticate(engine, olive.email, "the wrong password")  # no hint of a code
    with pytest.raises(SignInRefused, match=r"^wrong code$"):  # the code that turned it on
        users.authenticate(engine, olive.email, PASSWORD, enabling)
    code = totp.now()
    assert users.authenticate(engine, olive.email, PASSWORD, code).totp is True
    with pytest.raises(SignInRefused, match=r"^wrong code$"):  # once only (RFC 6238, 5.2)
        users.authenticate(engine, olive.email, PASSWORD, code)
    later = totp.at(time.time() + 30)
    assert users.authenticate(engine, olive.email, PASSWORD, f" {later[:3]} {later[3:]} ").totp
    entry = audit.recent(engine)[0]
    assert (entry.user_email, entry.action) == (olive.email, "two-factor sign-in enabled")

    # The second step, as the console takes it: the id the first step named, and a code
    # (another user: olive has used every code of the window).
    olive = add(engine, "pat@example.org")
    secret = users.new_totp_secret()
    users.enable_totp(engine, olive.id, secret, pyotp.TOTP(secret).at(time.time() - 30))
    with pytest.raises(TotpNeeded) as first:
        users.authenticate(engine, olive.email, PASSWORD)
    assert first.value.user_id == olive.id
    with pytest.raises(SignInRefused, match=r"^wrong code$"):
        users.second_factor(engine, olive.id, wrong_code(secret))
    with pytest.raises(TotpNeeded):
        users.second_factor(engine, olive.id, " ")
    assert users.second_factor(engine, olive.id, pyotp.TOTP(secret).now()).id == olive.id
    users.add(engine, "other-owner@example.org", Role.OWNER, PASSWORD)
    users.disable(engine, olive.id, by=None)  # between the two steps
    with pytest.raises(SignInRefused, match="start again"):
        users.second_factor(engine, olive.id, pyotp.TOTP(secret).now())


# -- the command line -------------------------------------------------------------------------


def cli(url: str, tmp_path: Path, *args: str, typed: str | None = None) -> Result:
    config = tmp_path / "empty.toml"
    config.write_text("")
    return CliRunner().invoke(
        main, ["--config", str(config), "users", *args], input=typed, env={"DATABASE_URL": url}
    )


def test_cli_adds_lists_and_changes_users(database_url: str, tmp_path: Path) -> None:
    engine = db.engine(database_url)
    result = cli(database_url, tmp_path, "list")
    assert result.stdout.startswith("no users yet")
    result = cli(
        database_url, tmp_path, "add", "Olive@example.org", "--role", "owner", "--name", "Olive",
        "--password-stdin", typed=PASSWORD + "\n",
    )  # fmt: skip
    assert (result.exit_code, result.stdout) == (0, "added olive@example.org as owner (id 1)\n")
    assert users.authenticate(engine, "olive@example.org", PASSWORD).name == "Olive"
    result = cli(
        database_url, tmp_path, "add", "ann@example.org", "--role", "author",
        typed="another long password\nanother long password\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "another long password" not in result.output  # the prompt hides it
    assert users.authenticate(engine, "ann@example.org", "another long password").role == "author"

    result = cli(
        database_url, tmp_path, "add", "bo@example.org", "--role", "viewer", "--password-stdin",
        typed="short\n",
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the password is too short: use at least 12")
    result = cli(
        database_url, tmp_path, "add", "ann@example.org", "--role", "viewer", "--password-stdin",
        typed=PASSWORD + "\n",
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (
        1,
        "error: a user with this address exists: ann@example.org\n",
    )
    assert cli(database_url, tmp_path, "add", "x@example.org", "--role", "admin").exit_code == 2

    result = cli(database_url, tmp_path, "set-role", "ANN@example.org", "editor")
    assert (result.exit_code, result.stdout) == (0, "ann@example.org: author → editor\n")
    result = cli(database_url, tmp_path, "set-role", "ann@example.org", "editor")
    assert result.stdout == "ann@example.org is editor already\n"
    result = cli(database_url, tmp_path, "set-role", "olive@example.org", "viewer")
    assert result.exit_code == 1 and "olive@example.org is the last owner" in result.stderr

    ann = users.by_email(engine, "ann@example.org")
    assert ann is not None
    sessions.start(engine, ann.id, IDLE, ABSOLUTE)
    token, _ = sessions.start(engine, ann.id, IDLE, ABSOLUTE)
    result = cli(database_url, tmp_path, "sign-out", "ann@example.org")
    assert (result.exit_code, result.stdout) == (
        0,
        "signed ann@example.org out: 2 sessions ended\n",
    )
    assert sessions.lookup(engine, token, IDLE) is None

    result = cli(database_url, tmp_path, "disable", "ann@example.org")
    assert result.exit_code == 0 and result.stdout.startswith("disabled ann@example.org")
    assert cli(database_url, tmp_path, "disable", "ann@example.org").stdout == (
        "ann@example.org is disabled already\n"
    )
    with pytest.raises(SignInRefused, match="disabled"):
        users.authenticate(engine, "ann@example.org", "another long password")
    result = cli(database_url, tmp_path, "list")
    assert result.stdout == (
        "ann@example.org    editor  (disabled)\nolive@example.org  owner   Olive\n"
    )
    for command in ("disable", "sign-out"):
        result = cli(database_url, tmp_path, command, "nobody@example.org")
        assert result.exit_code == 1
        assert result.stderr.startswith("error: no user with the address nobody@example.org")

    entries = audit.recent(engine)
    assert [e.action for e in entries] == [
        "user disabled", "signed out everywhere", "role changed", "user added", "user added"
    ]  # fmt: skip
    assert all(e.user_email is None and e.detail.startswith("command line: ") for e in entries)


def test_cli_needs_a_migrated_database(tmp_path: Path) -> None:
    result = cli(f"sqlite:///{tmp_path / 'new.db'}", tmp_path, "list")
    assert result.exit_code == 2 and "run `letterpress db upgrade`" in result.stderr
