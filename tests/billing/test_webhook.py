"""The Stripe webhook against a running appliance: signatures, every handled event, exactly
once, order tolerance, grace, suspension and reactivation order, cancellation."""

from __future__ import annotations

import pytest
from support.inprocess import api

from .conftest import Billed
from .stripe_standin import event, sign, subscription

DAY = 86400


async def test_bad_signatures_change_nothing(billed: Billed) -> None:
    user_id, token = await billed.member("m@example.com")
    customer, sub_id = await billed.subscribe(user_id, token, 3)
    before = billed.events()
    canceled = subscription(sub_id, customer, status="canceled", period_end=billed.now)
    body = event("evt_attack", "customer.subscription.deleted", canceled, billed.now)
    attempts = [
        {"Stripe-Signature": sign(body, "whsec_wrong")},  # another secret
        {"Stripe-Signature": sign(body, "whsec_" + "w" * 32, billed_now_real() - 301)},  # stale
        {"Stripe-Signature": "t=1,v1=" + "0" * 64},
        {"Stripe-Signature": ""},
        {},
    ]
    for headers in attempts:
        got = await api(billed.server, "POST", "/billing/webhook", raw_body=body, headers=headers)
        assert got.status == 400, got.text
    # A valid signature over another body does not sign this one.
    other = event("evt_other", "invoice.paid", {}, billed.now)
    forged = {"Stripe-Signature": sign(other, "whsec_" + "w" * 32)}
    got = await api(billed.server, "POST", "/billing/webhook", raw_body=body, headers=forged)
    assert got.status == 400
    assert billed.events() == before
    assert (await billed.me(token))["status"] == "active"


def billed_now_real() -> int:
    import time

    return int(time.time())


async def test_body_over_one_mebibyte_is_refused(billed: Billed) -> None:
    body = b'{"id": "evt_big", "pad": "' + b"x" * (1024 * 1024) + b'"}'
    got = await api(
        billed.server,
        "POST",
        "/billing/webhook",
        raw_body=body,
        headers={"Stripe-Signature": sign(body, "whsec_" + "w" * 32)},
    )
    assert got.status == 413
    assert billed.events() == []


async def test_webhook_needs_no_csrf_but_nothing_else_is_exempt(billed: Billed) -> None:
    # The page routes refuse a POST without the session's CSRF token.
    got = await api(billed.server, "POST", "/billing/checkout", raw_body=b"quantity=1")
    assert got.status in (302, 303, 403)


async def test_unhandled_types_are_recorded_and_ignored(billed: Billed) -> None:
    got = await billed.deliver("customer.created", {"id": "cus_x"}, event_id="evt_u")
    assert got.status == 200 and got.json()["outcome"] == "ignored"
    assert billed.events() == [("evt_u", "ignored")]


async def test_each_event_is_processed_once(billed: Billed) -> None:
    user_id, token = await billed.member("m@example.com")
    customer, sub_id = await billed.subscribe(user_id, token, 3)
    more = subscription(sub_id, customer, quantity=4, period_end=billed.now + 30 * DAY)
    first = await billed.deliver("customer.subscription.updated", more, event_id="evt_q4")
    assert first.json()["outcome"] == "processed"
    # Stripe retries with the same id: nothing changes, even if the body differs.
    less = subscription(sub_id, customer, quantity=1, period_end=billed.now + 30 * DAY)
    again = await billed.deliver(
        "customer.subscription.updated", less, event_id="evt_q4", created=billed.now + 5
    )
    assert again.status == 200 and again.json()["outcome"] == "duplicate"
    assert (await billed.me(token))["connections_allowed"] == 4


async def test_out_of_order_update_is_recorded_and_ignored(billed: Billed) -> None:
    user_id, token = await billed.member("m@example.com")
    customer, sub_id = await billed.subscribe(user_id, token, 3)
    billed.server.clock.advance(60)
    newer = subscription(sub_id, customer, quantity=5, period_end=billed.now + 30 * DAY)
    assert (await billed.deliver("customer.subscription.updated", newer)).status == 200
    older = subscription(sub_id, customer, quantity=2, period_end=billed.now + 30 * DAY)
    late = await billed.deliver(
        "customer.subscription.updated", older, event_id="evt_late", created=billed.now - 30
    )
    assert late.status == 200 and late.json()["outcome"] == "stale"
    assert ("evt_late", "stale") in billed.events()
    assert (await billed.me(token))["connections_allowed"] == 5


async def test_processing_failure_answers_500_and_the_retry_runs(billed: Billed) -> None:
    user_id, token = await billed.member("m@example.com")
    await billed.call("POST", "/api/v1/billing/checkout", token, {"quantity": 2})
    customer = billed.standin.calls("/v1/checkout/sessions")[-1].form["customer"]
    session = {
        "id": "cs_1",
        "client_reference_id": user_id,
        "customer": customer,
        "subscription": "sub_later",
    }
    failed = await billed.deliver("checkout.session.completed", session, event_id="evt_c")
    assert failed.status == 500 and failed.json()["error"] == "processing_failed"
    assert billed.events() == []
    billed.standin.subscriptions["sub_later"] = subscription(
        "sub_later", customer, quantity=2, period_end=billed.now + 30 * DAY
    )
    retried = await billed.deliver("checkout.session.completed", session, event_id="evt_c")
    assert retried.status == 200 and retried.json()["outcome"] == "processed"
    assert (await billed.me(token))["status"] == "active"


