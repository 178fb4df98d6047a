"""Billing's jobs (members seen, time applied, event pruning, optional deletion) and the rules
every billing route keeps (sign-in, CSRF with a session, members only)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from support.inprocess import add_user, session_browser

from bindify_appliance.jobs import standard_jobs
from bindify_appliance.store.models import BillingAccount, BillingEvent, Connection, User

from .conftest import Billed, close_billed, open_billed
from .stripe_standin import StripeStandIn

DAY = 86400


async def _run(billed: Billed, name: str) -> str:
    (job,) = [j for j in standard_jobs(billed.server.ctx) if j.name == name]
    detail = await job.run()
    assert detail is not None
    return detail


async def test_sync_job_starts_trials_and_ends_them(billed: Billed) -> None:
    member = add_user(billed.server, "quiet@example.com")
    assert billed.server.store.call(lambda: BillingAccount.select().count()) == 0
    await _run(billed, "billing-sync")
    account = billed.server.store.call(lambda: BillingAccount.get_by_id(member))
    assert account.trial_ends_at == billed.server.clock.now() + timedelta(days=5)
    billed.server.clock.advance(5 * DAY)
    await _run(billed, "billing-sync")
    until = billed.server.store.call(lambda: User.get_by_id(member).billing_until)
    assert until == account.trial_ends_at
    # Admins are never billed.
    admins = billed.server.store.call(
        lambda: [u.billing_until for u in User.select().where(User.role == "admin")]
    )
    assert admins == [None]


async def test_demoted_admin_starts_a_trial(billed: Billed) -> None:
    boss = add_user(billed.server, "boss@example.com", "admin")
    await _run(billed, "billing-sync")
    billed.server.clock.advance(30 * DAY)
    billed.server.store.call(lambda: User.update(role="member").where(User.id == boss).execute())
    await _run(billed, "billing-sync")
    account = billed.server.store.call(lambda: BillingAccount.get_by_id(boss))
    assert account.trial_ends_at == billed.server.clock.now() + timedelta(days=5)


async def test_events_older_than_90_days_are_pruned(billed: Billed) -> None:
    await billed.deliver("customer.created", {"id": "cus_1"}, event_id="evt_old")
    billed.server.clock.advance(89 * DAY)
    await billed.deliver("customer.created", {"id": "cus_2"}, event_id="evt_new")
    billed.server.clock.advance(2 * DAY)
    assert "1 billing event" in await _run(billed, "billing-events-prune")
    ids = billed.server.store.call(lambda: [e.id for e in BillingEvent.select()])
    assert ids == ["evt_new"]


async def test_suspended_connections_are_kept_unless_deletion_is_set(
    tmp_path: Path, standin: StripeStandIn
) -> None:
    b = await open_billed(tmp_path / "keep", standin)
    try:
        await b.add_open_service()
        _, token = await b.member("m@example.com")
        await b.connect(token)
        b.server.clock.advance(400 * DAY)
        await _run(b, "billing-sync")
        assert [j.name for j in standard_jobs(b.server.ctx) if "delete" in j.name] == []
        assert len(b.suspended_ids()) == 1
    finally:
        await close_billed(b)
    b = await open_billed(tmp_path / "delete", standin, billing_delete_suspended_days=30)
    try:
        await b.add_open_service()
        _, token = await b.member("m@example.com")
        await b.connect(token)
        b.server.clock.advance(5 * DAY)
        await _run(b, "billing-sync")
        b.server.clock.advance(29 * DAY)
        assert "0 long-suspended" in await _run(b, "billing-delete-suspended")
        b.server.clock.advance(2 * DAY)
        assert "1 long-suspended" in await _run(b, "billing-delete-suspended")
        assert b.server.store.call(lambda: Connection.select().count()) == 0
    finally:
        await close_billed(b)


async def test_billing_routes_need_sign_in_and_csrf(billed: Billed) -> None:
    member = add_user(billed.server, "m@example.com")
    for method, path in (
        ("POST", "/api/v1/billing/checkout"),
        ("POST", "/api/v1/billing/portal"),
        ("PATCH", "/api/v1/billing"),
    ):
        anonymous = await billed.server_api(method, path)
        assert anonymous.status == 401, (method, path)
    browser = await session_browser(billed.server, member)
    # A signed-in browser without the X-XSRFToken header is refused and nothing reaches Stripe.
    forged = await browser.api("POST", "/api/v1/billing/checkout", {"quantity": 1}, csrf=False)
    assert forged.status == 403
    assert billed.standin.calls("/v1/checkout/sessions") == []
    ok = await browser.api("POST", "/api/v1/billing/checkout", {"quantity": 1})
    assert ok.status == 200
    page = await browser.get("/billing")
    assert page.status == 200 and "Billing" in page.text
    # The page form without its token is refused too.
    refused = await browser.post("/billing/checkout", {"quantity": "1"}, xsrf=False)
    assert refused.status == 403
    assert len(billed.standin.calls("/v1/checkout/sessions")) == 1
    # Signed out, the page sends the browser to sign in.
    anonymous_page = await billed.server_api("GET", "/billing")
    assert anonymous_page.status == 302


async def test_openapi_lists_billing_only_when_on(billed: Billed) -> None:
    got = await billed.call("GET", "/api/v1/openapi.json", billed.admin_token)
    assert got.status == 200, got.text
    paths = got.json()["paths"]
    assert {"/api/v1/billing", "/api/v1/billing/checkout", "/api/v1/billing/portal"} <= set(paths)
    assert (
        "billing"
        in paths["/api/v1/me"]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
            "properties"
        ]
    )


async def test_metrics_count_webhooks_and_members_by_status(billed: Billed) -> None:
    await billed.deliver("customer.created", {"id": "cus_1"}, event_id="evt_m")
    await billed.deliver("customer.created", {"id": "cus_1"}, event_id="evt_m")
    await billed.deliver("customer.created", {"id": "cus_2"}, secret="whsec_wrong")
    add_user(billed.server, "m@example.com")
    await _run(billed, "billing-sync")
    text = billed.server.ctx.metrics.exposition().decode()
    for line in (
        'bindify_billing_webhooks_total{outcome="ignored"} 1.0',
        'bindify_billing_webhooks_total{outcome="duplicate"} 1.0',
        'bindify_billing_webhooks_total{outcome="rejected"} 1.0',
        'bindify_billing_members{status="trialing"} 1.0',
        'bindify_billing_members{status="active"} 0.0',
    ):
        assert line in text, line


async def test_a_role_change_applies_billing_at_once(billed: Billed) -> None:
    """Demoting an administrator starts their trial without waiting for the sync job, and
    promoting a member ends their billing at once (the proxy reads `billing_until`)."""
    boss = add_user(billed.server, "boss@example.com", "admin")
    demoted = await billed.call(
        "PATCH", f"/api/v1/users/{boss}", billed.admin_token, {"role": "member"}
    )
    assert demoted.status == 200, demoted.text
    trial_end = billed.server.clock.now() + timedelta(days=5)
    account = billed.server.store.call(
        lambda: BillingAccount.get_or_none(BillingAccount.user == boss)
    )
    assert account is not None and account.trial_ends_at == trial_end
    assert billed.server.store.call(lambda: User.get_by_id(boss).billing_until) == trial_end
    promoted = await billed.call(
        "PATCH", f"/api/v1/users/{boss}", billed.admin_token, {"role": "admin"}
    )
    assert promoted.status == 200, promoted.text
    assert billed.server.store.call(lambda: User.get_by_id(boss).billing_until) is None
