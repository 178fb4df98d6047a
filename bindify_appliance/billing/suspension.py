"""Suspension to the allowance (DESIGN §11), one unit of work on a member's connections.

Connections that count are those not suspended (disabled and needs-reconnect ones count).
Beyond the allowance the newest become suspended (kept whole: credentials, history); when the
allowance grows the suspended come back oldest first. During the trial nothing is suspended
(turning billing on suspends nobody); only suspended ones may come back.
Runs inside the caller's transaction; returns the ids suspended and the ids restored.
"""

from __future__ import annotations

from datetime import datetime

from bindify_appliance.store.models import Connection

__all__ = ["count_active", "reconcile"]


def count_active(user_id: str, *, excluding: str | None = None) -> int:
    query = Connection.select().where(
        (Connection.user == user_id) & Connection.billing_suspended_at.is_null()
    )
    if excluding is not None:
        query = query.where(Connection.id != excluding)
    return int(query.count())


def reconcile(
    user_id: str, allowed: int, *, in_trial: bool, now: datetime
) -> tuple[list[str], list[str]]:
    rows = list(
        Connection.select(Connection.id, Connection.billing_suspended_at)
        .where(Connection.user == user_id)
        .order_by(Connection.created_at, Connection.id)
    )
    active = [r.id for r in rows if r.billing_suspended_at is None]
    suspended = [r.id for r in rows if r.billing_suspended_at is not None]
    to_suspend: list[str] = []
    if not in_trial and len(active) > allowed:
        to_suspend = active[max(0, allowed) :]
    free = max(0, allowed - len(active))
    to_restore = suspended[:free]
    if to_suspend:
        Connection.update(billing_suspended_at=now, updated_at=now).where(
            Connection.id.in_(to_suspend)
        ).execute()
    if to_restore:
        Connection.update(billing_suspended_at=None, updated_at=now).where(
            Connection.id.in_(to_restore)
        ).execute()
    return to_suspend, to_restore
