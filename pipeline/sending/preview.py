"""An issue as its subscribers get it, for editors to look at before and after it goes."""

from __future__ import annotations

import sqlalchemy as sa

from pipeline.audience.tracking import untracked
from pipeline.render.emails import EmailRenderer, RenderedEmail
from pipeline.sending import issues
from pipeline.sending.batches import VARIANT
from pipeline.sending.parts import SendingParts
from pipeline.sending.prepare import view_url
from pipeline.store import db


def render_issue(rt: SendingParts, issue_id: int) -> RenderedEmail:
    """The frozen snapshot once sending started; before that, the articles as they are."""
    issue = issues.get(rt.engine, issue_id)
    with rt.engine.connect() as conn:
        snap = conn.execute(
            sa.select(db.snapshots).where(
                db.snapshots.c.issue_id == issue_id, db.snapshots.c.variant == VARIANT
            )
        ).first()
        html = untracked(conn, issue_id, snap.html) if snap is not None else ""
    if snap is not None:
        return RenderedEmail(
            snap.subject,
            snap.preheader,
            html,
            snap.text,
            tuple(a.slug for a in issue.articles),
            False,
        )
    return EmailRenderer(rt.settings).render(
        rt.catalog(),
        [a.slug for a in issue.articles],
        subject=issue.subject,
        preheader=issue.preheader or None,
        intro=issue.intro,
        campaign=f"issue-{issue_id}",
        scores=rt.scores(),
        full_slugs=[a.slug for a in issue.articles if a.full],
        view_url=view_url(rt.settings, issue_id),
    )
