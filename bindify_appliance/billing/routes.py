"""Billing's routes: none at all when billing is off (DESIGN §11)."""

from __future__ import annotations

from tornado.routing import URLSpec

from bindify_appliance.billing.api import (
    BillingCheckoutHandler,
    BillingHandler,
    BillingPortalHandler,
)
from bindify_appliance.billing.page import BillingCheckoutPage, BillingPage, BillingPortalPage
from bindify_appliance.billing.service import billing_service
from bindify_appliance.billing.webhook import WebhookHandler
from bindify_appliance.context import AppContext
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices

__all__ = ["billing_routes"]


def billing_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    billing = billing_service(ctx)
    if billing is None:
        return []
    # Billing's changes drop the connections concerned from this instance's proxy memo.
    billing.forget = services.forget
    return [
        route("/billing/webhook", WebhookHandler, ctx),
        route("/billing", BillingPage, ctx, services=services),
        route("/billing/checkout", BillingCheckoutPage, ctx, services=services),
        route("/billing/portal", BillingPortalPage, ctx, services=services),
        route("/api/v1/billing", BillingHandler, ctx, services=services),
        route("/api/v1/billing/checkout", BillingCheckoutHandler, ctx, services=services),
        route("/api/v1/billing/portal", BillingPortalHandler, ctx, services=services),
    ]
