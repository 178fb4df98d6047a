"""Optional billing with Stripe (DESIGN §11): off unless both Stripe secrets are set.

Modules: `options` (settings), `entitlement` (what a state allows, pure), `suspension` and
`accounts` (the database side), `gateway` (the stripe library, off the event loop), `events`
(webhook events applied once), `service` (operations), `api`, `webhook`, `page`, `banners`,
`routes`, `jobs`. Importing this package never imports `stripe`.
"""

from __future__ import annotations

from bindify_appliance.context import AppContext

__all__ = ["bring_up_to_date", "check_allowance"]


async def bring_up_to_date(ctx: AppContext, user_id: str) -> None:
    """Apply what time alone changed to a member's billing (suspensions) before their
    connections are read back; nothing at all when billing is off."""
    if not ctx.settings.stripe_webhook_secret:
        return
    from bindify_appliance.billing.service import billing_service

    billing = billing_service(ctx)
    if billing is not None:
        await billing.sync(user_id)


async def check_allowance(ctx: AppContext, user_id: str) -> None:
    """402 `payment_required` when a new connection would exceed the member's allowance;
    nothing at all when billing is off."""
    if not ctx.settings.stripe_webhook_secret:
        return
    from bindify_appliance.billing.service import billing_service

    billing = billing_service(ctx)
    if billing is not None:
        await billing.check_allowance(user_id)
