"""From a started issue to its frozen email and its batches.

``prepare`` (when a send starts) renders the email once and freezes it in
``snapshots``, then cuts the audience into batches of subscriber-id ranges (rows in
``batches``). Nobody is copied: the audience is "members of the lists, active,
confirmed before the send started" (``audience_filter``), evaluated range by range when
each batch is sent, so a million recipients cost one pass over their ids.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.audience import tracking
from pipeline.content.store import Catalog
from pipeline.render.emails import EmailRenderer, RenderedEmail
from pipeline.sending import issues
from pipeline.sending.batches import VARIANT, WEB_VARIANT, finish_if_done
from pipeline.sending.issues import Issue
from pipeline.settings import Settings
from pipeline.statuses import BatchStatus, IssueStatus, SubscriberStatus
from pipeline.store import db


def audience_filter(
    conn: Connection,
    audience: Sequence[str],
    started_at: datetime,
    first: int | None = None,
    last: int | None = None,
) -> Any:
    """Who an issue is for: members of its lists (everyone if none) confirmed before it
    started, optionally within an id range. Their status now decides between sending
    and skipping.

    The range is repeated on the memberships, so each batch reads one slice of the
    (list, subscriber) key, whatever the planner knows of the table's size."""
    s, m = db.subscribers.c, db.memberships.c
    conditions = [s.confirmed_at.is_not(None), s.confirmed_at <= started_at]
    if first is not None and last is not None:
        conditions += [s.id >= first, s.id <= last]
    if audience:
        list_ids = list(
            conn.scalars(sa.select(db.lists.c.id).where(db.lists.c.name.in_(list(audience))))
        )
        member = sa.select(1).where(m.subscriber_id == s.id, m.list_id.in_(list_ids))
        if first is not None and last is not None:
            member = member.where(m.subscriber_id >= first, m.subscriber_id <= last)
        conditions.append(sa.exists(member))
    return sa.and_(*conditions)


def recipients_now(conn: Connection, audience: Sequence[str]) -> int:
    """How many subscribers an issue to ``audience`` would go to if it started now:
    active, confirmed members of the lists (everyone, with none); unknown names count no
    one. Read from ``memberships.recipient``, which the database's triggers keep equal
    to "active and confirmed" (migration 0005), so a list of a million members counts
    from one index rather than by looking up each member."""
    s, m = db.subscribers.c, db.memberships.c
    if not audience:
        everyone = sa.select(sa.func.count()).where(
            s.status == SubscriberStatus.ACTIVE, s.confirmed_at.is_not(None)
        )
        return int(conn.scalar(everyone) or 0)
    names = list(audience)
    list_ids = list(conn.scalars(sa.select(db.lists.c.id).where(db.lists.c.name.in_(names))))
    if not list_ids:
        return 0
    counted = sa.func.count() if len(list_ids) == 1 else sa.func.count(sa.distinct(m.subscriber_id))
    query = sa.select(counted).where(m.list_id.in_(list_ids), m.recipient == sa.true())
    return int(conn.scalar(query) or 0)


def view_url(settings: Settings, issue_id: int) -> str:
    return f"{settings.base_url}/issues/{issue_id}/"


def prepare(
    engine: Engine,
    settings: Settings,
    catalog: Catalog,
    issue_id: int,
    batch_size: int,
    scores: dict[str, float] | None = None,
) -> list[int]:
    """Freeze the email and the batches of a started issue; idempotent.

    Returns the ids of its pending batches (to enqueue). A broken article fails the
    issue with the reason, rather than sending something else.
    """
    issue = issues.get(engine, issue_id)
    if issue.status != IssueStatus.SENDING or issue.started_at is None:
        return []
    if issue.prepared_at is not None:
        with engine.connect() as conn:
            return issues._pending_batches(conn, issue_id)
    email = _render(engine, settings, catalog, issue, scores)
    at = db.now()
    with engine.begin() as conn:
        if conn.scalar(sa.select(db.issues.c.prepared_at).where(db.issues.c.id == issue_id)):
            return issues._pending_batches(conn, issue_id)  # prepared meanwhile
        _freeze(conn, settings, issue_id, email, at)
        where = audience_filter(conn, issue.audience, issue.started_at)
        total, batches = _cut(conn, issue_id, where, batch_size, at)
        conn.execute(
            sa.update(db.issues)
            .where(db.issues.c.id == issue_id)
            .values(prepared_at=at, recipients=total, updated_at=at)
        )
        issues.event(conn, issue_id, "info", f"started: {total} recipients in {batches} batches")
        if not batches:
            finish_if_done(conn, issue_id)
        return issues._pending_batches(conn, issue_id)


