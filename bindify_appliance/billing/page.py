"""The Billing page (`/billing`, DESIGN §11): plan, trial, usage, checkout and portal.

- `GET /billing` — the member's plan and usage; administrators are told they are not billed.
- `POST /billing/checkout` (`quantity`, CSRF) → 303 to Stripe Checkout;
- `POST /billing/portal` (CSRF) → 303 to Stripe's customer portal.
Errors (a 400 such as `no_subscription`, Stripe unreachable) re-render the page with the reason.
"""

from __future__ import annotations

from bindify_appliance.billing.options import MAX_QUANTITY
from bindify_appliance.billing.service import Billing, billing_json, billing_service
from bindify_appliance.errors import HTTPFacingError
from bindify_appliance.web.ui import UiPage

__all__ = ["BillingCheckoutPage", "BillingPage", "BillingPortalPage"]


class _Page(UiPage):
    @property
    def billing(self) -> Billing:
        found = billing_service(self.ctx)
        assert found is not None  # the routes exist only when billing is on
        return found

    async def show(self, error: str | None = None, status: int = 200) -> None:
        who = self.member()
        member = await self.billing.sync(who.user_id)
        state = billing_json(member) if member is not None else None
        has_customer = bool(member and member.account and member.account.customer_id)
        self.render_page(
            "billing.html",
            status=status,
            state=state,
            has_customer=has_customer,
            error=error,
            done=self.get_query_argument("checkout", "") == "done",
            max_quantity=MAX_QUANTITY,
        )


class BillingPage(_Page):
    async def get(self) -> None:
        await self.show()


class BillingCheckoutPage(_Page):
    async def post(self) -> None:
        who = self.member()
        text = self.form("quantity", 8) or "1"
        try:
            quantity = int(text)
            url = await self.billing.checkout(who.user_id, quantity)
        except ValueError:
            await self.show("The number of connections must be a whole number.", 400)
            return
        except HTTPFacingError as exc:
            await self.show(exc.public_message, exc.status)
            return
        self.redirect(url, status=303)


class BillingPortalPage(_Page):
    async def post(self) -> None:
        who = self.member()
        try:
            url = await self.billing.portal(who.user_id)
        except HTTPFacingError as exc:
            await self.show(exc.public_message, exc.status)
            return
        self.redirect(url, status=303)
