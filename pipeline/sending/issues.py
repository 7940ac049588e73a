"""Newsletter issues: what editors create, schedule, pause and settle.

An issue moves through these states::

    draft ──schedule──> scheduled ──due (beat)──> sending ──last batch──> sent
                              ^                    │   ^
                              └─resume── paused <──┘   └─resume
                               (too late: held as paused for the editor)
    any state but sent ──cancel──> cancelled        provider refuses for good ──> failed

This module is the Python API that the CLI and the web console use. Every change is
one short transaction whose ``WHERE`` names the state it expects, so two beats, two
editors or a repeated command can never start a send twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.content.store import Catalog
from pipeline.errors import ConfigError, LetterpressError, NotFound
from pipeline.statuses import BatchStatus, DeliveryStatus, IssueStatus
from pipeline.store import db

# The states of an issue that has started sending (and so may have failed deliveries).
_RETRYABLE = (IssueStatus.SENT, IssueStatus.SENDING, IssueStatus.PAUSED, IssueStatus.FAILED)


class IssueStateError(LetterpressError):
    """The issue is not in a state that allows this (it says which and what to do)."""


@dataclass(frozen=True)
class ArticleRef:
    slug: str
    full: bool


@dataclass
class Progress:
    recipients: int = 0
    queued: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    batches: dict[str, int] = field(default_factory=dict)

    @property
    def ambiguous(self) -> int:
        return self.batches.get(BatchStatus.AMBIGUOUS, 0)

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped


@dataclass
class Issue:
    id: int
    subject: str
    preheader: str
    intro: str
    audience: list[str]
    articles: list[ArticleRef]
    status: str
    status_reason: str
    send_at: datetime | None
    time_zone: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    prepared_at: datetime | None
    finished_at: datetime | None
    progress: Progress

    @property
    def local_send_at(self) -> datetime | None:
        return None if self.send_at is None else self.send_at.astimezone(ZoneInfo(self.time_zone))

    def rate(self, at: datetime) -> float:
        """Recipients settled per second since the send started."""
        if self.started_at is None:
            return 0.0
        end = self.finished_at or at
        seconds = max((end - self.started_at).total_seconds(), 1e-3)
        return self.progress.done / seconds

    def seconds_left(self, at: datetime) -> float | None:
        rate = self.rate(at)
        left = self.progress.recipients - self.progress.done
        if self.status != IssueStatus.SENDING or rate <= 0 or left <= 0:
            return None
        return left / rate


def parse_articles(spec: str) -> list[ArticleRef]:
    """``slug,slug:teaser,slug:full`` → article references (the first is full by default)."""
    refs: list[ArticleRef] = []
    for index, item in enumerate(p.strip() for p in spec.split(",")):
        if not item:
            continue
        slug, _, mode = item.partition(":")
        if mode not in ("", "full", "teaser"):
            raise ConfigError(f"--articles: {item!r}: write slug, slug:full or slug:teaser")
        refs.append(ArticleRef(slug, mode == "full" or (mode == "" and index == 0)))
    if not refs:
        raise ConfigError("--articles: name at least one article slug")
    return refs


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Paris or UTC"
        ) from None


def create(
    engine: Engine,
    *,
    subject: str,
    articles: Sequence[ArticleRef],
    audience: Sequence[str] = (),
    preheader: str = "",
    intro: str = "",
    catalog: Catalog | None = None,
) -> int:
    """A new draft; returns its id. With a catalog, unknown or unpublished slugs fail."""
    if not subject.strip():
        raise ConfigError("an issue needs a subject (--subject)")
    if not articles:
        raise ConfigError("an issue needs at least one article (--articles)")
    slugs = [a.slug for a in articles]
    if len(set(slugs)) != len(slugs):
        raise ConfigError("--articles: an article is listed twice")
    if catalog is not None:
        for slug in slugs:
            article = catalog.articles.get(slug)
            if article is None:
                raise NotFound(f"no article with slug '{slug}' (letterpress check lists them)")
            if not article.is_published:
                raise ConfigError(f"article '{slug}' is not published: publish it first")
    at = db.now()
    with engine.begin() as conn:
        if audience:
            require_lists(conn, audience)
        issue_id = conn.execute(
            sa.insert(db.issues)
            .values(
                subject=subject.strip(),
                preheader=preheader,
                intro=intro,
                audience=list(audience),
                status=IssueStatus.DRAFT,
                created_at=at,
                updated_at=at,
            )
            .returning(db.issues.c.id)
        ).scalar_one()
        conn.execute(
            sa.insert(db.issue_articles),
            [
                {"issue_id": issue_id, "position": i, "slug": a.slug, "full": a.full}
                for i, a in enumerate(articles)
            ],
        )
    return int(issue_id)


def require_lists(conn: Connection, names: Sequence[str]) -> None:
    found = set(conn.scalars(sa.select(db.lists.c.name).where(db.lists.c.name.in_(names))))
    missing = [n for n in names if n not in found]
    if missing:
        raise NotFound(
            f"no subscriber list named {', '.join(repr(m) for m in missing)}"
            " (lists are made by `letterpress subscribers import --list NAME`)"
        )


def get(engine: Engine, issue_id: int) -> Issue:
    with engine.connect() as conn:
        return _load(conn, issue_id)


def _load(conn: Connection, issue_id: int) -> Issue:
    row = conn.execute(sa.select(db.issues).where(db.issues.c.id == issue_id)).mappings().first()
    if row is None:
        raise NotFound(f"no issue {issue_id} (`letterpress issue list` shows them)")
    refs = [
        ArticleRef(r.slug, r.full)
        for r in conn.execute(
            sa.select(db.issue_articles.c.slug, db.issue_articles.c.full)
            .where(db.issue_articles.c.issue_id == issue_id)
            .order_by(db.issue_articles.c.position)
        )
    ]
    return _issue(row, refs, _progress(conn, row))


def _progress(conn: Connection, row: Any) -> Progress:
    batches = {
        status: int(n)
        for status, n in conn.execute(
            sa.select(db.batches.c.status, sa.func.count())
            .where(db.batches.c.issue_id == row["id"])
            .group_by(db.batches.c.status)
        )
    }
    return _totals(row, batches)


def _totals(row: Any, batches: dict[str, int]) -> Progress:
    """The progress from the issue's running totals and its batches by status."""
    done = row["sent"] + row["failed"] + row["skipped"]
    return Progress(
        recipients=row["recipients"],
        queued=max(row["recipients"] - done, 0),
        sent=row["sent"],
        failed=row["failed"],
        skipped=row["skipped"],
        batches=batches,
    )


