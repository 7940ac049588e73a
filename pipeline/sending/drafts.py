"""Draft issues as the console composes them: a ``Draft`` (subject, preheader, intro, the
articles in order, each full or a teaser, the audience lists) checked, created or
saved over a draft, with its audit entry in the same transaction; who it would go to
now (``recipients``); and the lists there are to choose from (``audience_lists``).

A draft is edited only while it is a draft: ``save`` names the state in its ``WHERE``,
so an issue scheduled meanwhile is never changed (``IssueStateError``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.audience import changes
from pipeline.content.store import Catalog
from pipeline.errors import ConfigError, NotFound
from pipeline.people import audit
from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef, IssueStateError
from pipeline.sending.prepare import recipients_now
from pipeline.statuses import IssueStatus
from pipeline.store import db

MAX_LINE = 300  # the subject and preheader columns
MAX_INTRO = 20_000
MAX_ARTICLES = 30
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class Draft:
    """What an editor composes: not yet checked (``checked`` says what is wrong)."""

    subject: str = ""
    preheader: str = ""
    intro: str = ""
    articles: list[ArticleRef] = field(default_factory=list)
    audience: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, issue: issues.Issue) -> Draft:
        return cls(
            issue.subject, issue.preheader, issue.intro, list(issue.articles), list(issue.audience)
        )


def _line(value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise ConfigError(f"the {what} is one line, without control characters")
    if len(value) > MAX_LINE:
        raise ConfigError(f"the {what} is longer than {MAX_LINE} characters")
    return value.strip()


def checked(draft: Draft, catalog: Catalog) -> Draft:
    """The draft as it would be saved, or a ConfigError (NotFound for an unknown article
    or list) that says what to change."""
    subject = _line(draft.subject, "subject")
    if not subject:
        raise ConfigError("an issue needs a subject")
    preheader = _line(draft.preheader, "preheader")
    if _CONTROL_BUT_LINES.search(draft.intro):
        raise ConfigError("the intro contains control characters")
    if len(draft.intro) > MAX_INTRO:
        raise ConfigError(f"the intro is longer than {MAX_INTRO} characters")
    if not draft.articles:
        raise ConfigError("an issue needs at least one article")
    if len(draft.articles) > MAX_ARTICLES:
        raise ConfigError(f"an issue has at most {MAX_ARTICLES} articles")
    slugs = [a.slug for a in draft.articles]
    if len(set(slugs)) != len(slugs):
        raise ConfigError("an article is picked twice")
    for slug in slugs:
        article = catalog.articles.get(slug)
        if article is None:
            raise NotFound(f"there is no article '{slug}'")
        if not article.is_published:
            raise ConfigError(f"the article '{slug}' is not published: publish it first")
    try:
        audience = changes.list_names(draft.audience)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return Draft(subject, preheader, draft.intro, list(draft.articles), audience)


def _detail(issue_id: int, draft: Draft) -> str:
    picked = ", ".join(f"{a.slug}{'' if a.full else ' (teaser)'}" for a in draft.articles)
    lists = ", ".join(draft.audience) or "everyone"
    return f"issue {issue_id} {draft.subject!r}: {picked}; to {lists}"


def create(engine: Engine, draft: Draft, catalog: Catalog, by: int | None) -> int:
    """A new draft issue from ``draft``; returns its id, and records "issue created"."""
    good = checked(draft, catalog)
    issue_id = issues.create(
        engine,
        subject=good.subject,
        articles=good.articles,
        audience=good.audience,
        preheader=good.preheader,
        intro=good.intro,
        catalog=catalog,
    )
    audit.record(engine, by, "issue created", audit.via(by, _detail(issue_id, good)))
    return issue_id


def save(engine: Engine, issue_id: int, draft: Draft, catalog: Catalog, by: int | None) -> None:
    """Save ``draft`` over draft issue ``issue_id`` and record "issue edited";
    IssueStateError if it is no longer a draft, NotFound if there is none."""
    good = checked(draft, catalog)
    with engine.begin() as conn:
        if good.audience:
            issues.require_lists(conn, good.audience)
        done = conn.execute(
            sa.update(db.issues)
            .where(db.issues.c.id == issue_id, db.issues.c.status == IssueStatus.DRAFT)
            .values(
                subject=good.subject,
                preheader=good.preheader,
                intro=good.intro,
                audience=list(good.audience),
                updated_at=db.now(),
            )
        ).rowcount
        if done != 1:
            current = conn.scalar(sa.select(db.issues.c.status).where(db.issues.c.id == issue_id))
            if current is None:
                raise NotFound(f"no issue {issue_id}")
            raise IssueStateError(
                f"issue {issue_id} is {current}: only a draft can be edited"
                " (cancel it and compose a new one to change what it sends)"
            )
        conn.execute(sa.delete(db.issue_articles).where(db.issue_articles.c.issue_id == issue_id))
        conn.execute(
            sa.insert(db.issue_articles),
            [
                {"issue_id": issue_id, "position": i, "slug": a.slug, "full": a.full}
                for i, a in enumerate(good.articles)
            ],
        )
        audit.record(conn, by, "issue edited", audit.via(by, _detail(issue_id, good)))


def recipients(engine: Engine, audience: Sequence[str]) -> int:
    """How many subscribers an issue to ``audience`` would go to if it started now
    (``prepare.recipients_now``)."""
    with engine.connect() as conn:
        return recipients_now(conn, audience)


def audience_lists(engine: Engine) -> list[str]:
    """The names of every subscriber list, in order."""
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(db.lists.c.name).order_by(db.lists.c.name)))