async def test_subscription_created_then_checkout_completed(billed: Billed) -> None:
    _, token = await billed.member("m@example.com")
    await billed.call("POST", "/api/v1/billing/checkout", token, {"quantity": 2})
    customer = billed.standin.calls("/v1/checkout/sessions")[-1].form["customer"]
    sub = subscription("sub_c", customer, quantity=2, period_end=billed.now + 30 * DAY)
    created = await billed.deliver("customer.subscription.created", sub)
    assert created.json()["outcome"] == "processed"
    state = await billed.me(token)
    assert state["status"] == "active" and state["connections_allowed"] == 2
    # An event for a customer nobody has is recorded and ignored.
    stranger = subscription("sub_s", "cus_nobody", quantity=9, period_end=billed.now + DAY)
    got = await billed.deliver("customer.subscription.created", stranger)
    assert got.json()["outcome"] == "ignored"


async def test_past_due_grace_then_expiry_then_paid(billed: Billed) -> None:
    user_id, token = await billed.member("m@example.com")
    _, sub_id = await billed.subscribe(user_id, token, 2)
    assert (await billed.connect(token)).status == 201
    assert (await billed.connect(token)).status == 201
    invoice = {"id": "in_1", "object": "invoice", "subscription": sub_id}
    billed.server.clock.advance(10)
    failed = await billed.deliver("invoice.payment_failed", invoice)
    assert failed.json()["outcome"] == "processed"
    state = await billed.me(token)
    assert state["status"] == "past_due" and state["connections_allowed"] == 2
    billed.server.clock.advance(3 * DAY - 20)  # still within the 3-day grace
    assert (await billed.me(token))["status"] == "past_due"
    assert await billed.statuses(token) == ["active", "active"]
    billed.server.clock.advance(20)
    state = await billed.me(token)
    assert state["status"] == "expired" and state["connections_allowed"] == 0
    assert await billed.statuses(token) == ["suspended", "suspended"]
    assert (await billed.connect(token)).status == 402
    # Newer API versions name the subscription under `parent`.
    paid = {
        "id": "in_2",
        "object": "invoice",
        "parent": {"subscription_details": {"subscription": sub_id}},
    }
    assert (await billed.deliver("invoice.paid", paid)).json()["outcome"] == "processed"
    assert (await billed.me(token))["status"] == "active"
    assert await billed.statuses(token) == ["active", "active"]


async def test_zero_grace_days(tmp_path: object, standin: object) -> None:
    from .conftest import close_billed, open_billed

    b = await open_billed(tmp_path, standin, billing_grace_days=0)  # type: ignore[arg-type]
    try:
        await b.add_open_service()
        user_id, token = await b.member("m@example.com")
        _, sub_id = await b.subscribe(user_id, token, 1)
        b.server.clock.advance(1)
        await b.deliver("invoice.payment_failed", {"id": "in_1", "subscription": sub_id})
        assert (await b.me(token))["status"] == "expired"
    finally:
        await close_billed(b)


async def test_suspension_newest_first_and_return_oldest_first(billed: Billed) -> None:
    user_id, token = await billed.member("m@example.com")
    customer, sub_id = await billed.subscribe(user_id, token, 4)
    ids = []
    for _ in range(4):
        made = await billed.connect(token)
        ids.append(made.json()["connection"]["id"])
        billed.server.clock.advance(1)
    one = subscription(sub_id, customer, quantity=1, period_end=billed.now + 30 * DAY)
    await billed.deliver("customer.subscription.updated", one)
    assert sorted(billed.suspended_ids()) == sorted(ids[1:])
    assert await billed.statuses(token) == ["active", "suspended", "suspended", "suspended"]
    billed.server.clock.advance(1)
    three = subscription(sub_id, customer, quantity=3, period_end=billed.now + 30 * DAY)
    await billed.deliver("customer.subscription.updated", three)
    assert billed.suspended_ids() == [ids[3]]
    # Suspended connections count for nothing: a free slot is used by a new one only when
    # the allowance has room beyond the active ones.
    assert (await billed.connect(token)).status == 402
    # Suspension keeps the connection whole; deleting is the member's choice.
    assert (await billed.call("GET", f"/api/v1/connections/{ids[3]}", token)).status == 200


async def test_cancellation_keeps_access_until_the_period_end(billed: Billed) -> None:
    user_id, token = await billed.member("m@example.com")
    customer, sub_id = await billed.subscribe(user_id, token, 2, days=10)
    assert (await billed.connect(token)).status == 201
    end = billed.now + 10 * DAY
    billed.server.clock.advance(1)
    ending = subscription(sub_id, customer, quantity=2, period_end=end, cancel_at_period_end=True)
    await billed.deliver("customer.subscription.updated", ending)
    state = await billed.me(token)
    assert state["status"] == "active" and state["access_until"] is not None
    billed.server.clock.advance(1)
    gone = subscription(sub_id, customer, status="canceled", quantity=2, period_end=end)
    deleted = await billed.deliver("customer.subscription.deleted", gone)
    assert deleted.json()["outcome"] == "processed"
    state = await billed.me(token)
    assert state["status"] == "canceled" and state["connections_allowed"] == 2
    assert await billed.statuses(token) == ["active"]
    billed.server.clock.advance(10 * DAY)
    state = await billed.me(token)
    assert state["connections_allowed"] == 0
    assert await billed.statuses(token) == ["suspended"]


@pytest.mark.parametrize("days", [5])
async def test_trial_end_suspends_and_subscribing_restores(billed: Billed, days: int) -> None:
    user_id, token = await billed.member("m@example.com")
    await billed.connect(token)
    await billed.connect(token)
    billed.server.clock.advance(days * DAY)
    assert (await billed.me(token))["status"] == "expired"
    assert await billed.statuses(token) == ["suspended", "suspended"]
    await billed.subscribe(user_id, token, 1)
    assert await billed.statuses(token) == ["active", "suspended"]
