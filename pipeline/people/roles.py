"""What each role may do in the editors' console, and why a control is disabled.

    action         owner  editor  author  viewer  operator
    read             ✓      ✓       ✓       ✓       ✓
    compose          ✓      ✓       ✓
    test             ✓      ✓       ✓
    schedule         ✓      ✓
    steer            ✓      ✓                       ✓     (pause, resume, cancel, retry)
    watch            ✓                              ✓     (the dashboard, a send's batches)
    reconcile        ✓                              ✓     (re-queue, reconcile, settle batches)
    subscribers      ✓                              ✓     (search, edit, erase, import, export)
    moderate         ✓      ✓                             (readers' replies: approve, ban, close)
    manage users     ✓

The console asks ``can`` before showing a control as enabled and again, on the server,
before doing anything; ``why_not`` is the sentence beside a disabled one.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pipeline.statuses import Role


class Action(StrEnum):
    READ = "read"  # issues, reports, the audit log
    COMPOSE = "compose"  # create and edit issues
    TEST = "test"  # send a test email
    SCHEDULE = "schedule"
    STEER = "steer"  # pause, resume, cancel, retry a send
    WATCH = "watch"  # the operators' dashboard, a send's batches
    RECONCILE = "reconcile"  # re-queue, reconcile and settle a send's batches
    SUBSCRIBERS = "subscribers"  # search, edit and erase subscribers; import and export
    MODERATE = "moderate"  # readers' replies: approve, reject, mark spam, ban, close
    MANAGE_USERS = "manage_users"


ALLOWED: Mapping[Role, frozenset[Action]] = {
    Role.OWNER: frozenset(Action),
    Role.EDITOR: frozenset(
        {Action.READ, Action.COMPOSE, Action.TEST, Action.SCHEDULE, Action.STEER, Action.MODERATE}
    ),
    Role.AUTHOR: frozenset({Action.READ, Action.COMPOSE, Action.TEST}),
    Role.VIEWER: frozenset({Action.READ}),
    Role.OPERATOR: frozenset(
        {Action.READ, Action.STEER, Action.WATCH, Action.RECONCILE, Action.SUBSCRIBERS}
    ),
}

# What a role does, and who does what it may not: ``why_not`` joins the two.
_ROLE_DOES = {
    Role.EDITOR: "Editors can compose, test, schedule and steer issues and moderate replies",
    Role.AUTHOR: "Authors can compose and test issues",
    Role.VIEWER: "Viewers can read issues",
    Role.OPERATOR: "Operators run the sending and look after subscribers",
}
_WHO_DOES = {
    Action.READ: "any signed-in user reads them",
    Action.COMPOSE: "an author, editor or owner composes them",
    Action.TEST: "an author, editor or owner sends test emails of them",
    Action.SCHEDULE: "an editor or owner schedules them",
    Action.STEER: "an editor, operator or owner pauses, resumes, cancels or retries a send",
    Action.WATCH: "an operator or owner watches the sending machinery",
    Action.RECONCILE: "an operator or owner re-queues, reconciles and settles batches",
    Action.SUBSCRIBERS: "an operator or owner manages subscribers",
    Action.MODERATE: "an editor or owner moderates readers' replies",
    Action.MANAGE_USERS: "only an owner manages users",
}


def _role(role: Role | str) -> Role | None:
    try:
        return Role(role)
    except ValueError:
        return None


def can(role: Role | str, action: Action) -> bool:
    """Whether ``role`` may do ``action``. A role that is not one of ``Role`` may do
    nothing."""
    known = _role(role)
    return known is not None and Action(action) in ALLOWED[known]


def why_not(role: Role | str, action: Action) -> str:
    """The plain sentence shown beside a control ``role`` may not use, e.g. "Authors can
    compose and test issues; an editor or owner schedules them." Empty when it may."""
    if can(role, action):
        return ""
    known = _role(role)
    does = None if known is None else _ROLE_DOES.get(known)
    if does is None:  # not a role at all (an owner may do everything)
        return f"{str(role)!r} is not a role Letterpress knows: an owner can give you one."
    return f"{does}; {_WHO_DOES[Action(action)]}."
