"""Composing issues (``Action.COMPOSE``), and the list of issues (``Action.READ``).

``/admin/issues/new`` and ``/admin/issues/{id}/edit`` are one form: subject, preheader,
intro, the articles in order (each full or a teaser; moved up and down, added and
removed by the form's own buttons, which work without scripts: the page comes back
with the change, unsaved), and the audience lists. Saving is ``pipeline.sending.drafts``
(which records "issue created" or "issue edited" in the audit log); an issue that is
no longer a draft is not edited (409).

Beside the form, the preview (``pipeline.render.proof``) of what is typed, unsaved:
with htmx it is posted to ``/admin/compose/preview`` half a second after each change
and that block alone comes back. The email is shown at 600 and 375 px in sandboxed
frames that load it from ``/admin/compose/proofs/{token}``, with a policy of its own
(no scripts, inline styles, images). The recipient count of the lists ticked is
``/admin/compose/recipients``. The page, its blocks and both fragments are the one
template ``compose.html`` (``Vary: HX-Request``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.content.store import Catalog, FileContentStore
from pipeline.errors import ConfigError, NotFound
from pipeline.people.roles import Action, can
from pipeline.people.sessions import Session
from pipeline.render import hot
from pipeline.render.proof import Proof, proof
from pipeline.sending import drafts, issues
from pipeline.sending.drafts import Draft
from pipeline.sending.issues import ArticleRef, IssueStateError
from pipeline.sending.prepare import view_url
from pipeline.statuses import IssueStatus
from pipeline.web.console import views
from pipeline.web.console.auth import Refused, Svc, require
from pipeline.web.service import Service

router = APIRouter()
Reader = Annotated[Session, Depends(require(Action.READ))]
Composer = Annotated[Session, Depends(require(Action.COMPOSE))]
MAX_ID = 2**63 - 1
IssueId = Annotated[int, Path(ge=1, le=MAX_ID)]

# The page's own policy: the console's, and frames from this origin (the proofs).
COMPOSE_CSP = views.CONSOLE_CSP + "; frame-src 'self'"
# A proof's: no scripts, no requests but images, and only inside the console's frames.
PROOF_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src http: https: data:;"
    " form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox"
)

Line = Annotated[str, Form(max_length=drafts.MAX_LINE + 100)]
Many = Annotated[list[str], Form()]


def _catalog(svc: Service, session: Session) -> Catalog:
    try:
        return FileContentStore(svc.settings.content_dir, svc.settings).catalog()
    except NotFound as exc:
        raise Refused(503, "The articles cannot be read", f"{exc}.", session) from None


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _draft(
    subject: Line = "",
    preheader: Line = "",
    intro: Annotated[str, Form(max_length=drafts.MAX_INTRO + 100)] = "",
    article: Many = [],  # noqa: B006 (FastAPI copies the default)
    mode: Many = [],  # noqa: B006
    audience: Many = [],  # noqa: B006
) -> Draft:
    """The draft the compose form holds (a dependency of every route that posts it)."""
    refs = []
    for n, slug in enumerate(article[: drafts.MAX_ARTICLES]):
        kind = mode[n] if n < len(mode) else "teaser"
        refs.append(ArticleRef(slug, kind == "full"))
    return Draft(subject, preheader, intro, refs, [a for a in audience if a][:100])


DraftForm = Annotated[Draft, Depends(_draft)]


def _apply(draft: Draft, do: str, add: str) -> None:
    """A button of the form that changes the draft without saving it."""
    refs = draft.articles
    verb, _, index = do.partition("-")
    if verb == "add" and add and add not in {r.slug for r in refs}:
        refs.append(ArticleRef(add, not refs))  # the first is full, as on the command line
        return
    if not index.isdigit() or int(index) >= len(refs):
        return
    n = int(index)
    if verb == "up" and n > 0:
        refs[n - 1], refs[n] = refs[n], refs[n - 1]
    elif verb == "down" and n + 1 < len(refs):
        refs[n], refs[n + 1] = refs[n + 1], refs[n]
    elif verb == "remove":
        del refs[n]


def _proof(svc: Service, catalog: Catalog, draft: Draft, issue_id: int | None) -> Proof:
    slugs = [r.slug for r in draft.articles if r.slug in catalog.articles]
    return proof(
        svc.settings,
        catalog,
        slugs,
        [r.slug for r in draft.articles if r.full],
        subject=draft.subject,
        preheader=draft.preheader,
        intro=draft.intro,
        scores=hot.current_scores(svc.engagement),
        view_url=view_url(svc.settings, issue_id) if issue_id else None,
    )


def _preview_context(
    svc: Service, session: Session, catalog: Catalog, draft: Draft, issue_id: int | None
) -> dict[str, Any]:
    shown = _proof(svc, catalog, draft, issue_id)
    token = svc.proofs.put(session.user.id, shown.html) if shown.html else ""
    return {"proof": shown, "token": token}


COUNTS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="console-count")


def _compose(
    svc: Service,
    request: Request,
    session: Session,
    catalog: Catalog,
    draft: Draft,
    issue_id: int | None,
    status: int = 200,
    error: str = "",
    message: str = "",
) -> HTMLResponse:
    picked = {r.slug for r in draft.articles}
    # The count reads an index of up to a million entries: it runs while the preview
    # renders (the database, or SQLite's C code, does not hold the interpreter).
    counting = COUNTS.submit(drafts.recipients, svc.engine, draft.audience)
    preview = _preview_context(svc, session, catalog, draft, issue_id)
    response = views.page(
        svc,
        request,
        "compose.html",
        session,
        status,
        vary=True,
        draft=draft,
        issue_id=issue_id,
        action=f"/admin/issues/{issue_id}/edit" if issue_id else "/admin/issues/new",
        catalog=catalog,
        addable=[a for a in catalog.published() if a.slug not in picked],
        lists=sorted({*drafts.audience_lists(svc.engine), *draft.audience}),
        recipients=counting.result(),
        error=error,
        message=message,
        **preview,
    )
    response.headers["content-security-policy"] = COMPOSE_CSP
    return response


def _draft_issue(svc: Service, issue_id: int, session: Session) -> issues.Issue:
    try:
        issue = issues.get(svc.engine, issue_id)
    except NotFound:
        raise Refused(404, "No such issue", f"There is no issue {issue_id}.", session) from None
    if issue.status != IssueStatus.DRAFT:
        raise _not_a_draft(issue_id, str(issue.status), session)
    return issue


def _not_a_draft(issue_id: int, status: str, session: Session) -> Refused:
    return Refused(
        409,
        f"Issue {issue_id} is not a draft",
        f"It is {status}, and only a draft can be edited. Nothing was changed.",
        session,
        link=f"/admin/issues/{issue_id}",
    )


# -- the list of issues ------------------------------------------------------------------------


@router.get("/issues", response_class=HTMLResponse)
def issues_page(svc: Svc, request: Request, session: Reader) -> Response:
    return views.page(
        svc,
        request,
        "issues.html",
        session,
        issues=issues.list_issues(svc.engine),
        may_compose=can(session.user.role, Action.COMPOSE),
        draft=IssueStatus.DRAFT,
    )


# -- composing -------------------------------------------------------------------------------


@router.get("/issues/new", response_class=HTMLResponse)
def new_issue(svc: Svc, request: Request, session: Composer) -> Response:
    return _compose(svc, request, session, _catalog(svc, session), Draft(), None)


@router.get("/issues/{issue_id}/edit", response_class=HTMLResponse)
def edit_issue(
    svc: Svc,
    request: Request,
    session: Composer,
    issue_id: IssueId,
    saved: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    issue = _draft_issue(svc, issue_id, session)
    message = f"Saved draft issue {issue_id}." if saved else ""
    catalog = _catalog(svc, session)
    return _compose(svc, request, session, catalog, Draft.of(issue), issue_id, message=message)


def _submitted(
    svc: Service,
    request: Request,
    session: Session,
    issue_id: int | None,
    draft: Draft,
    do: str,
    add: str,
) -> Response:
    catalog = _catalog(svc, session)
    if do != "save":  # a change to the form, or a preview: the page again, unsaved
        _apply(draft, do, add)
        return _compose(svc, request, session, catalog, draft, issue_id)
    try:
        if issue_id is None:
            issue_id = drafts.create(svc.engine, draft, catalog, session.user.id)
        else:
            drafts.save(svc.engine, issue_id, draft, catalog, session.user.id)
    except IssueStateError:
        assert issue_id is not None
        raise _not_a_draft(issue_id, issues.get(svc.engine, issue_id).status, session) from None
    except (ConfigError, NotFound) as exc:
        error = _sentence(str(exc))
        return _compose(svc, request, session, catalog, draft, issue_id, 400, error=error)
    return views.see_other(f"/admin/issues/{issue_id}/edit?saved=1")


@router.post("/issues/new", response_class=HTMLResponse)
def create_issue(
    svc: Svc,
    request: Request,
    session: Composer,
    draft: DraftForm,
    do: Annotated[str, Form(max_length=40)] = "save",
    add: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    return _submitted(svc, request, session, None, draft, do, add)


@router.post("/issues/{issue_id}/edit", response_class=HTMLResponse)
def save_issue(
    svc: Svc,
    request: Request,
    session: Composer,
    issue_id: IssueId,
    draft: DraftForm,
    do: Annotated[str, Form(max_length=40)] = "save",
    add: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    _draft_issue(svc, issue_id, session)
    return _submitted(svc, request, session, issue_id, draft, do, add)


# -- the fragments ---------------------------------------------------------------------------


@router.post("/compose/preview", response_class=HTMLResponse)
def preview(
    svc: Svc,
    request: Request,
    session: Composer,
    draft: DraftForm,
    issue: Annotated[int, Form(ge=0, le=MAX_ID)] = 0,
) -> Response:
    """The preview block of what the form holds now; nothing is saved."""
    catalog = _catalog(svc, session)
    context = _preview_context(svc, session, catalog, draft, issue or None)
    return views.fragment(svc, request, "compose.html", ["preview"], session, **context)


@router.get("/compose/recipients", response_class=HTMLResponse)
def recipients(
    svc: Svc,
    request: Request,
    session: Composer,
    audience: Annotated[list[str], Query(max_length=100)] = [],  # noqa: B006
) -> Response:
    count = drafts.recipients(svc.engine, [a for a in audience if a][:100])
    return views.fragment(svc, request, "compose.html", ["recipients"], session, recipients=count)


@router.get("/compose/proofs/{token}")
def proof_html(
    svc: Svc,
    session: Composer,
    token: Annotated[str, Path(min_length=10, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
) -> Response:
    html = svc.proofs.get(session.user.id, token)
    if html is None:
        html = "<!doctype html><p>This preview has expired: change the draft to see it again.</p>"
    return HTMLResponse(
        html,
        headers={
            "content-security-policy": PROOF_CSP,
            "cache-control": "no-store",
            "referrer-policy": "no-referrer",
            "x-frame-options": "SAMEORIGIN",
        },
    )
