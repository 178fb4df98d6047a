"""Billing against a running appliance: trial limits, checkout parameters, portal, quantity."""

from __future__ import annotations

from .conftest import PRICE, STRIPE_KEY, Billed


async def test_trial_allows_two_connections_then_402(billed: Billed) -> None:
    _, token = await billed.member("m@example.com")
    state = await billed.me(token)
    assert state["status"] == "trialing"
    assert state["connections_allowed"] == 2 and state["connections_active"] == 0
    assert state["trial_ends_at"] == "2026-12-04T10:00:00Z"  # 5 days after billing saw them
    assert (await billed.connect(token)).status == 201
    assert (await billed.connect(token)).status == 201
    refused = await billed.connect(token)
    assert refused.status == 402
    assert refused.json()["error"] == "payment_required"
    assert "/billing" in refused.json()["message"]
    assert len(await billed.statuses(token)) == 2  # nothing stored


async def test_admins_are_never_billed(billed: Billed) -> None:
    for _ in range(4):
        assert (await billed.connect(billed.admin_token)).status == 201
    state = await billed.me(billed.admin_token)
    assert state["status"] == "exempt" and state["connections_allowed"] is None
    refused = await billed.call("POST", "/api/v1/billing/checkout", billed.admin_token, {})
    assert refused.status == 400


async def test_checkout_parameters_and_customer_reuse(billed: Billed) -> None:
    user_id, token = await billed.member("m@example.com")
    first = await billed.call("POST", "/api/v1/billing/checkout", token, {"quantity": 3})
    assert first.status == 200, first.text
    assert first.json()["url"].startswith(billed.standin.url + "/pay/cs_")
    (customer_call,) = billed.standin.calls("/v1/customers")
    assert customer_call.form["email"] == "m@example.com"
    assert customer_call.form["metadata[bindify_user_id]"] == user_id
    assert customer_call.authorization == f"Bearer {STRIPE_KEY}"
    (session,) = billed.standin.calls("/v1/checkout/sessions")
    form = session.form
    assert form["mode"] == "subscription"
    assert form["client_reference_id"] == user_id
    assert form["customer"].startswith("cus_")
    assert form["line_items[0][price]"] == PRICE
    assert form["line_items[0][quantity]"] == "3"
    assert form["success_url"].startswith(billed.server.url + "/billing")
    # An empty body means one connection; the customer is reused, never created twice.
    again = await billed.call("POST", "/api/v1/billing/checkout", token)
    assert again.status == 200
    assert len(billed.standin.calls("/v1/customers")) == 1
    second = billed.standin.calls("/v1/checkout/sessions")[-1].form
    assert second["customer"] == form["customer"] and second["line_items[0][quantity]"] == "1"
    for bad in (0, 101, "3"):
        refused = await billed.call("POST", "/api/v1/billing/checkout", token, {"quantity": bad})
        assert refused.status == 400
    assert len(billed.standin.calls("/v1/checkout/sessions")) == 2


async def test_stripe_unreachable_is_502(billed: Billed) -> None:
    _, token = await billed.member("m@example.com")
    billed.standin.fail = True
    got = await billed.call("POST", "/api/v1/billing/checkout", token, {"quantity": 1})
    assert got.status == 502 and got.json()["error"] == "stripe_error"
    assert STRIPE_KEY not in got.text


async def test_portal_needs_a_customer(billed: Billed) -> None:
    user_id, token = await billed.member("m@example.com")
    refused = await billed.call("POST", "/api/v1/billing/portal", token)
    assert refused.status == 400 and refused.json()["error"] == "no_subscription"
    customer, _ = await billed.subscribe(user_id, token, 2)
    got = await billed.call("POST", "/api/v1/billing/portal", token)
    assert got.status == 200 and got.json()["url"].startswith(billed.standin.url + "/portal/")
    assert billed.standin.calls("/v1/billing_portal/sessions")[-1].form["customer"] == customer


async def test_subscribing_sets_the_allowance(billed: Billed) -> None:
    user_id, token = await billed.member("m@example.com")
    await billed.subscribe(user_id, token, 3)
    state = await billed.me(token)
    assert state["status"] == "active" and state["connections_allowed"] == 3
    assert state["trial_ends_at"] is None and state["access_until"] is None
    for _ in range(3):
        assert (await billed.connect(token)).status == 201
    assert (await billed.connect(token)).status == 402


async def test_quantity_change(billed: Billed) -> None:
    user_id, token = await billed.member("m@example.com")
    none = await billed.call("PATCH", "/api/v1/billing", token, {"quantity": 2})
    assert none.status == 400 and none.json()["error"] == "no_subscription"
    _, sub_id = await billed.subscribe(user_id, token, 3)
    for _ in range(3):
        assert (await billed.connect(token)).status == 201
    low = await billed.call("PATCH", "/api/v1/billing", token, {"quantity": 2})
    assert low.status == 400 and low.json()["error"] == "quantity_too_low"
    assert not [r for r in billed.standin.requests if r.method == "POST" and sub_id in r.path]
    more = await billed.call("PATCH", "/api/v1/billing", token, {"quantity": 5})
    assert more.status == 200, more.text
    assert more.json()["connections_allowed"] == 5
    (update,) = [r for r in billed.standin.requests if r.method == "POST" and sub_id in r.path]
    assert update.form["items[0][quantity]"] == "5"
    assert update.form["items[0][id]"] == f"si_{sub_id}"
    assert update.form["proration_behavior"] == "create_prorations"
    assert (await billed.me(token))["connections_allowed"] == 5
