"""Two appliances sharing PostgreSQL and Redis: the same Stripe event delivered to both, at the
same moment and again later, is processed exactly once (DESIGN §11: webhooks land anywhere)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from support.inprocess import add_token, add_user, api, start_appliance

from bindify_appliance.kv import open_kv
from bindify_appliance.store.models import BillingEvent

from .conftest import Billed, billing_settings, close_billed
from .stripe_standin import StripeStandIn, event, sign, subscription

DAY = 86400


async def test_same_event_on_two_instances_is_processed_once(
    tmp_path: Path, standin: StripeStandIn, pg_migrated_url: str, redis_url: str
) -> None:
    settings = billing_settings(standin, kv_url=redis_url)
    one = await start_appliance(tmp_path / "a", database_url=pg_migrated_url, **settings)
    two = await start_appliance(tmp_path / "b", database_url=pg_migrated_url, **settings)
    for server in (one, two):
        await server.ctx.kv.close()
        server.ctx.kv = open_kv(redis_url, server.clock)
    admin = add_user(one, "admin@example.com", "admin")
    a = Billed(one, standin, add_token(one, admin))
    b = Billed(two, standin, add_token(two, admin))
    try:
        user_id, token = await a.member("m@example.com")
        customer, sub_id = await a.subscribe(user_id, token, 2)
        # Both instances' clocks agree (ManualClock from the same start).
        one.clock.advance(60)
        two.clock.advance(60)
        bigger = subscription(sub_id, customer, quantity=7, period_end=a.now + 30 * DAY)
        body = event("evt_shared", "customer.subscription.updated", bigger, a.now)
        headers = {"Stripe-Signature": sign(body, settings["stripe_webhook_secret"])}

        async def deliver(server: object) -> str:
            got = await api(server, "POST", "/billing/webhook", raw_body=body, headers=headers)  # type: ignore[arg-type]
            assert got.status == 200, got.text
            return str(got.json()["outcome"])

        outcomes = await asyncio.gather(*(deliver(s) for s in (one, two, one, two)))
        assert sorted(outcomes) == ["duplicate", "duplicate", "duplicate", "processed"]
        assert await deliver(two) == "duplicate"
        rows = one.store.call(
            lambda: [
                (e.id, e.outcome)
                for e in BillingEvent.select().where(BillingEvent.id == "evt_shared")
            ]
        )
        assert rows == [("evt_shared", "processed")]
        # Both instances read the one state from the database.
        assert (await a.me(token))["connections_allowed"] == 7
        assert (await b.me(token))["connections_allowed"] == 7
    finally:
        await close_billed(a)
        await close_billed(b)
