"""The mail outbox: queueing, claiming, retrying, and the "already told" markers (DESIGN §15).

Synchronous units of work for `Store.run`/`Store.call`; the mail package seals and sends.

Invariants:
- A mail is queued in the same transaction as what it reports (`with_queued_mail`,
  `queue_reconnect_notice`, `queue_job_notice`), so a crash never loses one nor sends one
  about something that did not happen.
- One sender at a time holds a row: `claim_next` sets `claimed_by`/`claimed_until` with a
  compare-and-swap on the row's unclaimed (or expired) state; `finish_sent` and
  `finish_failed` change only a row still held by that sender. A sender that dies mid-way
  leaves its claim to expire (`CLAIM_TTL`), after which the row is sent again (at least once,
  never lost).
- Each failed attempt waits longer (`retry_delay`); after `MAX_ATTEMPTS` attempts, or a
  permanent refusal, the row keeps `failed_at` and `last_error` (our own short text, no
  address) and is never tried again.
- Reconnect notices: at most one per connection per `RECONNECT_NOTICE_INTERVAL`, and only for
  a flag raised since the last notice; failing-job notices: once per failure streak of at
  least `FAILING_JOB_THRESHOLD`. Both markers are set by compare-and-swap, so several
  instances queue one notice, not one each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from peewee import fn

from bindify_appliance.store.models import (
    Connection,
    JobRun,
    MailOutbox,
    OidcIdentity,
    User,
    database_proxy,
)

__all__ = [
    "CLAIM_TTL",
    "FAILING_JOB_THRESHOLD",
    "MAX_ATTEMPTS",
    "RECONNECT_NOTICE_INTERVAL",
    "ClaimedMail",
    "QueuedMail",
    "ReconnectNotice",
    "active_admin_emails",
    "claim_next",
    "enqueue",
    "failing_jobs_due",
    "finish_failed",
    "finish_sent",
    "prune",
    "queue_job_notice",
    "queue_reconnect_notice",
    "reconnect_notices_due",
    "retry_delay",
    "with_queued_mail",
]

T = TypeVar("T")

MAX_ATTEMPTS: Final = 8
CLAIM_TTL: Final = timedelta(minutes=5)
KEEP_SENT: Final = timedelta(days=7)
KEEP_FAILED: Final = timedelta(days=30)
RECONNECT_NOTICE_INTERVAL: Final = timedelta(days=1)
FAILING_JOB_THRESHOLD: Final = 3


@dataclass(frozen=True)
class QueuedMail:
    """A sealed message ready to be queued; `id` is the row id the seal is bound to."""

    id: str
    kind: str  # MAIL_KINDS
    message_sealed: str
    key_fingerprint: str


@dataclass(frozen=True)
class ClaimedMail:
    id: str
    kind: str
    message_sealed: str
    key_fingerprint: str
    attempts: int


@dataclass(frozen=True)
class ReconnectNotice:
    connection_id: str
    email: str
    service: str
    label: str | None
    notified_at: datetime | None  # as read: the compare-and-swap's expected value


def retry_delay(attempts: int) -> timedelta:
    """Wait after the `attempts`-th failure: 1, 2, 4 … minutes, at most an hour."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 60))


def enqueue(mail: QueuedMail, now: datetime) -> None:
    MailOutbox.create(
        id=mail.id,
        kind=mail.kind,
        message_sealed=mail.message_sealed,
        key_fingerprint=mail.key_fingerprint,
        created_at=now,
        next_attempt_at=now,
    )


def with_queued_mail(
    mails: Sequence[QueuedMail], now: datetime, fn: Callable[..., T], *args: Any
) -> T:
    """Run the unit of work `fn(*args)` and queue `mails` in the same transaction."""
    with database_proxy.atomic():
        result = fn(*args)
        for mail in mails:
            enqueue(mail, now)
    return result


# -- sending --------------------------------------------------------------------------------


def _claimable(now: datetime) -> Any:
    return (
        MailOutbox.sent_at.is_null()
        & MailOutbox.failed_at.is_null()
        & (MailOutbox.next_attempt_at <= now)
        & (MailOutbox.claimed_until.is_null() | (MailOutbox.claimed_until < now))
    )


def claim_next(owner: str, now: datetime) -> ClaimedMail | None:
    """Claim the oldest due row for `owner`, or None when nothing is due."""
    for _ in range(5):  # another sender may win the row we read; try the next one
        row = (
            MailOutbox.select()
            .where(_claimable(now))
            .order_by(MailOutbox.next_attempt_at, MailOutbox.id)
            .first()
        )
        if row is None:
            return None
        won = (
            MailOutbox.update(
                {MailOutbox.claimed_by: owner, MailOutbox.claimed_until: now + CLAIM_TTL}
            )
            .where((MailOutbox.id == row.id) & _claimable(now))
            .execute()
        )
        if won:
            return ClaimedMail(
                id=row.id,
                kind=row.kind,
                message_sealed=row.message_sealed,
                key_fingerprint=row.key_fingerprint,
                attempts=row.attempts,
            )
    return None


