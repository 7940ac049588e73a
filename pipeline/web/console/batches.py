"""A send's machinery, ``/admin/issues/{id}/batches`` (``Action.WATCH``): the issue's
batches, fifty a page by keyset on their sequence number, of one status or all, each
with its recipients, who holds its lease and until when, its attempts, the provider's
message id and its error. While the issue sends, the table is a fragment that htmx asks
for every 2 seconds.

What a batch's state allows (``machinery.Batch.actions``) is offered beside it, each
through a confirmation page that says what will happen to whom (``Action.RECONCILE``):
re-queue a batch that failed or whose worker's lease ran out, reconcile a batch in doubt
with the provider's records, settle an ambiguous one by the operator's choice. Only the
confirmation's POST changes anything; it calls the same ``recover`` function as
``letterpress issue requeue-batch``, ``reconcile --batch`` and ``settle-batch``, hands
what is to send to the queue (``pipeline.web.admin.queue``) and writes the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from pipeline.errors import NotFound
from pipeline.people import audit
from pipeline.people.roles import Action, can, why_not
from pipeline.people.sessions import Session
from pipeline.sending import issues, machinery, recover
from pipeline.sending.issues import Issue, IssueStateError
from pipeline.sending.machinery import RECONCILE, REQUEUE, SETTLE, Batch
from pipeline.statuses import BatchStatus, DeliveryStatus, IssueStatus
from pipeline.web.admin import queue
from pipeline.web.console import views
from pipeline.web.console.auth import Refused, Svc, require
from pipeline.web.service import Service

router = APIRouter()
Watcher = Annotated[Session, Depends(require(Action.WATCH))]
Reconciler = Annotated[Session, Depends(require(Action.RECONCILE))]
MAX_ID = 2**63 - 1
IssueId = Annotated[int, Path(ge=1, le=MAX_ID)]
BatchId = Annotated[int, Path(ge=1, le=MAX_ID)]
WATCHED = (IssueStatus.SCHEDULED, IssueStatus.SENDING)  # the table polls itself
CHOICES = {
    "sent": (
        "Count them as sent",
        "are marked sent and are not sent it again. Some may never get it; nobody gets it twice.",
    ),
    "unsent": (
        "Send them again",
        "are sent it again by the next free worker. Nobody misses it; some may get it twice.",
    ),
}


@dataclass(frozen=True)
class Act:
    """An operator's action on a batch: its button and the audit entry it leaves."""

    name: str
    button: str
    done: str  # "it cannot be {done} now"
    audited: str


ACTS = {
    REQUEUE: Act(REQUEUE, "Re-queue", "re-queued", "re-queued batch"),
    RECONCILE: Act(RECONCILE, "Reconcile", "reconciled", "reconciled batch"),
    SETTLE: Act(SETTLE, "Settle", "settled", "settled batch"),
}


def _n(count: int, one: str, many: str = "") -> str:
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def batch_name(b: Batch) -> str:
    """ "batch 3 (id 12)": the seq is its place in the issue, the id what commands take."""
    return f"batch {b.seq} (id {b.id})"


def whom(b: Batch) -> str:
    """ "subscriber ids 1,001 to 2,000, 1,000 people in the delivery log"."""
    span = f"subscriber ids {b.first_id:,} to {b.last_id:,}"
    if not b.recipients:
        return f"{span}; nobody listed yet (a batch lists its recipients when a worker claims it)"
    return f"{span}, {_n(b.people, 'person', 'people')} in the delivery log"


def _tally(b: Batch) -> str:
    parts = [
        f"{b.recipients.get(s, 0):,} {s}"
        for s in (DeliveryStatus.QUEUED, DeliveryStatus.SENT, DeliveryStatus.FAILED)
        if b.recipients.get(s, 0)
    ]
    skipped = b.recipients.get(DeliveryStatus.SKIPPED, 0)
    if skipped:
        parts.append(f"{skipped:,} skipped (they left before it went)")
    return ", ".join(parts) or "none yet"


def _lease_sentence(b: Batch, at: datetime) -> str:
    if not b.lease_ran_out(at):
        return ""
    return (
        f"Its lease was {b.lease_words(at)}: that worker has stopped, or lost touch with"
        " the database, in the middle of the batch."
    )


