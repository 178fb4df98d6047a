"""Billing's options, read from `Settings` (DESIGN §11).

Invariant: billing is on exactly when both Stripe secrets are set (config.py refuses one
without the other, and a missing price).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from bindify_appliance.config import Settings

__all__ = ["MAX_QUANTITY", "BillingOptions", "billing_enabled", "billing_options"]

MAX_QUANTITY: Final = 100
EVENT_RETENTION: Final = timedelta(days=90)
SIGNATURE_TOLERANCE: Final = 300
WEBHOOK_MAX_BODY: Final = 1024 * 1024


def billing_enabled(settings: Settings) -> bool:
    return bool(settings.stripe_secret_key and settings.stripe_webhook_secret)


@dataclass(frozen=True)
class BillingOptions:
    """What billing needs from the configuration; `repr` never shows a secret."""

    price: str
    api_base: str
    base_url: str
    trial: timedelta
    trial_connections: int
    grace: timedelta
    delete_suspended_after: timedelta | None


def billing_options(settings: Settings) -> BillingOptions | None:
    """The options when billing is on, else None."""
    if not billing_enabled(settings):
        return None
    days = settings.billing_delete_suspended_days
    return BillingOptions(
        price=settings.stripe_price,
        api_base=settings.stripe_api_base,
        base_url=settings.base_url,
        trial=timedelta(days=settings.billing_trial_days),
        trial_connections=settings.billing_trial_connections,
        grace=timedelta(days=settings.billing_grace_days),
        delete_suspended_after=timedelta(days=days) if days else None,
    )
