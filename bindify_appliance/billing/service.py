"""Billing's operations for the API, the pages, the webhook and the jobs (DESIGN §11).

`billing_service(ctx)` is None when billing is off (nothing else is built or imported then);
one `Billing` per application context otherwise. Every state change goes through the database
(`accounts.sync_member`), so several instances agree; after one, this instance's proxy memo
forgets the connections concerned (others within the memo's second).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

from bindify_appliance import audit
from bindify_appliance.billing.accounts import MemberBilling, sync_all, sync_member
from bindify_appliance.billing.events import apply_subscription_unit
from bindify_appliance.billing.gateway import StripeGateway
from bindify_appliance.billing.options import MAX_QUANTITY, BillingOptions, billing_options
from bindify_appliance.billing.suspension import count_active
from bindify_appliance.clock import iso
from bindify_appliance.context import AppContext
from bindify_appliance.errors import HTTPFacingError, InvalidRequest
from bindify_appliance.store.models import BillingAccount, User

__all__ = ["Billing", "billing_json", "billing_service", "payment_required"]

_SERVICES: dict[int, Billing] = {}


class PaymentRequired(HTTPFacingError):
    """402: the member's allowance of connections is used up (DESIGN §11)."""

    status = 402
    code = "payment_required"


class NotBilled(InvalidRequest):
    """400: administrators have no billing."""

    code = "not_billed"


class NoSubscription(InvalidRequest):
    """400: the member has no subscription (or customer) for this."""

    code = "no_subscription"


class InvalidQuantity(InvalidRequest):
    """400: a quantity outside 1..MAX_QUANTITY."""

    code = "invalid_quantity"


class QuantityTooLow(InvalidRequest):
    """400: fewer paid connections than the member's active ones."""

    code = "quantity_too_low"


def payment_required(message: str) -> PaymentRequired:
    return PaymentRequired(message)


def billing_json(member: MemberBilling) -> dict[str, Any]:
    """`GET /api/v1/me`'s `billing` object."""
    ent = member.entitlement
    if ent is None:
        return {
            "status": "exempt",
            "trial_ends_at": None,
            "access_until": None,
            "connections_allowed": None,
            "connections_active": member.active,
        }
    return {
        "status": ent.status,
        "trial_ends_at": iso(ent.trial_ends_at) if ent.trial_ends_at else None,
        "access_until": iso(ent.access_until) if ent.access_until else None,
        "connections_allowed": ent.allowed,
        "connections_active": member.active,
    }


