"""Connection status changes: needs-reconnect flags (one connection, or every connection of a
moved service), clearing them, and disabling/enabling — each with its connection event.

Synchronous units of work for `Store.run`/`Store.call`, like `store/connections.py` (which
re-exports them, so callers keep one `connections` module).

Invariants:
- `status` is derived in the same UPDATE that changes a flag: disabled wins over
  needs_reconnect, which wins over active.
- `flag_service_moved` flags every affected connection and records its event in the caller's
  transaction (the service change and the flags commit together, DESIGN §9).
- An owner never undoes an administrator's disable (`ADMIN_DISABLED_MESSAGE`); events name the
  actor by role and id, never a secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import peewee

from bindify_appliance.errors import AdminDisabledError
from bindify_appliance.store.events import record_event
from bindify_appliance.store.models import DISABLED_BY, Connection

__all__ = [
    "ADMIN_DISABLED_MESSAGE",
    "SERVICE_MOVED_REASON",
    "clear_needs_reconnect",
    "flag_service_moved",
    "set_disabled",
    "set_needs_reconnect",
    "state_event",
]

# The needs-reconnect reason when a service's endpoints changed (DESIGN §9). Only the member's
# reconnect clears it: a token refresh that commits afterwards keeps it (store/refresh.py).
SERVICE_MOVED_REASON: Final = "the service's address changed"
ADMIN_DISABLED_MESSAGE: Final = (
    "This connection was disabled by an administrator; only an administrator can re-enable it."
)


def _status_if_not_disabled(otherwise: str) -> Any:
    return peewee.Case(None, [(Connection.disabled_at.is_null(False), "disabled")], otherwise)


def _status_if_enabled() -> Any:
    return peewee.Case(
        None, [(Connection.needs_reconnect_at.is_null(False), "needs_reconnect")], "active"
    )


def state_event(row_id: str, category: str, now: datetime, detail: str | None = None) -> None:
    owner = Connection.select(Connection.user).where(Connection.id == row_id).first()
    record_event(
        row_id,
        user_id=owner.user_id if owner else None,
        event_type="connection",
        category=category,
        detail=detail,
        now=now,
    )


def set_needs_reconnect(connection_id: str, reason: str, now: datetime) -> bool:
    """Flag the connection for reconnecting (keeps `disabled` if it is); True if it exists.

    `reason` is our own short text ("upstream rejected the key"), shown to the member.
    """
    db = Connection._meta.database
    with db.atomic():
        # Many in-flight requests can fail together: only the first flag makes an event.
        already = (
            Connection.select()
            .where((Connection.id == connection_id) & Connection.needs_reconnect_at.is_null(False))
            .exists()
        )
        changed = (
            Connection.update(
                {
                    Connection.needs_reconnect_at: now,
                    Connection.needs_reconnect_reason: reason[:200],
                    Connection.status: _status_if_not_disabled("needs_reconnect"),
                    Connection.updated_at: now,
                }
            )
            .where(Connection.id == connection_id)
            .execute()
        )
        if changed and not already:
            state_event(connection_id, "needs_reconnect", now, reason[:200])
    return bool(changed)


def flag_service_moved(service_id: str, auth_types: Iterable[str], now: datetime) -> int:
    """Flag every connection of `service_id` with one of `auth_types` for reconnecting.

    Call inside the transaction that changes where the service's credentials go, so no
    instance ever reads the new address beside a connection that is still active. Each flagged
    connection gets a `connection/needs_reconnect` event with `SERVICE_MOVED_REASON`, also one
    already flagged for another reason (the reason is replaced). Returns how many were flagged.
    """
    kinds = sorted(set(auth_types))
    if not kinds:
        return 0
    db = Connection._meta.database
    with db.atomic():
        targets = list(
            Connection.select(Connection.id, Connection.user)
            .where((Connection.service == service_id) & Connection.auth_type.in_(kinds))
            .order_by(Connection.id)
        )
        if not targets:
            return 0
        (
            Connection.update(
                {
                    Connection.needs_reconnect_at: now,
                    Connection.needs_reconnect_reason: SERVICE_MOVED_REASON,
                    Connection.status: _status_if_not_disabled("needs_reconnect"),
                    Connection.updated_at: now,
                }
            )
            .where(Connection.id.in_([t.id for t in targets]))
            .execute()
        )
        for target in targets:
            record_event(
                target.id,
                user_id=target.user_id,
                event_type="connection",
                category="needs_reconnect",
                detail=SERVICE_MOVED_REASON,
                now=now,
            )
    return len(targets)


def clear_needs_reconnect(connection_id: str, now: datetime) -> bool:
    """Clear the reconnect flag (after a successful refresh or a new key); True if it was set."""
    changed = (
        Connection.update(
            {
                Connection.needs_reconnect_at: None,
                Connection.needs_reconnect_reason: None,
                Connection.status: _status_if_not_disabled("active"),
                Connection.updated_at: now,
            }
        )
        .where((Connection.id == connection_id) & Connection.needs_reconnect_at.is_null(False))
        .execute()
    )
    return bool(changed)


def set_disabled(
    connection_id: str,
    disabled: bool,
    now: datetime,
    *,
    actor_id: str | None = None,
    actor_role: str = "owner",
) -> bool:
    """Disable or re-enable a connection; True if that changed anything.

    `actor_role` is `admin` (an administrator acting on it) or `owner`; a disable remembers
    it, and the owner cannot undo an administrator's disable: `AdminDisabledError` (403
    `forbidden` at the HTTP seam), nothing changed (checked in the UPDATE itself, so a
    concurrent admin disable cannot slip by).
    The `connection/disabled|enabled` event names the actor ("by admin {id}").
    """
    if actor_role not in DISABLED_BY:
        raise ValueError("actor_role must be 'admin' or 'owner'")
    db = Connection._meta.database
    with db.atomic():
        if disabled:
            updates = {
                Connection.disabled_at: now,
                Connection.disabled_by: actor_role,
                Connection.status: "disabled",
                Connection.updated_at: now,
            }
            where = Connection.disabled_at.is_null()
        else:
            updates = {
                Connection.disabled_at: None,
                Connection.disabled_by: None,
                Connection.status: _status_if_enabled(),
                Connection.updated_at: now,
            }
            where = Connection.disabled_at.is_null(False)
            if actor_role != "admin":
                where &= Connection.disabled_by.is_null() | (Connection.disabled_by != "admin")
        changed = (
            Connection.update(updates).where((Connection.id == connection_id) & where).execute()
        )
        if not changed and not disabled and actor_role != "admin":
            admin_disabled = (
                Connection.select()
                .where((Connection.id == connection_id) & (Connection.disabled_by == "admin"))
                .exists()
            )
            if admin_disabled:
                raise AdminDisabledError(ADMIN_DISABLED_MESSAGE)
        if changed:
            detail = f"by {actor_role} {actor_id}" if actor_id else None
            state_event(connection_id, "disabled" if disabled else "enabled", now, detail)
    return bool(changed)
