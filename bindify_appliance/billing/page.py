"""The Billing page (`/billing`, DESIGN §11): plan, trial, usage, checkout and portal.

- `GET /billing` — the member's plan and usage; administrators are told they are not billed.
- `POST /billing/checkout` (`quantity`, CSRF) → 303 to Stripe Checkout;
- `POST /billing/portal` (CSRF) → 303 to Stripe's customer portal.
Errors (a 400 such as `no_subscription`, Stripe unreachable) re-render the page with the reason.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from bindify_appliance.billing.options import MAX_QUANTITY
from bindify_appliance.billing.service import Billing, billing_json, billing_service
from bindify_appliance.errors import HTTPFacingError
from bindify_appliance.http.base import CSP
from bindify_appliance.web.pages import UiPage

__all__ = ["BillingCheckoutPage", "BillingPage", "BillingPortalPage"]

STRIPE_PAGES = ("https://checkout.stripe.com", "https://billing.stripe.com")


class _Page(UiPage):
    @property
    def billing(self) -> Billing:
        found = billing_service(self.ctx)
        assert found is not None  # the routes exist only when billing is on
        return found

    def allow_redirect_to_stripe(self) -> None:
        """Browsers apply `form-action` to the redirect after a form: allow Stripe's hosted
        pages (Checkout, the portal) and, in tests or behind a gateway, the API base's origin."""
        origins = list(STRIPE_PAGES)
        base = self.billing.options.api_base
        if base:
            parts = urlsplit(base)
            origins.append(f"{parts.scheme}://{parts.netloc}")
        self.set_header(
            "Content-Security-Policy",
            CSP.replace("form-action 'self'", "form-action 'self' " + " ".join(origins)),
        )

    async def show(self, error: str | None = None, status: int = 200) -> None:
        who = self.member()
        self.allow_redirect_to_stripe()
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
