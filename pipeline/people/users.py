"""The people who sign in to the editors' console.

Passwords are hashed with argon2id (argon2-cffi's ``PasswordHasher``, RFC 9106's
low-memory profile), at least ``MIN_PASSWORD`` characters long; when the hasher's
parameters change, a hash is renewed at its owner's next sign-in. Signing in says the
same for an unknown address as for a wrong password, and takes as long. A user may add a
TOTP authenticator (RFC 6238, 30-second codes); from then on they sign in with a code.

Users are disabled, not deleted: the audit log keeps naming them. There is always at
least one owner who is not disabled, so somebody can always manage users. Every change
here records an audit entry; ``by`` is the user who made it, ``None`` for the command
line.
"""

from __future__ import annotations

import base64
import functools
import hmac
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyotp
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Connection, Engine

from pipeline.audience.subscribers import normalise_email
from pipeline.errors import LetterpressError, NotFound
from pipeline.people import audit
from pipeline.statuses import Role
from pipeline.store import db

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # a passphrase, not a file: hashing stays cheap to ask for
MAX_NAME = 200
# argon2id with argon2-cffi's defaults (time cost 3, 64 MiB, 4 lanes). Replace it to
# change the parameters: each stored hash is renewed when its user next signs in.
HASHER = PasswordHasher()
# A code from the 30 seconds before or after counts too: phones' clocks drift.
TOTP_WINDOW = 1

WRONG_ADDRESS_OR_PASSWORD = "wrong address or password"

U = db.users.c
S = db.console_sessions.c


class UserError(LetterpressError):
    """A change to a user that cannot be made (the message says why and what to do)."""


class SignInRefused(UserError):
    """Wrong address or password, wrong code, or a disabled account."""


class TotpNeeded(UserError):
    """The password was right, and the user signs in with a code too: ask for it, then
    finish with ``second_factor(engine, user_id, code)``."""

    def __init__(self, message: str, user_id: int) -> None:
        super().__init__(message)
        self.user_id = user_id


@dataclass(frozen=True)
class User:
    id: int
    email: str
    name: str
    role: Role
    totp: bool  # signs in with a code from an authenticator app
    disabled: bool
    created_at: datetime


def from_row(row: Any) -> User:
    """The user in a row of ``users`` (or of a join that selects its columns)."""
    return User(
        id=row.id,
        email=row.email,
        name=row.name,
        role=Role(row.role),
        totp=row.totp_secret is not None,
        disabled=row.disabled_at is not None,
        created_at=row.created_at,
    )


def _row(conn: Connection, where: Any, *, lock: bool = False) -> Any:
    query = sa.select(db.users).where(where)
    return conn.execute(query.with_for_update() if lock else query).first()


def _locked(conn: Connection, user_id: int) -> Any:
    """The user's row, locked for this transaction (PostgreSQL; SQLite locks it all)."""
    row = _row(conn, U.id == user_id, lock=True)
    if row is None:
        raise NotFound(f"no user {user_id}")
    return row


# -- checking what people type --------------------------------------------------------------


def _address(email: str) -> str:
    try:
        return normalise_email(email)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise UserError(f"{str(role)!r} is not a role: choose one of {known}") from None


def _name(name: str) -> str:
    name = " ".join(name.split())
    if len(name) > MAX_NAME:
        raise UserError(f"the name is longer than {MAX_NAME} characters")
    return name


def _hash(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(
            f"the password is too short: use at least {MIN_PASSWORD} characters"
            " (a few words make a good one)"
        )
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password is longer than {MAX_PASSWORD} characters")
    return HASHER.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):  # VerifyMismatchError is the first
        return False


@functools.cache
def _dummy_hash() -> str:
    return HASHER.hash("nobody signs in with this password")


# -- reading --------------------------------------------------------------------------------


def get(engine: Engine, user_id: int) -> User:
    with engine.connect() as conn:
        row = _row(conn, U.id == user_id)
    if row is None:
        raise NotFound(f"no user {user_id}")
    return from_row(row)


def by_email(engine: Engine, email: str) -> User | None:
    """The user with this address (as typed: it is normalised), or None."""
    try:
        address = normalise_email(email)
    except ValueError:
        return None
    with engine.connect() as conn:
        row = _row(conn, U.email == address)
    return None if row is None else from_row(row)


def all_users(engine: Engine) -> list[User]:
    """Every user, disabled ones too, by address."""
    with engine.connect() as conn:
        return [from_row(r) for r in conn.execute(sa.select(db.users).order_by(U.email))]


# -- adding and signing in --------------------------------------------------------------------


