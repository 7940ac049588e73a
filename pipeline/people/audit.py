"""The audit log: who changed what in the console, and when.

People changes are recorded here by ``users`` and ``sessions``; the console records what
editors do to issues (created, edited, tested, scheduled, paused, cancelled) through
``record``. An entry made from the command line has no user, and its detail starts
with ``command line``. Entries are never edited or removed; a user who is deleted from the
database leaves their entries, without a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.store import db

COMMAND_LINE = "command line"

A = db.audit_log.c
U = db.users.c


@dataclass
class Entry:
    at: datetime
    user_email: str | None  # None: the command line, or a user since deleted
    action: str
    detail: str


def record(
    conn_or_engine: Connection | Engine, user_id: int | None, action: str, detail: str = ""
) -> None:
    """Add one entry: in the caller's transaction when given a connection, so the entry
    and the change it describes are committed together, or in one of its own."""
    action = action.strip()
    if not action:
        raise ValueError("an audit entry needs an action")
    row = {"at": db.now(), "user_id": user_id, "action": action[:60], "detail": detail}
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.begin() as conn:
            conn.execute(sa.insert(db.audit_log).values(row))
    else:
        conn_or_engine.execute(sa.insert(db.audit_log).values(row))


def via(by: int | None, detail: str) -> str:
    """The detail of a change by user ``by``; with no user, it came from the command line,
    and says so first (``command line: ann@example.org as editor``), as subscriber
    events do."""
    if by is not None:
        return detail
    return f"{COMMAND_LINE}: {detail}" if detail else COMMAND_LINE


def recent(engine: Engine, limit: int = 50, offset: int = 0) -> list[Entry]:
    """Entries newest first, with the email of whoever made each."""
    query = (
        sa.select(A.at, U.email, A.action, A.detail)
        .select_from(db.audit_log.outerjoin(db.users, A.user_id == U.id))
        .order_by(A.at.desc(), A.id.desc())
        .limit(max(0, limit))
        .offset(max(0, offset))
    )
    with engine.connect() as conn:
        return [Entry(r.at, r.email, r.action, r.detail) for r in conn.execute(query)]


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(db.audit_log)).scalar_one())
