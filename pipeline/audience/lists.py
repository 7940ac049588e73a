"""Lists: the named lists subscribers are on (``lists``; who is on which is
``memberships``). A list is created the first time something puts a subscriber on it.

A list name is not empty, at most 100 characters long and without ``;``, which
separates the names in a CSV file's ``lists`` column.
"""

from __future__ import annotations

import sqlalchemy as sa

from pipeline.errors import NotFound
from pipeline.store import db
from pipeline.store.db import lists

LIST_SEPARATOR = ";"
_LIST_NAME_MAX = lists.c.name.type.length  # type: ignore[attr-defined]


def check_list_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise ValueError("a list name is empty")
    if LIST_SEPARATOR in name:
        raise ValueError(f"list name {name!r} contains {LIST_SEPARATOR!r}")
    if len(name) > _LIST_NAME_MAX:
        raise ValueError(f"list name {name[:20]!r}… is longer than {_LIST_NAME_MAX} characters")
    return name


def ensure_list(conn: sa.Connection, name: str) -> int:
    """The id of the list called ``name``, created if needed (inside ``conn``'s transaction)."""
    name = check_list_name(name)
    conn.execute(
        db.insert(conn, lists).on_conflict_do_nothing(index_elements=["name"]),
        {"name": name, "created_at": db.now()},
    )
    return int(conn.execute(sa.select(lists.c.id).where(lists.c.name == name)).scalar_one())


def find_list(conn: sa.Connection, name: str) -> int:
    """The id of an existing list; NotFound (naming the lists there are) if there is none."""
    found = conn.execute(sa.select(lists.c.id).where(lists.c.name == name)).scalar()
    if found is None:
        names = conn.execute(sa.select(lists.c.name).order_by(lists.c.name)).scalars().all()
        raise NotFound(f"no list named {name!r} (lists: {', '.join(names) or 'none'})")
    return int(found)


def names(engine: sa.Engine) -> list[str]:
    """Every list's name, in order (the console's export offers them)."""
    with engine.connect() as conn:
        return list(conn.execute(sa.select(lists.c.name).order_by(lists.c.name)).scalars())
