"""Where the admin API hands the batches of a resumed or retried issue: the same place
the CLI does (``pipeline.broker.dispatcher_for``). With ``REDIS_URL`` they go to the
workers at once, and an issue scheduled for now is started at once; without it, this
process sends them (and starts an issue scheduled for now), after the answer so the
request does not wait for the send. If the
queue cannot be reached, the batches stay pending and the beat's sweep sends them.
"""

from __future__ import annotations

import logging

from fastapi import BackgroundTasks

from pipeline.broker import dispatcher_for
from pipeline.sending.batches import Dispatcher
from pipeline.sending.parts import enqueue as hand_on
from pipeline.web.service import Service

log = logging.getLogger(__name__)


def enqueue(svc: Service, issue_id: int, batches: list[int], later: BackgroundTasks) -> None:
    if not batches:
        return
    dispatcher = dispatcher_for(svc.sending, svc.broker)
    if svc.broker is None:  # sent here: after the answer, not while the editor waits
        later.add_task(_hand_on, svc, issue_id, batches, dispatcher)
    else:
        _hand_on(svc, issue_id, batches, dispatcher)


def _hand_on(svc: Service, issue_id: int, batches: list[int], dispatcher: Dispatcher) -> None:
    try:
        hand_on(svc.engine, dispatcher, batches)
    except Exception as exc:  # what is still pending, the sweep sends
        log.warning("issue %s: could not hand on %d batch(es): %s", issue_id, len(batches), exc)


def start_due_now(svc: Service, later: BackgroundTasks) -> None:
    """Start the issues that are due now rather than at the next beat: the workers are
    asked to, or without a broker this process starts and sends them after the answer.
    Claiming an issue is atomic (``issues.claim_due``), so a beat that runs meanwhile
    does not start it twice."""
    if svc.broker is None:
        later.add_task(_start_here, svc)
        return
    try:
        svc.broker.start_due_now()
    except Exception as exc:
        log.warning("could not ask the workers to start due issues: %s", exc)


def _start_here(svc: Service) -> None:
    try:
        svc.sending.start_due(dispatcher_for(svc.sending, None))
    except Exception as exc:  # the beat starts what is still due
        log.warning("could not start the due issues: %s", exc)
