"""Entitlement: what a member's billing state allows at a moment (DESIGN §11). Pure.

- Never subscribed: the trial decides — `trial_connections` until `trial_ends_at`, then 0.
- Subscribed (the member left the trial for good): the subscription alone decides —
  `active`/`trialing`: its quantity (until its cancel date when one is set);
  `past_due`: its quantity for `grace` after `past_due_since`, then 0;
  `canceled`: its quantity until the period end (`access_until`), then 0; anything else: 0.
- `until`: the moment the entitlement ends (FOREVER for a running subscription), the value
  the proxy compares with the time (`users.billing_until`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from bindify_appliance.store.models import BillingAccount

__all__ = ["FOREVER", "Entitlement", "evaluate"]

FOREVER: Final = datetime(9999, 1, 1, tzinfo=UTC)
RUNNING: Final = frozenset({"active", "trialing"})


@dataclass(frozen=True)
class Entitlement:
    status: str  # trialing | active | past_due | canceled | expired
    allowed: int
    until: datetime
    in_trial: bool
    trial_ends_at: datetime | None
    access_until: datetime | None

    def entitled(self, now: datetime) -> bool:
        return now < self.until


def evaluate(
    account: BillingAccount, now: datetime, *, trial_connections: int, grace: timedelta
) -> Entitlement:
    if account.subscribed_at is None:
        ends = account.trial_ends_at
        live = now < ends
        return Entitlement(
            status="trialing" if live else "expired",
            allowed=trial_connections if live else 0,
            until=ends,
            in_trial=live,
            trial_ends_at=ends,
            access_until=None,
        )
    status = account.subscription_status or ""
    quantity = max(0, account.quantity)
    until: datetime
    access_until: datetime | None = None
    if status in RUNNING:
        access_until = account.cancel_at
        until = access_until or FOREVER
        shown = "active"
    elif status == "past_due":
        since = account.past_due_since or now
        until = since + grace
        shown = "past_due"
    elif status == "canceled":
        access_until = account.cancel_at or account.current_period_end or now
        until = access_until
        shown = "canceled"
    else:
        until = account.state_at or now
        shown = "expired"
    live = now < until
    if not live and shown in ("active", "past_due"):
        shown = "canceled" if shown == "active" else "expired"
    return Entitlement(
        status=shown,
        allowed=quantity if live else 0,
        until=until,
        in_trial=False,
        trial_ends_at=None,
        access_until=access_until,
    )
