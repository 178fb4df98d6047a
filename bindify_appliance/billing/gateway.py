"""The Stripe API, through the `stripe` library, off the event loop (DESIGN §11).

`stripe` is imported only when a gateway is built (billing on). Calls run in the default
executor with the library's synchronous client, so a slow Stripe never blocks the loop; they go
to Stripe, or to `BINDIFY_STRIPE_API_BASE` when set. Objects come back as plain dicts.

Invariant: an error names the call and Stripe's error class, never a key or a payload.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from bindify_appliance.errors import UpstreamFailed

__all__ = ["StripeGateway", "gateway_error"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class StripeUnavailable(UpstreamFailed):
    """502: Stripe (or the configured gateway) failed or could not be reached."""

    code = "stripe_error"


def gateway_error() -> StripeUnavailable:
    return StripeUnavailable("the payment provider could not be reached; try again")


class StripeGateway:
    def __init__(self, secret_key: str, api_base: str = "") -> None:
        import stripe  # only with billing on: the executable carries it regardless

        self._stripe = stripe
        kwargs: dict[str, Any] = {"max_network_retries": 1}
        if api_base:
            kwargs["base_addresses"] = {"api": api_base}
        self._client = stripe.StripeClient(secret_key, **kwargs)

    async def _run(self, what: str, call: Callable[[], Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, call)
        except self._stripe.StripeError as exc:
            log.warning(
                "stripe call failed", extra={"call": what, "error_class": type(exc).__name__}
            )
            raise gateway_error() from None
        data = result.to_dict()
        return data if isinstance(data, dict) else {}

    async def create_customer(self, *, email: str, user_id: str) -> str:
        params: Any = {"email": email, "metadata": {"bindify_user_id": user_id}}
        created = await self._run(
            "customers.create", functools.partial(self._client.v1.customers.create, params)
        )
        return str(created["id"])

    async def checkout_url(
        self,
        *,
        customer: str,
        user_id: str,
        price: str,
        quantity: int,
        success_url: str,
        cancel_url: str,
        maximum: int,
    ) -> str:
        params: Any = {
            "mode": "subscription",
            "customer": customer,
            "client_reference_id": user_id,
            "line_items": [
                {
                    "price": price,
                    "quantity": quantity,
                    "adjustable_quantity": {"enabled": True, "minimum": 1, "maximum": maximum},
                }
            ],
            "subscription_data": {"metadata": {"bindify_user_id": user_id}},
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        session = await self._run(
            "checkout.sessions.create",
            functools.partial(self._client.v1.checkout.sessions.create, params),
        )
        return str(session["url"])

    async def portal_url(self, *, customer: str, return_url: str) -> str:
        params: Any = {"customer": customer, "return_url": return_url}
        session = await self._run(
            "billing_portal.sessions.create",
            functools.partial(self._client.v1.billing_portal.sessions.create, params),
        )
        return str(session["url"])

    async def subscription(self, subscription_id: str) -> dict[str, Any]:
        return await self._run(
            "subscriptions.retrieve",
            functools.partial(self._client.v1.subscriptions.retrieve, subscription_id),
        )

    async def set_quantity(self, subscription_id: str, quantity: int) -> dict[str, Any]:
        current = await self.subscription(subscription_id)
        items = current.get("items", {}).get("data", [])
        if not items:
            raise gateway_error()
        params: Any = {
            "items": [{"id": items[0]["id"], "quantity": quantity}],
            "proration_behavior": "create_prorations",
        }
        return await self._run(
            "subscriptions.update",
            functools.partial(self._client.v1.subscriptions.update, subscription_id, params),
        )

    def verify(self, payload: bytes, header: str, secret: str, tolerance: int) -> bool:
        """The `Stripe-Signature` header against the raw body (the library's own check)."""
        try:
            self._stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
        except (self._stripe.SignatureVerificationError, ValueError):
            return False
        return True
