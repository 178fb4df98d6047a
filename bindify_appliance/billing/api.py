"""Billing's API (DESIGN §11), present only when billing is on.

- `POST /api/v1/billing/checkout` `{quantity?}` (1-100, default 1) → `{url}` of a Stripe
  Checkout Session (subscription mode, the member's customer reused);
- `POST /api/v1/billing/portal` → `{url}` (400 `no_subscription` without a customer);
- `PATCH /api/v1/billing` `{quantity}` → the `billing` object (400 `quantity_too_low` below
  the active connections, `no_subscription` without a running subscription).
Administrators are never billed (400 `not_billed`).
"""

from __future__ import annotations

from typing import Any

from bindify_appliance.api.base import operation
from bindify_appliance.api.schema import nullable, obj, string, validate_body
from bindify_appliance.api.services import ConnectApiHandler
from bindify_appliance.billing.options import MAX_QUANTITY
from bindify_appliance.billing.service import Billing, billing_json, billing_service

__all__ = ["BILLING", "BillingCheckoutHandler", "BillingHandler", "BillingPortalHandler"]

_QUANTITY: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY}
BILLING = obj(
    {
        "status": string(enum=("trialing", "active", "past_due", "canceled", "expired", "exempt")),
        "trial_ends_at": nullable(string()),
        "access_until": nullable(string()),
        "connections_allowed": nullable({"type": "integer"}),
        "connections_active": {"type": "integer"},
    },
    required=(
        "status",
        "trial_ends_at",
        "access_until",
        "connections_allowed",
        "connections_active",
    ),
)
_CHECKOUT = obj({"quantity": _QUANTITY})
_URL = obj({"url": string()}, required=("url",))


class _BillingApi(ConnectApiHandler):
    @property
    def billing(self) -> Billing:
        found = billing_service(self.ctx)
        assert found is not None  # the routes exist only when billing is on
        return found


class BillingCheckoutHandler(_BillingApi):
    @operation(
        "Start a subscription: the Stripe Checkout URL to visit",
        access="user",
        tag="billing",
        response=_URL,
        errors=(400, 502),
        description="Body `{quantity?}` (1-100, default 1); an empty body means 1.",
    )
    async def post(self) -> None:
        raw = self.request.body or b""
        body = validate_body(_CHECKOUT, self.json_body()) if raw.strip() else {}
        quantity = body.get("quantity", 1)
        url = await self.billing.checkout(self.user.user_id, int(quantity))
        self.write_json({"url": url})


class BillingPortalHandler(_BillingApi):
    @operation(
        "Manage the subscription: the Stripe customer portal URL to visit",
        access="user",
        tag="billing",
        response=_URL,
        errors=(400, 502),
    )
    async def post(self) -> None:
        self.write_json({"url": await self.billing.portal(self.user.user_id)})


class BillingHandler(_BillingApi):
    @operation(
        "Change the number of paid connections (prorated)",
        access="user",
        tag="billing",
        body=obj({"quantity": _QUANTITY}, required=("quantity",)),
        response=BILLING,
        errors=(400, 502),
    )
    async def patch(self) -> None:
        member = await self.billing.change_quantity(self.user.user_id, int(self.body["quantity"]))
        self.write_json(billing_json(member))
