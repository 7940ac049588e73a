"""The states that issues, batches, deliveries, subscribers, console imports and reader
replies pass through, and the roles of the people who sign in to the editors' console.

One definition each: the schema's CHECK constraints (``pipeline.store.db``), the domain
and the admin API's schemas are all built from these enums. Being ``StrEnum``s, their
members are the strings stored in the database and sent in JSON.
"""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    PENDING = "pending"  # signed up, not yet confirmed (double opt-in)
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"  # a hard bounce: never mailed again
    COMPLAINED = "complained"  # marked as spam: never mailed again


class IssueStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    FAILED = "failed"


class BatchStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # leased by a worker
    SENT = "sent"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"  # the provider may have sent it: an operator decides
    CANCELLED = "cancelled"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # left, bounced or complained before their batch went


class ImportStatus(StrEnum):
    """A CSV import started from the console (``pipeline.audience.importjobs``)."""

    QUEUED = "queued"  # waiting for a worker (or this process, without Redis)
    RUNNING = "running"  # a worker imports it; its heartbeat says it still does
    DONE = "done"
    STOPPED = "stopped"  # stopped by hand: the rows before the stop are imported
    FAILED = "failed"  # the file could not be imported (the error says why)


class ReplyStatus(StrEnum):
    """A reader's reply to an article (``pipeline.replies``)."""

    PENDING = "pending"  # waits for a moderator
    APPROVED = "approved"  # shown on the article's page
    REJECTED = "rejected"  # not shown; kept for the moderators' record
    SPAM = "spam"  # out of sight; purged after ``reply_spam_days``


class ReplyNotify(StrEnum):
    """Whether the author of a reply is told of approved replies to it."""

    OFF = "off"
    UNCONFIRMED = "unconfirmed"  # asked for, waiting for the address's confirmation
    ON = "on"


class Role(StrEnum):
    """What a console user may do: ``pipeline.people.roles`` holds the table."""

    OWNER = "owner"  # everything, and the only one who manages users
    EDITOR = "editor"  # everything with issues: compose, test, schedule, steer
    AUTHOR = "author"  # compose and test issues
    VIEWER = "viewer"  # read only
    OPERATOR = "operator"  # runs the sending: watch, pause, resume, retry, reconcile, subscribers


def check(column: str, states: type[StrEnum]) -> str:
    """The SQL of a CHECK constraint that allows exactly the members of ``states``."""
    return f"{column} IN ({', '.join(repr(s.value) for s in states)})"
