"""Members' billing state in the database: seeing a member, syncing what they are entitled to.

Units of work (run through `ctx.store.run`). `sync_member` is the one place a member's
entitlement is written: `users.billing_until` (what the proxy reads) and the suspension of
their connections, in one transaction, so every instance sees the same state.

Invariants: admins are never billed (no `billing_until`; a trial never used is dropped, so a
demoted admin starts a fresh one); a member's trial starts when billing first sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bindify_appliance.billing.entitlement import Entitlement, evaluate
from bindify_appliance.billing.suspension import count_active, reconcile
from bindify_appliance.store.models import BillingAccount, Connection, User

__all__ = ["MemberBilling", "ensure_account", "sync_all", "sync_member"]


@dataclass(frozen=True)
class MemberBilling:
    """A member's billing as shown to them; `entitlement` None = not billed (admin)."""

    user_id: str
    entitlement: Entitlement | None
    account: BillingAccount | None
    active: int
    changed: tuple[str, ...] = ()  # connections the proxy must read again
    suspended: tuple[str, ...] = ()
    restored: tuple[str, ...] = ()


def ensure_account(user_id: str, now: datetime, trial: timedelta) -> BillingAccount:
    account = BillingAccount.get_or_none(BillingAccount.user == user_id)
    if account is None:
        BillingAccount.insert(
            user=user_id, trial_ends_at=now + trial, created_at=now, updated_at=now
        ).on_conflict_ignore().execute()
        account = BillingAccount.get(BillingAccount.user == user_id)
    return account


def sync_member(
    user_id: str, now: datetime, *, trial: timedelta, trial_connections: int, grace: timedelta
) -> MemberBilling | None:
    """Bring one member's stored entitlement and suspensions up to date (None: no such user)."""
    db = User._meta.database
    with db.atomic():
        user = User.get_or_none(User.id == user_id)
        if user is None:
            return None
        if user.role == "admin":
            if user.billing_until is not None:
                User.update(billing_until=None).where(User.id == user_id).execute()
            BillingAccount.delete().where(
                (BillingAccount.user == user_id) & BillingAccount.subscribed_at.is_null()
            ).execute()
            released = list(
                Connection.select(Connection.id).where(
                    (Connection.user == user_id) & Connection.billing_suspended_at.is_null(False)
                )
            )
            if released:
                Connection.update(billing_suspended_at=None).where(
                    Connection.user == user_id
                ).execute()
            ids = tuple(c.id for c in released)
            return MemberBilling(user_id, None, None, count_active(user_id), ids, (), ids)
        account = ensure_account(user_id, now, trial)
        ent = evaluate(account, now, trial_connections=trial_connections, grace=grace)
        if user.billing_until != ent.until:
            User.update(billing_until=ent.until).where(User.id == user_id).execute()
        suspended, restored = reconcile(user_id, ent.allowed, in_trial=ent.in_trial, now=now)
        changed = suspended + restored
        if user.billing_until != ent.until:
            # The proxy reads `billing_until` with each connection: all of them changed.
            changed = [
                c.id for c in Connection.select(Connection.id).where(Connection.user == user_id)
            ]
        return MemberBilling(
            user_id,
            ent,
            account,
            count_active(user_id),
            tuple(changed),
            tuple(suspended),
            tuple(restored),
        )


def sync_all(
    now: datetime, *, trial: timedelta, trial_connections: int, grace: timedelta
) -> list[MemberBilling]:
    """Every user: members seen (trials started), entitlements and suspensions brought up to
    date (time alone ends trials, grace periods and paid-up periods)."""
    results = []
    for user_id in [str(u.id) for u in User.select(User.id)]:
        synced = sync_member(
            user_id, now, trial=trial, trial_connections=trial_connections, grace=grace
        )
        if synced is not None:
            results.append(synced)
    return results
