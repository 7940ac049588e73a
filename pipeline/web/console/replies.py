"""Moderating readers' replies (``Action.MODERATE``: editors and owners).

``/admin/replies`` lists the replies of one state (waiting first, oldest first), each
with its article and the reply it answers; ticked ones are approved, rejected, marked
as spam, or have their address or IP range banned, at once. Below: the articles that
take replies, each with its counts and a switch to close or open them, and the bans.
Every form is a POST with the session's CSRF token; the role is checked here, on the
server, for every one.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.people.roles import Action
from pipeline.people.sessions import Session
from pipeline.render.policy import article_url
from pipeline.replies import moderation
from pipeline.replies.text import to_html
from pipeline.statuses import ReplyStatus
from pipeline.web.console import views
from pipeline.web.console.auth import Svc, require
from pipeline.web.replies import send_notices
from pipeline.web.service import Service

log = logging.getLogger(__name__)
router = APIRouter()
Moderator = Annotated[Session, Depends(require(Action.MODERATE))]
PAGE = "/admin/replies"
MAX_PAGE = 10**6
ACTIONS = ("approve", "reject", "spam", "ban-address", "ban-range", "erase")
DONE = {
    "approve": "approved",
    "reject": "rejected",
    "spam": "marked as spam",
    "ban-address": "banned by address",
    "ban-range": "banned by IP range",
    "erase": "of the ticked replies' writers erased",
}


def _by(session: Session) -> str:
    return session.user.email


@router.get("/replies", response_class=HTMLResponse)
def replies_page(
    svc: Svc,
    request: Request,
    session: Moderator,
    status: Annotated[ReplyStatus, Query()] = ReplyStatus.PENDING,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    done: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    return _page(svc, request, session, status, page, done)


def _page(
    svc: Service,
    request: Request,
    session: Session,
    status: ReplyStatus,
    page: int = 1,
    done: str = "",
    error: str = "",
    code: int = 200,
) -> Response:
    offset = (page - 1) * moderation.PAGE
    held, total = moderation.queue(svc.engine, status, offset)
    counts = moderation.counts(svc.engine)
    closed = moderation.closed_slugs(svc.engine)
    articles = [
        {
            "slug": slug,
            "title": info.title,
            "url": article_url(svc.settings, slug),
            "approved": counts.get(slug, {}).get("approved", 0),
            "pending": counts.get(slug, {}).get("pending", 0),
            "closed": slug in closed,
        }
        for slug, info in sorted(svc.articles().items(), key=lambda kv: kv[1].title)
        if info.replies
    ]
    context: dict[str, Any] = {
        "state": status,
        "statuses": list(ReplyStatus),
        "counts": moderation.status_counts(svc.engine),
        "held": held,
        "html": to_html,
        "url": lambda slug: article_url(svc.settings, slug),
        "page": page,
        "pages": max(1, math.ceil(total / moderation.PAGE)),
        "total": total,
        "articles": articles,
        "bans": moderation.bans(svc.engine),
        "done": done,
        "error": error,
        "reply_erasure": svc.settings.reply_erasure,
    }
    return views.page(svc, request, "replies.html", session, code, **context)


@router.post("/replies/decide", response_class=HTMLResponse)
def decide(
    svc: Svc,
    request: Request,
    session: Moderator,
    tasks: BackgroundTasks,
    action: Annotated[str, Form(max_length=20)],
    ids: Annotated[list[int] | None, Form(max_length=moderation.PAGE)] = None,
    status: Annotated[ReplyStatus, Form()] = ReplyStatus.PENDING,
    confirmed: Annotated[str, Form(max_length=1)] = "",
) -> Response:
    chosen = ids or []
    if action not in ACTIONS:
        return _page(svc, request, session, status, error=f"{action!r} is not an action.", code=400)
    if not chosen:
        return _page(svc, request, session, status, error="Tick the replies first.", code=400)
    by = _by(session)
    if action == "erase" and not confirmed:  # it cannot be undone: say what goes first
        return views.page(
            svc,
            request,
            "reply_erase.html",
            session,
            writers=moderation.writers(svc.engine, chosen),
            ids=sorted(set(chosen)),
            state=status,
            reply_erasure=svc.settings.reply_erasure,
        )
    if action == "erase":
        count = moderation.erase_writers(svc.engine, svc.settings, chosen, session.user.id)
        for key in [k for k in svc.kept if k.startswith("replies:")]:
            svc.kept.pop(key, None)  # the writers' replies may be on any article
    elif action.startswith("ban-"):
        kind: Literal["address", "range"] = "address" if action == "ban-address" else "range"
        moderation.ban(svc.engine, chosen, kind, by, session.user.id)
        count = len(chosen)
    else:
        decision: moderation.Decision = action  # type: ignore[assignment]
        decided = moderation.decide(svc.engine, chosen, decision, by, session.user.id)
        count = len(decided.changed)
        for slug in set(decided.slugs):
            svc.kept.pop(f"replies:{slug}", None)
        if decided.approved:
            _rank(svc, decided)
            tasks.add_task(send_notices, svc, decided.approved)
    noun = "reply" if count == 1 else "replies"
    return views.see_other(f"{PAGE}?status={status.value}&done={count}+{noun}+{DONE[action]}")


def _rank(svc: Service, decided: moderation.Decided) -> None:
    if svc.engagement is None:
        return
    try:
        svc.engagement.record_replies(decided.slugs)
    except Exception as exc:  # redis.RedisError and OSError alike: the ranking is a cache
        log.warning("could not rank replies in Redis: %s", exc)


@router.post("/replies/articles/{slug}", response_class=HTMLResponse)
def close(
    svc: Svc,
    request: Request,
    session: Moderator,
    slug: Annotated[str, Path(max_length=120)],
    closed: Annotated[Literal["0", "1"], Form()],
) -> Response:
    info = svc.articles().get(slug)
    if info is None or not info.replies:
        return _page(svc, request, session, ReplyStatus.PENDING, error="No such article.", code=404)
    moderation.set_closed(svc.engine, slug, closed == "1", _by(session), session.user.id)
    svc.kept.pop(f"replies:{slug}", None)
    what = "closed" if closed == "1" else "opened"
    return views.see_other(f"{PAGE}?done=Replies+to+{slug}+{what}#articles")


@router.post("/replies/bans/{ban_id}/delete", response_class=HTMLResponse)
def unban(
    svc: Svc,
    request: Request,
    session: Moderator,
    ban_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
) -> Response:
    gone = moderation.unban(svc.engine, ban_id, session.user.id)
    return views.see_other(f"{PAGE}?done={'Ban+lifted' if gone else 'No+such+ban'}#bans")
