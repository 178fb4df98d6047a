"""The billing banner over every signed-in page (DESIGN §11): trial end, past due, suspension.

`page_banner` is None when billing is off, when nobody is signed in, for administrators, and
when there is nothing to say; it reads (and brings up to date) the member's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from bindify_appliance.billing.service import billing_service
from bindify_appliance.context import AppContext
from bindify_appliance.store.sessions import Principal

__all__ = ["Banner", "page_banner"]


@dataclass(frozen=True)
class Banner:
    kind: str  # trial | past_due | suspended
    text: str


async def page_banner(ctx: AppContext, principal: Principal | None) -> Banner | None:
    billing = billing_service(ctx)
    if billing is None or principal is None or principal.role == "admin":
        return None
    member = await billing.sync(principal.user_id)
    if member is None or member.entitlement is None:
        return None
    ent = member.entitlement
    suspended = await ctx.store.run(_suspended_count, principal.user_id)
    if ent.status == "expired" or suspended:
        return Banner(
            "suspended",
            f"{suspended} of your connections are suspended until you choose a plan."
            if suspended
            else "Your trial has ended: choose a plan to use your connections.",
        )
    if ent.status == "past_due":
        return Banner(
            "past_due",
            f"Your last payment failed. Update your payment method before "
            f"{ent.until:%Y-%m-%d %H:%M} UTC to keep your connections.",
        )
    if ent.in_trial and ent.trial_ends_at is not None:
        return Banner("trial", f"Your free trial ends on {ent.trial_ends_at:%Y-%m-%d %H:%M} UTC.")
    return None


def _suspended_count(user_id: str) -> int:
    from bindify_appliance.store.models import Connection

    return int(
        Connection.select()
        .where((Connection.user == user_id) & Connection.billing_suspended_at.is_null(False))
        .count()
    )