def add(
    engine: Engine,
    email: str,
    role: Role | str,
    password: str,
    name: str = "",
    by: int | None = None,
) -> User:
    """A new user. UserError for a bad address, role, name or password, or an address
    that is a user already."""
    address = _address(email)
    checked = _role(role)
    name = _name(name)
    password_hash = _hash(password)  # before the transaction: it takes a moment
    at = db.now()
    exists = UserError(f"a user with this address exists: {address}")
    with engine.begin() as conn:
        if _row(conn, U.email == address) is not None:
            raise exists
        try:
            user_id = conn.execute(
                sa.insert(db.users)
                .values(
                    email=address,
                    name=name,
                    role=checked,
                    password_hash=password_hash,
                    created_at=at,
                    updated_at=at,
                )
                .returning(U.id)
            ).scalar_one()
        except sa.exc.IntegrityError:  # added by someone else this very moment
            raise exists from None
        audit.record(conn, by, "user added", audit.via(by, f"{address} as {checked}"))
    return get(engine, user_id)


def authenticate(engine: Engine, email: str, password: str, totp_code: str | None = None) -> User:
    """The user whose address and password these are. ``SignInRefused`` says only "wrong
    address or password" for either (an unknown address costs the same hashing time);
    with TOTP on, ``TotpNeeded`` without a code, ``SignInRefused("wrong code")`` for a
    wrong one. A disabled user is refused once their password is right."""
    try:
        address: str | None = normalise_email(email)
    except ValueError:
        address = None
    row = None
    if address is not None:
        with engine.connect() as conn:
            row = _row(conn, U.email == address)
    if row is None:
        _verify(_dummy_hash(), password)  # as long as a wrong password takes
        raise SignInRefused(WRONG_ADDRESS_OR_PASSWORD)
    if not _verify(row.password_hash, password):
        raise SignInRefused(WRONG_ADDRESS_OR_PASSWORD)
    if row.disabled_at is not None:
        raise SignInRefused("this account is disabled")
    if row.totp_secret is not None:
        code = "".join((totp_code or "").split())
        if not code:
            raise TotpNeeded("enter the 6-digit code from your authenticator app", row.id)
        if not _use_code(engine, row, code):
            raise SignInRefused("wrong code")
    if HASHER.check_needs_rehash(row.password_hash):
        renewed = HASHER.hash(password)
        with engine.begin() as conn:  # unless the password changed in the meantime
            conn.execute(
                sa.update(db.users)
                .where(U.id == row.id, U.password_hash == row.password_hash)
                .values(password_hash=renewed)
            )
    return from_row(row)


def confirm_password(engine: Engine, user_id: int, password: str) -> None:
    """The signed-in user's own password, asked again before a change that guards the
    account (turning on two-factor sign-in): a session alone, a stolen one say, is not
    enough. ``UserError`` when it is wrong."""
    with engine.connect() as conn:
        row = _row(conn, U.id == user_id)
    if row is None or not _verify(row.password_hash, password):
        raise UserError("wrong password: type the password you sign in with")


def second_factor(engine: Engine, user_id: int, code: str) -> User:
    """The second step of signing in, once ``authenticate`` answered ``TotpNeeded`` for
    this user: their code, checked again against the account as it is now (disabled in
    the meantime, or two-factor sign-in turned off, and the step is refused)."""
    with engine.connect() as conn:
        row = _row(conn, U.id == user_id)
    if row is None or row.disabled_at is not None or row.totp_secret is None:
        raise SignInRefused("the sign-in took too long: start again")
    code = "".join(code.split())
    if not code:
        raise TotpNeeded("enter the 6-digit code from your authenticator app", row.id)
    if not _use_code(engine, row, code):
        raise SignInRefused("wrong code")
    return from_row(row)


# -- changing ---------------------------------------------------------------------------------


def _owners(conn: Connection) -> set[int]:
    """The owners who can sign in, their rows locked in id order: two changes at once
    queue up behind each other instead of deadlocking, and the second sees the first."""
    query = (
        sa.select(U.id)
        .where(U.role == Role.OWNER, U.disabled_at.is_(None))
        .order_by(U.id)
        .with_for_update()
    )
    return set(conn.execute(query).scalars())


def _keep_an_owner(owners: set[int], row: Any, what: str) -> None:
    """Refuse to take away the last owner who can sign in (``row`` is being demoted or
    disabled), so that somebody can always manage users."""
    if row.id in owners and owners <= {row.id}:
        raise UserError(
            f"{row.email} is the last owner: make another user an owner before you {what}"
        )