class Billing:
    def __init__(
        self, ctx: AppContext, options: BillingOptions, gateway: StripeGateway | None = None
    ) -> None:
        self.ctx = ctx
        self.options = options
        self.gateway = gateway or StripeGateway(ctx.settings.stripe_secret_key, options.api_base)
        # Set by the composition root's connect services: drops a connection from the memo.
        self.forget: Callable[[str], None] | None = None

    @property
    def page_url(self) -> str:
        return f"{self.options.base_url}/billing"

    def sync_unit(self, user_id: str) -> MemberBilling | None:
        """`accounts.sync_member` with this instance's options (a unit of work)."""
        o = self.options
        return sync_member(
            user_id,
            self.ctx.clock.now(),
            trial=o.trial,
            trial_connections=o.trial_connections,
            grace=o.grace,
        )

    async def after_change(self, member: MemberBilling | None) -> None:
        """This instance's proxy memo forgets what changed; suspensions go to the audit trail."""
        if member is None:
            return
        if self.forget is not None:
            for connection_id in member.changed:
                self.forget(connection_id)
        if member.suspended or member.restored:
            await audit.record(
                self.ctx,
                audit.SYSTEM,
                "billing.suspend",
                audit.Target("user", member.user_id),
                detail={"suspended": len(member.suspended), "restored": len(member.restored)},
            )

    async def sync(self, user_id: str) -> MemberBilling | None:
        member = await self.ctx.store.run(self.sync_unit, user_id)
        await self.after_change(member)
        return member

    async def sync_everyone(self) -> list[MemberBilling]:
        o = self.options
        members = await self.ctx.store.run(
            functools.partial(
                sync_all,
                self.ctx.clock.now(),
                trial=o.trial,
                trial_connections=o.trial_connections,
                grace=o.grace,
            )
        )
        for member in members:
            await self.after_change(member)
        return members

    async def check_allowance(self, user_id: str) -> None:
        """402 `payment_required` when a new connection would exceed the allowance."""
        member = await self.sync(user_id)
        if member is None or member.entitlement is None:
            return
        ent = member.entitlement
        if member.active >= ent.allowed:
            if ent.allowed == 0:
                why = "your trial has ended" if ent.status == "expired" else "no active plan"
            else:
                why = f"your plan allows {ent.allowed} connection(s)"
            raise payment_required(
                f"Connection limit reached: {why}. Choose a plan at {self.page_url}"
            )

    async def _member(self, user_id: str) -> tuple[MemberBilling, BillingAccount]:
        member = await self.sync(user_id)
        if member is None or member.entitlement is None or member.account is None:
            raise NotBilled("administrators are not billed")
        return member, member.account

    async def checkout(self, user_id: str, quantity: int) -> str:
        if not 1 <= quantity <= MAX_QUANTITY:
            raise InvalidQuantity(f"quantity must be between 1 and {MAX_QUANTITY}", "quantity")
        _, account = await self._member(user_id)
        customer = account.customer_id
        if customer is None:
            user = await self.ctx.store.run(lambda: User.get_by_id(user_id))
            created = await self.gateway.create_customer(email=user.email, user_id=user_id)
            customer = await self.ctx.store.run(_link_customer, user_id, created)
        return await self.gateway.checkout_url(
            customer=customer,
            user_id=user_id,
            price=self.options.price,
            quantity=quantity,
            success_url=f"{self.page_url}?checkout=done",
            cancel_url=self.page_url,
            maximum=MAX_QUANTITY,
        )

    async def portal(self, user_id: str) -> str:
        _, account = await self._member(user_id)
        if account.customer_id is None:
            raise NoSubscription("you have no subscription yet")
        return await self.gateway.portal_url(customer=account.customer_id, return_url=self.page_url)

    async def change_quantity(self, user_id: str, quantity: int) -> MemberBilling:
        if not 1 <= quantity <= MAX_QUANTITY:
            raise InvalidQuantity(f"quantity must be between 1 and {MAX_QUANTITY}", "quantity")
        _, account = await self._member(user_id)
        if account.subscription_id is None or account.subscription_status not in (
            "active",
            "trialing",
            "past_due",
        ):
            raise NoSubscription("you have no subscription to change")
        active = await self.ctx.store.run(count_active, user_id)
        if quantity < active:
            raise QuantityTooLow(
                f"you have {active} active connection(s): delete some first, or keep at "
                f"least {active}",
                "quantity",
            )
        updated = await self.gateway.set_quantity(account.subscription_id, quantity)
        now = self.ctx.clock.now()
        await self.ctx.store.run(apply_subscription_unit, updated, now)
        await audit.record(
            self.ctx,
            audit.user(user_id),
            "billing.quantity",
            audit.Target("user", user_id),
            detail={"quantity": quantity},
        )
        member = await self.sync(user_id)
        assert member is not None
        return member


def _link_customer(user_id: str, customer_id: str) -> str:
    """Keep the first customer linked to the member (a concurrent checkout's is ignored)."""
    BillingAccount.update(customer_id=customer_id).where(
        (BillingAccount.user == user_id) & BillingAccount.customer_id.is_null()
    ).execute()
    return str(BillingAccount.get(BillingAccount.user == user_id).customer_id)


def billing_service(ctx: AppContext) -> Billing | None:
    """This context's billing, or None when billing is off (then nothing is built)."""
    if not (ctx.settings.stripe_secret_key and ctx.settings.stripe_webhook_secret):
        return None
    key = id(ctx)
    found = _SERVICES.get(key)
    if found is None or found.ctx is not ctx:
        options = billing_options(ctx.settings)
        assert options is not None
        found = Billing(ctx, options)
        _SERVICES[key] = found
        weakref.finalize(ctx, _SERVICES.pop, key, None)
    return found