def _render(
    engine: Engine,
    settings: Settings,
    catalog: Catalog,
    issue: Issue,
    scores: dict[str, float] | None,
) -> RenderedEmail:
    """The issue's email, once; content that cannot render fails the issue (and raises)."""
    try:
        return EmailRenderer(settings).render(
            catalog,
            [a.slug for a in issue.articles],
            subject=issue.subject,
            preheader=issue.preheader or None,
            intro=issue.intro,
            campaign=f"issue-{issue.id}",
            scores=scores,
            full_articles=None,
            full_slugs=[a.slug for a in issue.articles if a.full],
            view_url=view_url(settings, issue.id),
        )
    except Exception as exc:  # the content is broken: say so on the issue, send nothing
        reason = f"could not render the email: {exc}"
        with engine.begin() as conn:
            issues._transition(
                conn,
                issue.id,
                (IssueStatus.SENDING,),
                "failed",
                status=IssueStatus.FAILED,
                status_reason=reason,
                finished_at=db.now(),
            )
            issues.event(conn, issue.id, "error", reason)
        raise


def _freeze(
    conn: Connection, settings: Settings, issue_id: int, email: RenderedEmail, at: datetime
) -> None:
    """The snapshots every batch sends (tracked links) and the web page shows."""
    tracked, links = tracking.track_links(_html_merge_fields(email.html), settings)
    snapshot = {
        "issue_id": issue_id,
        "subject": email.subject,
        "preheader": email.preheader,
        "text": email.text,
        "campaign": f"issue-{issue_id}",
        "created_at": at,
    }
    conn.execute(
        sa.insert(db.snapshots),
        [
            {**snapshot, "variant": VARIANT, "html": tracked},
            {
                **snapshot,
                "variant": WEB_VARIANT,
                "html": tracking.web_variant(email.html, settings),
            },
        ],
    )
    tracking.save_links(conn, issue_id, links)


def _cut(
    conn: Connection, issue_id: int, where: Any, batch_size: int, at: datetime
) -> tuple[int, int]:
    """Insert the batches of the audience ``where``; returns (recipients, batches)."""
    rows = []
    total = 0
    for seq, (first, last, count) in enumerate(_ranges(conn, where, batch_size), 1):
        rows.append(
            {
                "issue_id": issue_id,
                "seq": seq,
                "first_id": first,
                "last_id": last,
                "status": BatchStatus.PENDING,
                "updated_at": at,
            }
        )
        total += count
    if rows:
        conn.execute(sa.insert(db.batches), rows)
    return total, len(rows)


def _html_merge_fields(html: str) -> str:
    # In the HTML part a name must arrive escaped; the text part takes it as it is.
    return html.replace("%%name%%", "%%name_html%%")


def _ranges(conn: Connection, where: Any, size: int) -> Iterator[tuple[int, int, int]]:
    """(first id, last id, count) of consecutive runs of ``size`` audience members."""
    s = db.subscribers.c
    result = conn.execute(
        sa.select(s.id).where(where).order_by(s.id), execution_options={"yield_per": 20_000}
    )
    first = last = None
    count = 0
    for (sid,) in result:
        if first is None:
            first = sid
        last = sid
        count += 1
        if count == size:
            yield int(first), int(last), count
            first, count = None, 0
    if first is not None and last is not None:
        yield int(first), int(last), count