def _issue(row: Any, refs: list[ArticleRef], progress: Progress) -> Issue:
    return Issue(
        id=int(row["id"]),
        subject=row["subject"],
        preheader=row["preheader"],
        intro=row["intro"],
        audience=list(row["audience"]),
        articles=refs,
        status=row["status"],
        status_reason=row["status_reason"],
        send_at=row["send_at"],
        time_zone=row["time_zone"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        prepared_at=row["prepared_at"],
        finished_at=row["finished_at"],
        progress=progress,
    )


def list_issues(engine: Engine, statuses: Sequence[str] = ()) -> list[Issue]:
    """Every issue (or those in ``statuses``), newest first, each as ``get`` loads it.

    Three queries whatever the number of issues: the issues, their articles, and their
    batches counted by status (one query per issue would be hundreds per page)."""
    i, a, b = db.issues.c, db.issue_articles.c, db.batches.c
    query = sa.select(db.issues).order_by(i.id.desc())
    chosen = sa.select(i.id)
    if statuses:
        query = query.where(i.status.in_(statuses))
        chosen = chosen.where(i.status.in_(statuses))
    with engine.connect() as conn:
        rows = list(conn.execute(query).mappings())
        refs: dict[int, list[ArticleRef]] = {int(r["id"]): [] for r in rows}
        for issue_id, slug, full in conn.execute(
            sa.select(a.issue_id, a.slug, a.full)
            .where(a.issue_id.in_(chosen))
            .order_by(a.issue_id, a.position)
        ):
            refs.setdefault(int(issue_id), []).append(ArticleRef(slug, full))
        counts: dict[int, dict[str, int]] = {}
        for issue_id, status, n in conn.execute(
            sa.select(b.issue_id, b.status, sa.func.count())
            .where(b.issue_id.in_(chosen))
            .group_by(b.issue_id, b.status)
        ):
            counts.setdefault(int(issue_id), {})[status] = int(n)
    return [
        _issue(row, refs[int(row["id"])], _totals(row, counts.get(int(row["id"]), {})))
        for row in rows
    ]


def _transition(
    conn: Connection, issue_id: int, allowed: Sequence[str], action: str, **values: Any
) -> None:
    values.setdefault("updated_at", db.now())
    done = conn.execute(
        sa.update(db.issues)
        .where(db.issues.c.id == issue_id, db.issues.c.status.in_(allowed))
        .values(**values)
    ).rowcount
    if done != 1:
        current = conn.scalar(sa.select(db.issues.c.status).where(db.issues.c.id == issue_id))
        if current is None:
            raise NotFound(f"no issue {issue_id} (`letterpress issue list` shows them)")
        raise IssueStateError(
            f"issue {issue_id} is {current}: it can be {action} only when it is"
            f" {' or '.join(allowed)}"
        )


def event(conn: Connection, issue_id: int, level: str, message: str) -> None:
    conn.execute(
        sa.insert(db.issue_events).values(
            issue_id=issue_id, at=db.now(), level=level, message=message
        )
    )


def schedule(engine: Engine, issue_id: int, at: datetime | None, tz: str = "UTC") -> datetime:
    """Schedule for ``at`` (a naive time is read in ``tz``), or now when ``at`` is None."""
    zone_info = zone(tz)
    when = db.now() if at is None else at if at.tzinfo else at.replace(tzinfo=zone_info)
    with engine.begin() as conn:
        _transition(
            conn,
            issue_id,
            (IssueStatus.DRAFT,),
            "scheduled",
            status=IssueStatus.SCHEDULED,
            send_at=when,
            time_zone=tz,
            status_reason="",
        )
    return when


def pause(engine: Engine, issue_id: int, reason: str = "paused by the editor") -> None:
    with engine.begin() as conn:
        _transition(
            conn,
            issue_id,
            (IssueStatus.SCHEDULED, IssueStatus.SENDING),
            "paused",
            status=IssueStatus.PAUSED,
            status_reason=reason,
        )
        event(conn, issue_id, "info", reason)


def resume(engine: Engine, issue_id: int) -> list[int]:
    """Back to sending (or scheduled, if it never started). Returns batches to enqueue."""
    with engine.begin() as conn:
        started = conn.scalar(sa.select(db.issues.c.started_at).where(db.issues.c.id == issue_id))
        target = IssueStatus.SENDING if started is not None else IssueStatus.SCHEDULED
        values: dict[str, Any] = {"status": target, "status_reason": ""}
        if target == IssueStatus.SCHEDULED:
            values["send_at"] = db.now()  # a held issue goes out now, when resumed
        _transition(conn, issue_id, (IssueStatus.PAUSED,), "resumed", **values)
        event(conn, issue_id, "info", f"resumed ({target})")
        return _pending_batches(conn, issue_id)


def _pending_batches(conn: Connection, issue_id: int) -> list[int]:
    return [
        int(b)
        for b in conn.scalars(
            sa.select(db.batches.c.id)
            .where(db.batches.c.issue_id == issue_id, db.batches.c.status == BatchStatus.PENDING)
            .order_by(db.batches.c.seq)
        )
    ]


def cancel(engine: Engine, issue_id: int) -> None:
    with engine.begin() as conn:
        _transition(
            conn,
            issue_id,
            (IssueStatus.DRAFT, IssueStatus.SCHEDULED, IssueStatus.SENDING, IssueStatus.PAUSED),
            "cancelled",
            status=IssueStatus.CANCELLED,
            finished_at=db.now(),
        )
        conn.execute(
            sa.update(db.batches)
            .where(db.batches.c.issue_id == issue_id, db.batches.c.status == BatchStatus.PENDING)
            .values(status=BatchStatus.CANCELLED, updated_at=db.now())
        )
        event(conn, issue_id, "info", "cancelled by the editor")


def claim_due(engine: Engine, late_after: timedelta, at: datetime | None = None) -> list[int]:
    """Start every issue whose time has come; hold those found too late.

    Each claim is ``UPDATE … WHERE status = 'scheduled'``: of two beats (or two ticks)
    that find the same issue, exactly one changes the row, and only that one starts it.
    """
    at = at or db.now()
    claimed: list[int] = []
    with engine.connect() as conn:
        due = [
            (int(r.id), r.send_at)
            for r in conn.execute(
                sa.select(db.issues.c.id, db.issues.c.send_at).where(
                    db.issues.c.status == IssueStatus.SCHEDULED, db.issues.c.send_at <= at
                )
            )
        ]
        conn.rollback()
    for issue_id, send_at in due:
        late = at - send_at
        with engine.begin() as conn:
            if late > late_after:
                hours = late.total_seconds() / 3600
                reason = (
                    f"held: found {hours:.1f} h after its send time (late_after_hours is"
                    f" {late_after.total_seconds() / 3600:g}); resume to send it now, or cancel"
                )
                done = conn.execute(
                    sa.update(db.issues)
                    .where(db.issues.c.id == issue_id, db.issues.c.status == IssueStatus.SCHEDULED)
                    .values(status=IssueStatus.PAUSED, status_reason=reason, updated_at=at)
                ).rowcount
                if done:
                    event(conn, issue_id, "warning", reason)
                continue
            done = conn.execute(
                sa.update(db.issues)
                .where(db.issues.c.id == issue_id, db.issues.c.status == IssueStatus.SCHEDULED)
                .values(status=IssueStatus.SENDING, started_at=at, updated_at=at)
            ).rowcount
            if done:
                claimed.append(issue_id)
    return claimed


def retry_failed(engine: Engine, issue_id: int, batch_size: int) -> list[int]:
    """Send again to the recipients whose delivery failed; a paused issue resumes too.

    Returns the batches to enqueue: the new ones, and a paused issue's pending ones."""
    at = db.now()
    with engine.begin() as conn:
        issue = _load(conn, issue_id)
        if issue.status not in _RETRYABLE:
            raise IssueStateError(
                f"issue {issue_id} is {issue.status}: only an issue that has started sending"
                " has failed deliveries to retry"
            )
        failed = [
            int(s)
            for s in conn.scalars(
                sa.select(db.deliveries.c.subscriber_id)
                .where(
                    db.deliveries.c.issue_id == issue_id,
                    db.deliveries.c.status == DeliveryStatus.FAILED,
                )
                .order_by(db.deliveries.c.subscriber_id)
            )
        ]
        waiting = _pending_batches(conn, issue_id) if issue.status == IssueStatus.PAUSED else []
        if not failed:
            if issue.status == IssueStatus.PAUSED:
                _transition(
                    conn,
                    issue_id,
                    (IssueStatus.PAUSED,),
                    "resumed",
                    status=IssueStatus.SENDING,
                    status_reason="",
                )
            return waiting
        new = _rebatch(conn, issue_id, failed, batch_size, at)
        conn.execute(
            sa.update(db.issues)
            .where(db.issues.c.id == issue_id)
            .values(
                status=IssueStatus.SENDING,
                status_reason="",
                finished_at=None,
                updated_at=at,
                failed=db.issues.c.failed - len(failed),
            )
        )
        event(conn, issue_id, "info", f"retrying {len(failed)} failed deliveries")
    return waiting + new


def _rebatch(
    conn: Connection, issue_id: int, failed: list[int], batch_size: int, at: datetime
) -> list[int]:
    """New retry batches for the failed recipients, their log rows queued again in them."""
    seq = int(
        conn.scalar(
            sa.select(sa.func.coalesce(sa.func.max(db.batches.c.seq), 0)).where(
                db.batches.c.issue_id == issue_id
            )
        )
        or 0
    )
    new: list[int] = []
    for start in range(0, len(failed), batch_size):
        chunk = failed[start : start + batch_size]
        seq += 1
        batch_id = conn.execute(
            sa.insert(db.batches)
            .values(
                issue_id=issue_id,
                seq=seq,
                first_id=chunk[0],
                last_id=chunk[-1],
                retry=True,
                status=BatchStatus.PENDING,
                updated_at=at,
            )
            .returning(db.batches.c.id)
        ).scalar_one()
        conn.execute(
            sa.update(db.deliveries)
            .where(
                db.deliveries.c.issue_id == issue_id,
                db.deliveries.c.status == DeliveryStatus.FAILED,
                db.deliveries.c.subscriber_id.in_(chunk),
            )
            .values(status=DeliveryStatus.QUEUED, batch_id=batch_id, reason=None, updated_at=at)
        )
        new.append(int(batch_id))
    return new


def events(engine: Engine, issue_id: int | None = None, limit: int = 20) -> list[Any]:
    query = sa.select(db.issue_events).order_by(db.issue_events.c.id.desc()).limit(limit)
    if issue_id is not None:
        query = query.where(db.issue_events.c.issue_id == issue_id)
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())