def _held(mail_id: str, owner: str) -> Any:
    return (MailOutbox.id == mail_id) & (MailOutbox.claimed_by == owner)


def finish_sent(mail_id: str, owner: str, now: datetime) -> bool:
    changed = (
        MailOutbox.update(
            {
                MailOutbox.sent_at: now,
                MailOutbox.attempts: MailOutbox.attempts + 1,
                MailOutbox.claimed_by: None,
                MailOutbox.claimed_until: None,
                MailOutbox.last_error: None,
            }
        )
        .where(_held(mail_id, owner))
        .execute()
    )
    return bool(changed)


def finish_failed(
    mail_id: str, owner: str, now: datetime, error: str, *, permanent: bool
) -> str | None:
    """Record a failed attempt: "retry" (scheduled later), "failed" (given up), None (not held)."""
    with database_proxy.atomic():
        row = MailOutbox.get_or_none(_held(mail_id, owner))
        if row is None:
            return None
        attempts = row.attempts + 1
        give_up = permanent or attempts >= MAX_ATTEMPTS
        MailOutbox.update(
            {
                MailOutbox.attempts: attempts,
                MailOutbox.last_error: error[:200],
                MailOutbox.failed_at: now if give_up else None,
                MailOutbox.next_attempt_at: now if give_up else now + retry_delay(attempts),
                MailOutbox.claimed_by: None,
                MailOutbox.claimed_until: None,
            }
        ).where(_held(mail_id, owner)).execute()
    return "failed" if give_up else "retry"


def prune(now: datetime) -> int:
    """Forget sent mail after a week and given-up mail after a month."""
    return int(
        MailOutbox.delete()
        .where((MailOutbox.sent_at < now - KEEP_SENT) | (MailOutbox.failed_at < now - KEEP_FAILED))
        .execute()
    )


# -- what to tell ---------------------------------------------------------------------------


def _notice_due(now: datetime) -> Any:
    told = Connection.reconnect_notified_at
    return Connection.needs_reconnect_at.is_null(False) & (
        told.is_null()
        | ((told <= now - RECONNECT_NOTICE_INTERVAL) & (Connection.needs_reconnect_at > told))
    )


def reconnect_notices_due(now: datetime, limit: int = 100) -> list[ReconnectNotice]:
    """Flagged connections of enabled members not told today about this flag."""
    rows = (
        Connection.select(
            Connection.id,
            Connection.service,
            Connection.label,
            Connection.reconnect_notified_at,
            User.email,
        )
        .join(User, on=Connection.user == User.id)
        .where(_notice_due(now) & Connection.disabled_at.is_null() & User.disabled_at.is_null())
        .order_by(Connection.needs_reconnect_at, Connection.id)
        .limit(limit)
    )
    return [
        ReconnectNotice(
            connection_id=row.id,
            email=row.user.email,
            service=row.service,
            label=row.label,
            notified_at=row.reconnect_notified_at,
        )
        for row in rows
    ]


def queue_reconnect_notice(notice: ReconnectNotice, mail: QueuedMail, now: datetime) -> bool:
    """Mark the connection told and queue `mail`, unless another sender did first."""
    told = Connection.reconnect_notified_at
    expected = told.is_null() if notice.notified_at is None else (told == notice.notified_at)
    with database_proxy.atomic():
        won = (
            Connection.update({told: now})
            .where((Connection.id == notice.connection_id) & expected & _notice_due(now))
            .execute()
        )
        if won:
            enqueue(mail, now)
    return bool(won)


def active_admin_emails() -> list[str]:
    """Addresses of enabled administrators who have signed in or can (not pending invites)."""
    has_identity = OidcIdentity.select().where(OidcIdentity.user == User.id)
    rows = (
        User.select(User.email)
        .where(
            (User.role == "admin")
            & User.disabled_at.is_null()
            & (User.password_hash.is_null(False) | fn.EXISTS(has_identity))
        )
        .order_by(User.email)
    )
    return [row.email for row in rows]


def failing_jobs_due() -> list[tuple[str, int]]:
    """(job name, failures in a row) for streaks at the threshold that admins were not told."""
    rows = JobRun.select(JobRun.name, JobRun.consecutive_failures).where(
        (JobRun.consecutive_failures >= FAILING_JOB_THRESHOLD)
        & JobRun.failure_notified_at.is_null()
    )
    return [(row.name, row.consecutive_failures) for row in rows]


def queue_job_notice(name: str, mails: Sequence[QueuedMail], now: datetime) -> bool:
    """Mark the streak told and queue `mails` (one per admin), unless another sender did first."""
    with database_proxy.atomic():
        won = (
            JobRun.update({JobRun.failure_notified_at: now})
            .where(
                (JobRun.name == name)
                & JobRun.failure_notified_at.is_null()
                & (JobRun.consecutive_failures >= FAILING_JOB_THRESHOLD)
            )
            .execute()
        )
        if won:
            for mail in mails:
                enqueue(mail, now)
    return bool(won)