def confirm_words(
    b: Batch, act: str, issue: Issue, provider: str, idempotent: bool, at: datetime
) -> list[str]:
    """What the action will do to whom, in sentences, before it runs."""
    queued = b.recipients.get(DeliveryStatus.QUEUED, 0)
    failed = b.recipients.get(DeliveryStatus.FAILED, 0)
    said = [f"{batch_name(b).capitalize()} of issue {issue.id}: {whom(b)} ({_tally(b)})."]
    if lease := _lease_sentence(b, at):
        said.append(lease)
    paused = (
        " The issue is paused: the batch goes when you resume it."
        if issue.status == IssueStatus.PAUSED
        else ""
    )
    if act == REQUEUE and b.status == BatchStatus.FAILED:
        said.append(
            f"It failed ({b.error or 'no reason recorded'}). Its {_n(failed, 'failed recipient')}"
            " are queued again in it, with a new idempotency key, and the next free worker"
            " sends it to them; an issue that had finished goes back to sending. Those the"
            " log has as sent or skipped are not sent it again." + paused
        )
    elif act == REQUEUE:
        said.append(
            f"It goes back on the queue with the same idempotency key, and the next free"
            f" worker sends it to the {_n(queued, 'recipient')} the log still has as queued."
            " Any recipient the log has as sent or skipped is not sent it again." + paused
        )
        if idempotent:
            said.append(f"{provider} drops a repeated key: nobody gets it twice.")
        else:
            said.append(
                f"Careful: {provider} does not drop a repeated send, so anyone it accepted"
                " before the worker stopped gets it twice. When the provider keeps records"
                " (Mailgun's events, Postmark's message search), reconcile instead."
            )
    elif act == RECONCILE:
        said.append(
            f"{provider} is asked which of the {_n(queued, 'queued recipient')} it accepted"
            " under the batch's key. Those it accepted are marked sent and are not sent it"
            " again; the others are sent it by the next free worker." + paused
        )
        said.append(
            f"If {provider} cannot tell, nothing is sent: the batch is held as ambiguous and"
            " you settle it by your choice."
        )
    else:
        said.append(
            f"The provider may or may not have taken it ({b.error or 'its worker stopped'})."
            f" Choose what happens to the {_n(queued, 'recipient')} still queued in it;"
            f" {provider} is not asked." + paused
        )
    return said


def now() -> datetime:
    return datetime.now(UTC)


def _found_issue(svc: Service, issue_id: int, session: Session) -> Issue:
    try:
        return issues.get(svc.engine, issue_id)
    except NotFound:
        raise Refused(404, "No such issue", f"There is no issue {issue_id}.", session) from None


def _found_batch(svc: Service, issue_id: int, batch_id: int, session: Session) -> Batch:
    try:
        return machinery.get(svc.engine, issue_id, batch_id)
    except NotFound as exc:
        raise Refused(404, "No such batch", f"{str(exc).capitalize()}.", session) from None


def _done_message(done: str, batch: int, sent: int, again: int, provider: str) -> str:
    named = f"Batch id {batch}"
    return {
        REQUEUE: f"{named} re-queued: {_n(again, 'recipient')} to send.",
        RECONCILE: f"{named} reconciled from {provider}'s records: {sent:,} counted as"
        f" sent, {again:,} to send again.",
        "unknown": f"{provider} could not say what it accepted: {named.lower()} is held as"
        " ambiguous. Settle it by your choice.",
        SETTLE: f"{named} settled: {sent:,} counted as sent, {again:,} to send again.",
    }.get(done, "")


Filter = Annotated[str, Query(max_length=20)]
After = Annotated[int, Query(ge=0, le=2**31)]
Count = Annotated[int, Query(ge=0, le=10**9)]


@router.get("/issues/{issue_id:int}/batches", response_class=HTMLResponse)
def batches_page(
    svc: Svc,
    request: Request,
    session: Watcher,
    issue_id: IssueId,
    status: Filter = "",
    after: After = 0,
    done: Filter = "",
    batch: Count = 0,
    sent: Count = 0,
    again: Count = 0,
) -> Response:
    issue = _found_issue(svc, issue_id, session)
    try:
        found = machinery.page(svc.engine, issue_id, status or None, after)
    except ValueError as exc:
        raise Refused(400, "No such status", f"{str(exc).capitalize()}.", session) from None
    query = {k: v for k, v in (("status", status), ("after", after)) if v}
    here = f"/admin/issues/{issue_id}/batches" + (f"?{urlencode(query)}" if query else "")
    context: dict[str, Any] = {
        "issue": issue,
        "provider": svc.provider.name,
        "page": found,
        "only": status,  # not "status": views.page takes that as the HTTP status
        "after": after,
        "self_url": here,
        "statuses": [s.value for s in BatchStatus],
        "watched": issue.status in WATCHED,
        "at": now(),
        "may_reconcile": can(session.user.role, Action.RECONCILE),
        "why_reconcile": why_not(session.user.role, Action.RECONCILE),
        "acts": ACTS,
        "whom": whom,
        "message": _done_message(done, batch, sent, again, svc.provider.name),
    }
    if views.is_htmx(request):
        return views.fragment(svc, request, "batches.html", ["table"], session, **context)
    return views.page(svc, request, "batches.html", session, vary=True, **context)