def set_role(engine: Engine, user_id: int, role: Role | str, by: int | None) -> User:
    """Give the user another role (the same one changes nothing). The last owner keeps
    theirs."""
    new = _role(role)
    with engine.begin() as conn:
        owners = _owners(conn)
        row = _locked(conn, user_id)
        old = Role(row.role)
        if old != new:
            _keep_an_owner(owners, row, "change their role")
            conn.execute(
                sa.update(db.users).where(U.id == user_id).values(role=new, updated_at=db.now())
            )
            audit.record(conn, by, "role changed", audit.via(by, f"{row.email}: {old} → {new}"))
    return get(engine, user_id)


def disable(engine: Engine, user_id: int, by: int | None) -> None:
    """Stop the user signing in, and end their sessions now. Disabling a disabled user
    changes nothing; the last owner cannot be disabled."""
    with engine.begin() as conn:
        owners = _owners(conn)
        row = _locked(conn, user_id)
        if row.disabled_at is not None:
            return
        _keep_an_owner(owners, row, "disable them")
        at = db.now()
        conn.execute(
            sa.update(db.users).where(U.id == user_id).values(disabled_at=at, updated_at=at)
        )
        ended = conn.execute(sa.delete(db.console_sessions).where(S.user_id == user_id)).rowcount
        sessions = f"{ended} session{'' if ended == 1 else 's'} ended"
        audit.record(conn, by, "user disabled", audit.via(by, f"{row.email}; {sessions}"))


def set_password(engine: Engine, user_id: int, password: str, by: int | None) -> None:
    """A new password (at least ``MIN_PASSWORD`` characters). Every session of the user
    ends: whoever knew the old password is signed out with it."""
    password_hash = _hash(password)
    with engine.begin() as conn:
        row = _locked(conn, user_id)
        conn.execute(
            sa.update(db.users)
            .where(U.id == user_id)
            .values(password_hash=password_hash, updated_at=db.now())
        )
        ended = conn.execute(sa.delete(db.console_sessions).where(S.user_id == user_id)).rowcount
        detail = f"{row.email}; {ended} session{'' if ended == 1 else 's'} ended"
        audit.record(conn, by, "password changed", audit.via(by, detail))


# -- TOTP (RFC 6238) --------------------------------------------------------------------------


def new_totp_secret() -> str:
    """A random secret for an authenticator app: 32 base32 characters (160 bits)."""
    return pyotp.random_base32()


def totp_uri(secret: str, email: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (from a QR code, or typed)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def _secret_ok(secret: str) -> bool:
    if not re.fullmatch(r"[A-Z2-7]{16,64}", secret):  # at least 80 bits
        return False
    try:
        base64.b32decode(secret + "=" * (-len(secret) % 8))
    except ValueError:
        return False
    return True


def _code_step(secret: str, code: str) -> int | None:
    """The time step (RFC 6238) whose code this is, within TOTP_WINDOW steps of now."""
    code = "".join(code.split())
    if not re.fullmatch(r"[0-9]{6}", code) or not _secret_ok(secret):
        return None
    totp = pyotp.TOTP(secret)
    now = int(time.time()) // totp.interval
    for step in range(now - TOTP_WINDOW, now + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _use_code(engine: Engine, row: Any, code: str) -> bool:
    """Accept ``code`` for this user once: a code, or one of an earlier step, that was
    accepted before is refused (RFC 6238, section 5.2), even by another server process."""
    step = _code_step(row.totp_secret, code)
    if step is None:
        return False
    with engine.begin() as conn:
        taken = conn.execute(
            sa.update(db.users)
            .where(
                U.id == row.id,
                sa.or_(U.totp_last_step.is_(None), U.totp_last_step < step),
            )
            .values(totp_last_step=step)
        ).rowcount
    return bool(taken)


def enable_totp(engine: Engine, user_id: int, secret: str, code: str) -> None:
    """Make the user sign in with codes from ``secret`` from now on, once ``code`` shows
    their app has it (``new_totp_secret``, ``totp_uri``). UserError for a wrong code."""
    if not _secret_ok(secret):
        raise UserError("that is not a TOTP secret: start again with a new one")
    step = _code_step(secret, code)
    if step is None:
        raise UserError(
            "wrong code: type the code your app shows now (check that the phone's clock is right)"
        )
    with engine.begin() as conn:
        row = _locked(conn, user_id)
        conn.execute(  # the code that proved it is used: it cannot sign in as well
            sa.update(db.users)
            .where(U.id == user_id)
            .values(totp_secret=secret, totp_last_step=step, updated_at=db.now())
        )
        audit.record(conn, user_id, "two-factor sign-in enabled", row.email)
