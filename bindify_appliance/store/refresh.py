"""Units of work for OAuth token refresh: claim, commit, give up, and the stale-marker sweep.

The refresh protocol (DESIGN §8), as the database sees it:

1. `claim_refresh` stamps `refresh_started_at` on the row, only when the row still has the
   token generation the refresher read and no marker is set. Exactly one process (of however
   many share the database) wins the claim, so exactly one refresh reaches the provider and a
   rotated refresh token is never presented twice (provider reuse detection never fires).
2. The winner calls the provider, then — with no other await and no other I/O in between —
   runs `commit_refresh`: a compare-and-swap on the generation that writes the new sealed
   tokens, clears the marker, stamps `last_refreshed_at`, clears needs-reconnect and records
   `token_refresh/success`, all in one transaction. A key rotation re-sealing the row meanwhile
   bumps the generation; the commit then re-reads the row and, if its plaintext is still what
   the refresh started from, writes again against the new generation (see `commit_refresh`).
3. Failures end in `release_refresh` (transient: marker cleared, event) or `fail_refresh`
   (`invalid_grant`/`invalid_client`: marker cleared, needs-reconnect, event).
4. A marker older than `STALE_AFTER` means a process died between the claim and the commit:
   the provider may have rotated the refresh token we hold, so it is never retried —
   `flag_stale_refresh` / `sweep_stale_markers` flag needs-reconnect with an event.

Invariants:
- No plaintext token leaves these functions except through the return value of
  `read_refresh_row` → the caller's `open`; events carry metadata only.
- Every function is a synchronous unit of work for `Store.run` (one transaction each).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import peewee

from bindify_appliance.store.connections import SERVICE_MOVED_REASON, set_needs_reconnect
from bindify_appliance.store.events import record_event
from bindify_appliance.store.models import Connection

__all__ = [
    "STALE_AFTER",
    "CommitOutcome",
    "RefreshRow",
    "claim_refresh",
    "commit_reconnect",
    "commit_refresh",
    "due_for_refresh",
    "fail_refresh",
    "flag_stale_refresh",
    "note_keepalive",
    "read_refresh_row",
    "release_refresh",
    "sweep_stale_markers",
]

STALE_AFTER: Final = timedelta(minutes=2)
STALE_REASON: Final = "a token refresh was interrupted; reconnect to be safe"
_COMMIT_ATTEMPTS: Final = 5


@dataclass(frozen=True)
class RefreshRow:
    """What a refresher needs from a connection row (the blob still sealed)."""

    id: str
    user_id: str
    service: str
    auth_type: str
    key_storage_mode: str
    encrypted_tokens: str | None = field(repr=False)
    key_fingerprint: str
    token_generation: int
    refresh_started_at: datetime | None
    needs_reconnect_at: datetime | None
    disabled: bool


def read_refresh_row(connection_id: str) -> RefreshRow | None:
    row = Connection.get_or_none(Connection.id == connection_id)
    if row is None:
        return None
    return RefreshRow(
        id=row.id,
        user_id=row.user_id,
        service=row.service,
        auth_type=row.auth_type,
        key_storage_mode=row.key_storage_mode,
        encrypted_tokens=row.encrypted_tokens,
        key_fingerprint=row.key_fingerprint,
        token_generation=row.token_generation,
        refresh_started_at=row.refresh_started_at,
        needs_reconnect_at=row.needs_reconnect_at,
        disabled=row.disabled_at is not None,
    )


def claim_refresh(connection_id: str, expected_generation: int, now: datetime) -> bool:
    """Write the refresh-in-flight marker; True when this caller may call the provider."""
    changed = (
        Connection.update({Connection.refresh_started_at: now})
        .where(
            (Connection.id == connection_id)
            & (Connection.token_generation == expected_generation)
            & Connection.refresh_started_at.is_null()
            & Connection.needs_reconnect_at.is_null()
        )
        .execute()
    )
    return bool(changed == 1)


@dataclass(frozen=True)
class CommitOutcome:
    """`committed`: our tokens are stored. Otherwise `reason` says why not."""

    committed: bool
    generation: int | None = None
    reason: str | None = None


def _unless_moved(column: peewee.Field, value: object) -> Any:
    """SET `value`, except on a row flagged because its service moved (the column kept)."""
    moved = Connection.needs_reconnect_reason == SERVICE_MOVED_REASON
    return peewee.Case(None, [(moved, column)], value)


def commit_refresh(
    connection_id: str,
    *,
    expected_generation: int,
    base_payload: Mapping[str, Any],
    seal: Callable[[RefreshRow], tuple[str, str]],
    open_row: Callable[[RefreshRow], dict[str, Any] | None],
    token_expires_at: datetime | None,
    now: datetime,
    detail: str,
) -> CommitOutcome:
    """Store refreshed tokens by compare-and-swap; see the module docstring (step 2).

    `seal(row)` seals the new payload for the row as it is now (the active key); `open_row(row)`
    opens the stored payload (None when it cannot be opened). A lost swap whose stored plaintext
    still equals `base_payload` was a re-encryption only (key rotation): write again. A changed
    plaintext means another writer replaced the tokens — ours are not written ("superseded").
    """
    db = Connection._meta.database
    generation = expected_generation
    with db.atomic():
        row = read_refresh_row(connection_id)
        for _ in range(_COMMIT_ATTEMPTS):
            if row is None:
                return CommitOutcome(False, reason="deleted")
            blob, fingerprint = seal(row)
            changed = (
                Connection.update(
                    {
                        Connection.encrypted_tokens: blob,
                        Connection.key_fingerprint: fingerprint,
                        Connection.token_generation: Connection.token_generation + 1,
                        Connection.token_expires_at: token_expires_at,
                        Connection.last_refreshed_at: now,
                        Connection.refresh_started_at: None,
                        # A refresh in flight when the service's address changed must not undo
                        # that flag: only the member's reconnect does (DESIGN §9).
                        Connection.needs_reconnect_at: _unless_moved(
                            Connection.needs_reconnect_at, None
                        ),
                        Connection.needs_reconnect_reason: _unless_moved(
                            Connection.needs_reconnect_reason, None
                        ),
                        Connection.status: _unless_moved(
                            Connection.status, "active" if not row.disabled else "disabled"
                        ),
                        Connection.updated_at: now,
                    }
                )
                .where(
                    (Connection.id == connection_id) & (Connection.token_generation == generation)
                )
                .execute()
            )
            if changed == 1:
                record_event(
                    connection_id,
                    user_id=row.user_id,
                    event_type="token_refresh",
                    category="success",
                    detail=detail[:200],
                    now=now,
                )
                return CommitOutcome(True, generation=generation + 1)
            row = read_refresh_row(connection_id)
            if row is None:
                return CommitOutcome(False, reason="deleted")
            stored = open_row(row)
            if stored is None or dict(stored) != dict(base_payload):
                return CommitOutcome(False, generation=row.token_generation, reason="superseded")
            generation = row.token_generation
    return CommitOutcome(False, reason="contended")


def commit_reconnect(
    connection_id: str,
    *,
    expected_generation: int,
    encrypted_tokens: str,
    key_fingerprint: str,
    token_expires_at: datetime | None,
    refreshed: bool,
    auth_mode: str | None,
    application: str | None,
    now: datetime,
) -> bool:
    """Store a reconnect's new upstream credential in place; True when this write won the CAS.

    The same compare-and-swap on the token generation as `commit_refresh`: a refresh that read
    the old generation loses its commit afterwards (its stored plaintext changed: "superseded"),
    so it can never overwrite the member's new tokens. The refresh-in-flight marker and every
    needs-reconnect flag are cleared — the service-moved one too, because a reconnect is the
    member's consent to the service's current address (DESIGN §9). `disabled` is kept. Secret
    URL and key (secret1 hash, secret2 verifier) are untouched: the member's clients keep working.
    Records `connection/reconnected` in the same transaction.
    """
    db = Connection._meta.database
    with db.atomic():
        changed = (
            Connection.update(
                {
                    Connection.encrypted_tokens: encrypted_tokens,
                    Connection.key_fingerprint: key_fingerprint,
                    Connection.token_generation: Connection.token_generation + 1,
                    Connection.token_expires_at: token_expires_at,
                    Connection.last_refreshed_at: now if refreshed else None,
                    Connection.refresh_started_at: None,
                    Connection.needs_reconnect_at: None,
                    Connection.needs_reconnect_reason: None,
                    Connection.auth_mode: auth_mode,
                    Connection.application: application,
                    Connection.status: peewee.Case(
                        None, [(Connection.disabled_at.is_null(False), "disabled")], "active"
                    ),
                    Connection.updated_at: now,
                }
            )
            .where(
                (Connection.id == connection_id)
                & (Connection.token_generation == expected_generation)
            )
            .execute()
        )
        if changed != 1:
            return False
        owner = Connection.select(Connection.user).where(Connection.id == connection_id).first()
        record_event(
            connection_id,
            user_id=owner.user_id if owner else None,
            event_type="connection",
            category="reconnected",
            detail="same URL and key; new upstream credential",
            now=now,
        )
    return True


def release_refresh(
    connection_id: str,
    *,
    user_id: str,
    now: datetime,
    detail: str,
    upstream_status: int | None = None,
) -> None:
    """A transient failure: clear the marker, record `token_refresh/refresh_failed`."""
    db = Connection._meta.database
    with db.atomic():
        Connection.update({Connection.refresh_started_at: None}).where(
            Connection.id == connection_id
        ).execute()
        if Connection.get_or_none(Connection.id == connection_id) is not None:
            record_event(
                connection_id,
                user_id=user_id,
                event_type="token_refresh",
                category="refresh_failed",
                detail=detail[:200],
                upstream_status=upstream_status,
                now=now,
            )


def fail_refresh(
    connection_id: str,
    *,
    user_id: str,
    reason: str,
    now: datetime,
    detail: str,
    category: str = "invalid_grant",
    event_type: str = "token_refresh",
    upstream_status: int | None = None,
) -> bool:
    """The grant is refused for good: clear the marker, flag needs-reconnect, record an event."""
    db = Connection._meta.database
    with db.atomic():
        Connection.update({Connection.refresh_started_at: None}).where(
            Connection.id == connection_id
        ).execute()
        if not set_needs_reconnect(connection_id, reason, now):
            return False
        record_event(
            connection_id,
            user_id=user_id,
            event_type=event_type,
            category=category,
            detail=detail[:200],
            upstream_status=upstream_status,
            now=now,
        )
    return True


def flag_stale_refresh(connection_id: str, now: datetime) -> bool:
    """Flag one connection whose marker is older than `STALE_AFTER`; True if it was flagged."""
    cutoff = now - STALE_AFTER
    db = Connection._meta.database
    with db.atomic():
        row = Connection.get_or_none(
            (Connection.id == connection_id)
            & Connection.refresh_started_at.is_null(False)
            & (Connection.refresh_started_at <= cutoff)
        )
        if row is None:
            return False
        return fail_refresh(
            connection_id,
            user_id=row.user_id,
            reason=STALE_REASON,
            now=now,
            detail="Refresh interrupted before its result was stored",
            category="interrupted",
        )


def note_keepalive(connection_id: str, *, user_id: str, now: datetime, detail: str) -> None:
    """A keep-alive handshake succeeded: stamp `last_refreshed_at`, record the event."""
    db = Connection._meta.database
    with db.atomic():
        changed = (
            Connection.update({Connection.last_refreshed_at: now})
            .where(Connection.id == connection_id)
            .execute()
        )
        if changed:
            record_event(
                connection_id,
                user_id=user_id,
                event_type="keepalive",
                category="success",
                detail=detail[:200],
                now=now,
            )


def sweep_stale_markers(now: datetime) -> list[str]:
    """Flag every connection with a stale marker (start-up recovery); the ids flagged."""
    cutoff = now - STALE_AFTER
    ids = [
        row.id
        for row in Connection.select(Connection.id).where(
            Connection.refresh_started_at.is_null(False) & (Connection.refresh_started_at <= cutoff)
        )
    ]
    return [cid for cid in ids if flag_stale_refresh(cid, now)]


def due_for_refresh(
    service: str, *, refreshed_before: datetime, expiring_before: datetime, limit: int = 500
) -> list[str]:
    """Managed OAuth connections of `service` the background job should refresh or keep alive.

    Due: active, not in flight, and last refreshed before `refreshed_before` (or never), or
    whose token expires before `expiring_before`. Zero-knowledge rows are never due (the server
    cannot open them).
    """
    stale = Connection.last_refreshed_at.is_null() | (
        Connection.last_refreshed_at < refreshed_before
    )
    expiring = Connection.token_expires_at.is_null(False) & (
        Connection.token_expires_at < expiring_before
    )
    query = (
        Connection.select(Connection.id)
        .where(
            (Connection.service == service)
            & (Connection.auth_type == "oauth")
            & (Connection.key_storage_mode == "managed")
            & (Connection.status == "active")
            & Connection.disabled_at.is_null()
            & Connection.needs_reconnect_at.is_null()
            & Connection.refresh_started_at.is_null()
            & (stale | expiring)
        )
        .order_by(Connection.last_refreshed_at)
        .limit(limit)
    )
    return [row.id for row in query]
