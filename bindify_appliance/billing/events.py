"""Stripe events applied to members' billing state, each event id exactly once (DESIGN §11).

`record_event` runs the whole of one event in one transaction that first inserts its id into
`billing_events`: a second delivery (here or on another instance) hits the primary key and
changes nothing; a failure rolls everything back, the id included, so Stripe's retry runs it
again. Order tolerance: a subscription state older (Stripe time) than the stored one is
recorded as `stale` and changes nothing.

Handled: `checkout.session.completed`, `customer.subscription.created|updated|deleted`,
`invoice.paid`, `invoice.payment_failed`; other types are recorded as `ignored`.
Only ids, types, times and outcomes are stored — never a payload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import peewee

from bindify_appliance.billing.accounts import MemberBilling, ensure_account
from bindify_appliance.store.models import BillingAccount, BillingEvent

__all__ = [
    "HANDLED",
    "Duplicate",
    "apply_invoice_unit",
    "apply_subscription_unit",
    "link_checkout_unit",
    "prune_events",
    "record_event",
    "then_sync",
]

HANDLED: Final = frozenset(
    {
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.paid",
        "invoice.payment_failed",
    }
)
SUBSCRIBING: Final = frozenset({"active", "trialing", "past_due"})

Sync = Callable[[str], MemberBilling | None]


class Duplicate(Exception):
    """The event id was already recorded."""


def _ts(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return None


def _id(value: Any) -> str | None:
    """A Stripe reference: an id string, or an expanded object's id."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def record_event(
    event_id: str,
    event_type: str,
    created: datetime,
    now: datetime,
    apply: Callable[[], tuple[str, MemberBilling | None]],
) -> tuple[str, MemberBilling | None]:
    """Insert the event id, apply it, store the outcome — one transaction.

    Raises Duplicate when the id is already recorded (nothing changes).
    """
    db = BillingEvent._meta.database
    try:
        with db.atomic():
            BillingEvent.insert(
                id=event_id, type=event_type, created_at=created, received_at=now, outcome="-"
            ).execute()
            outcome, member = apply()
            BillingEvent.update(outcome=outcome).where(BillingEvent.id == event_id).execute()
            return outcome, member
    except peewee.IntegrityError:
        raise Duplicate(event_id) from None


def _account_for(customer: str | None, user_hint: str | None) -> BillingAccount | None:
    if customer is not None:
        found = BillingAccount.get_or_none(BillingAccount.customer_id == customer)
        if found is not None:
            return found
    if user_hint:
        found = BillingAccount.get_or_none(BillingAccount.user == user_hint)
        if found is not None and (found.customer_id in (None, customer)):
            if customer is not None and found.customer_id is None:
                found.customer_id = customer
            return found
    return None


def _first_item(sub: Mapping[str, Any]) -> Mapping[str, Any]:
    items = sub.get("items")
    data = items.get("data") if isinstance(items, Mapping) else None
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        return data[0]
    return {}


def apply_subscription_unit(
    sub: Mapping[str, Any], at: datetime, *, deleted: bool = False
) -> tuple[str, str | None]:
    """Store a subscription's state (outcome, member id); caller holds the transaction."""
    metadata = sub.get("metadata")
    hint = metadata.get("bindify_user_id") if isinstance(metadata, Mapping) else None
    account = _account_for(_id(sub.get("customer")), hint if isinstance(hint, str) else None)
    if account is None:
        return "ignored", None
    if account.state_at is not None and at < account.state_at:
        return "stale", account.user_id
    item = _first_item(sub)
    status = "canceled" if deleted else str(sub.get("status") or "")
    quantity = item.get("quantity", sub.get("quantity", 0))
    period_end = _ts(item.get("current_period_end")) or _ts(sub.get("current_period_end"))
    cancel_at = _ts(sub.get("cancel_at"))
    if cancel_at is None and sub.get("cancel_at_period_end"):
        cancel_at = period_end
    if status == "canceled":
        cancel_at = period_end or _ts(sub.get("ended_at")) or cancel_at or at
    account.subscription_id = _id(sub.get("id")) or account.subscription_id
    account.subscription_status = status
    account.quantity = int(quantity) if isinstance(quantity, int) else 0
    account.current_period_end = period_end
    account.cancel_at = cancel_at
    if status == "past_due":
        account.past_due_since = account.past_due_since or at
    else:
        account.past_due_since = None
    if status in SUBSCRIBING and account.subscribed_at is None:
        account.subscribed_at = at
    account.state_at = at
    account.updated_at = at
    account.save()
    return "processed", account.user_id


def apply_invoice_unit(
    invoice: Mapping[str, Any], at: datetime, paid: bool
) -> tuple[str, str | None]:
    sub_id = _id(invoice.get("subscription"))
    if sub_id is None:
        parent = invoice.get("parent")
        details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
        if isinstance(details, Mapping):
            sub_id = _id(details.get("subscription"))
    account = None
    if sub_id is not None:
        account = BillingAccount.get_or_none(BillingAccount.subscription_id == sub_id)
    if account is None:
        return "ignored", None
    if account.state_at is not None and at < account.state_at:
        return "stale", account.user_id
    if paid:
        if account.subscription_status in ("past_due", "incomplete", "unpaid"):
            account.subscription_status = "active"
        account.past_due_since = None
    elif account.subscription_status != "canceled":
        account.subscription_status = "past_due"
        account.past_due_since = account.past_due_since or at
    account.state_at = at
    account.updated_at = at
    account.save()
    return "processed", account.user_id


def link_checkout_unit(
    session: Mapping[str, Any], at: datetime, trial: timedelta
) -> tuple[str, str | None]:
    """Link the session's customer to the member it names (`client_reference_id`)."""
    from bindify_appliance.store.models import User

    user_id = session.get("client_reference_id")
    customer = _id(session.get("customer"))
    if not isinstance(user_id, str) or User.get_or_none(User.id == user_id) is None:
        return "ignored", None
    account = ensure_account(user_id, at, trial)
    if customer is not None and account.customer_id is None:
        taken = BillingAccount.get_or_none(BillingAccount.customer_id == customer)
        if taken is None:
            account.customer_id = customer
            account.save()
    if customer is not None and account.customer_id != customer:
        return "ignored", None  # a session for another customer never takes over an account
    return "processed", user_id


def then_sync(result: tuple[str, str | None], sync: Sync) -> tuple[str, MemberBilling | None]:
    outcome, user_id = result
    if user_id is None or outcome != "processed":
        return outcome, None
    return outcome, sync(user_id)


def prune_events(now: datetime, keep: timedelta) -> int:
    return int(BillingEvent.delete().where(BillingEvent.received_at < now - keep).execute())
