"""Sign-in sessions of the editors' console.

``start`` hands back a random token for the cookie and stores only its SHA-256, so the
table alone signs nobody in. A session ends when it goes unused for ``idle``, at its
absolute expiry whatever happens, when its user signs out (``end``) or out everywhere
(``end_all``), and when the user is disabled. Each session has its own CSRF token for
the console's forms.

``lookup`` runs on every console request, so it writes ``seen_at`` at most once a
minute: the idle expiry is exact to that minute.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.people import audit, users
from pipeline.people.users import User, UserError
from pipeline.store import db

SEEN_EVERY = timedelta(minutes=1)
MAX_TOKEN = 200  # what ``start`` hands out is 43 characters; longer is not ours

S = db.console_sessions.c
U = db.users.c


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str  # the form token of this session
    expires_at: datetime  # the absolute expiry: no use of the session goes past it


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(
    engine: Engine,
    user_id: int,
    idle: timedelta,
    absolute: timedelta,
    now: datetime | None = None,
) -> tuple[str, Session]:
    """A new session for the user (who has just signed in): its token, for the cookie,
    and the session. The user's own sessions that have expired are cleared away."""
    if idle <= timedelta(0) or absolute <= timedelta(0):
        raise ValueError("a session needs a positive idle and absolute lifetime")
    user = users.get(engine, user_id)
    if user.disabled:
        raise UserError("this account is disabled")
    at = now or db.now()
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires_at = at + absolute
    with engine.begin() as conn:
        conn.execute(
            sa.delete(db.console_sessions).where(
                S.user_id == user_id, sa.or_(S.expires_at <= at, S.seen_at <= at - idle)
            )
        )
        conn.execute(
            sa.insert(db.console_sessions).values(
                token_hash=_digest(token),
                user_id=user_id,
                csrf=csrf,
                created_at=at,
                seen_at=at,
                expires_at=expires_at,
            )
        )
    return token, Session(user, csrf, expires_at)


def lookup(
    engine: Engine, token: str, idle: timedelta, now: datetime | None = None
) -> Session | None:
    """The session of this token, or None when there is none: unknown, unused for
    ``idle``, past its absolute expiry, or its user disabled (an expired session is
    deleted). Using a session keeps it from going idle."""
    if not token or len(token) > MAX_TOKEN:
        return None
    at = now or db.now()
    digest = _digest(token)
    query = (
        sa.select(db.users, S.csrf, S.seen_at, S.expires_at)
        .select_from(db.console_sessions.join(db.users, S.user_id == U.id))
        .where(S.token_hash == digest)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    if row.disabled_at is not None or at >= row.expires_at or at >= row.seen_at + idle:
        end(engine, token)
        return None
    if at - row.seen_at >= SEEN_EVERY:
        with engine.begin() as conn:
            conn.execute(
                sa.update(db.console_sessions)
                .where(S.token_hash == digest, S.seen_at < at)
                .values(seen_at=at)
            )
    return Session(users.from_row(row), row.csrf, row.expires_at)


def end(engine: Engine, token: str) -> None:
    """Sign this session out (an unknown token changes nothing)."""
    with engine.begin() as conn:
        conn.execute(sa.delete(db.console_sessions).where(S.token_hash == _digest(token)))


def end_others(engine: Engine, user_id: int, keep: str) -> int:
    """End every session of the user but the one whose token is ``keep`` (after a change
    that a stolen session must not outlive, such as turning on two-factor sign-in)."""
    with engine.begin() as conn:
        ended = conn.execute(
            sa.delete(db.console_sessions).where(
                S.user_id == user_id, S.token_hash != _digest(keep)
            )
        ).rowcount
    return int(ended)


def end_all(engine: Engine, user_id: int, by: int | None) -> int:
    """Sign the user out everywhere; how many sessions that ended."""
    user = users.get(engine, user_id)
    with engine.begin() as conn:
        ended = conn.execute(sa.delete(db.console_sessions).where(S.user_id == user_id)).rowcount
        sessions = f"{ended} session{'' if ended == 1 else 's'} ended"
        audit.record(conn, by, "signed out everywhere", audit.via(by, f"{user.email}; {sessions}"))
    return int(ended)