@router.get("/issues/{issue_id:int}/batches/{batch_id:int}/{act}", response_class=HTMLResponse)
def review_batch(
    svc: Svc,
    request: Request,
    session: Reconciler,
    issue_id: IssueId,
    batch_id: BatchId,
    act: str,
) -> Response:
    """The confirmation: what the action will do to whom. Nothing changes here."""
    return _confirm(svc, request, session, issue_id, batch_id, _act_of(act, session))


def _act_of(name: str, session: Session) -> Act:
    act = ACTS.get(name)
    if act is None:
        raise Refused(404, "No such action", f"Batches cannot be {name!r}.", session)
    return act


@router.post("/issues/{issue_id:int}/batches/{batch_id:int}/{act}", response_class=HTMLResponse)
def act_on_batch(
    svc: Svc,
    request: Request,
    session: Reconciler,
    issue_id: IssueId,
    batch_id: BatchId,
    act: str,
    later: BackgroundTasks,
    choice: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    chosen = _act_of(act, session)
    _found_issue(svc, issue_id, session)
    if chosen.name == SETTLE and choice not in CHOICES:
        error = "Choose how to settle it: count them as sent, or send them again."
        return _confirm(svc, request, session, issue_id, batch_id, chosen, 400, error)
    try:
        if chosen.name == REQUEUE:
            done = recover.requeue_batch(svc.engine, issue_id, batch_id, svc.provider.idempotent)
        elif chosen.name == RECONCILE:
            done = recover.reconcile_batch(svc.engine, issue_id, batch_id, svc.provider)
        else:
            done = recover.settle_batch(svc.engine, issue_id, batch_id, choice)
    except NotFound as exc:
        raise Refused(404, "No such batch", f"{str(exc).capitalize()}.", session) from None
    except IssueStateError as exc:
        return _confirm(svc, request, session, issue_id, batch_id, chosen, 409, f"{exc}.")
    queue.enqueue(svc, issue_id, done.enqueue, later)
    how = f" as {choice}" if chosen.name == SETTLE else ""
    unknown = chosen.name == RECONCILE and done.unknown
    audit.record(
        svc.engine,
        session.user.id,
        chosen.audited,
        f"issue {issue_id} batch {batch_id}{how}: "
        + (
            f"{svc.provider.name} could not tell; held as ambiguous"
            if unknown
            else f"{done.sent} counted as sent, {done.again} to send"
        ),
    )
    said = {"done": "unknown" if unknown else chosen.name, "batch": batch_id}
    said.update({"sent": done.sent, "again": done.again})
    return views.see_other(f"/admin/issues/{issue_id}/batches?{urlencode(said)}")


def _confirm(
    svc: Service,
    request: Request,
    session: Session,
    issue_id: int,
    batch_id: int,
    act: Act,
    status: int = 200,
    error: str = "",
) -> HTMLResponse:
    """The confirmation page (again, with ``error``, when the action was refused); 409
    when the batch's state does not allow the action (any more)."""
    issue = _found_issue(svc, issue_id, session)
    b = _found_batch(svc, issue_id, batch_id, session)
    at = now()
    allowed = act.name in b.actions(at)
    words: list[str] = []
    if allowed:
        words = confirm_words(b, act.name, issue, svc.provider.name, svc.provider.idempotent, at)
    elif not error:
        status = 409
        error = (
            f"{batch_name(b).capitalize()} is {b.status}: it cannot be {act.done} now."
            " Go back to the batches to see what it allows."
        )
    return views.page(
        svc,
        request,
        "batch_confirm.html",
        session,
        status,
        issue=issue,
        batch=b,
        act=act,
        label=batch_name(b),
        words=words,
        # Re-queueing a leased batch with a provider that does not drop repeats may double.
        danger=act.name == REQUEUE
        and b.status == BatchStatus.SENDING
        and not svc.provider.idempotent,
        error=error,
        choices=CHOICES,
        action=f"/admin/issues/{issue_id}/batches/{batch_id}/{act.name}",
    )
