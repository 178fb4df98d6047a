"""Fixtures for the billing tests: the Stripe stand-in and an in-process appliance with billing
on (real SQLite, ManualClock), members with personal tokens, signed webhook deliveries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.inprocess import Response, Server, add_token, add_user, api, start_appliance

from bindify_appliance.store.models import BillingEvent, Connection

from .stripe_standin import StripeStandIn, event, sign, subscription

STRIPE_KEY = "sk_test_" + "k" * 24
WEBHOOK_SECRET = "whsec_" + "w" * 32
PRICE = "price_test"


def billing_settings(standin: StripeStandIn, **overrides: Any) -> dict[str, Any]:
    return {
        "stripe_secret_key": STRIPE_KEY,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "stripe_price": PRICE,
        "stripe_api_base": standin.url,
        "allow_private_upstreams": True,
        **overrides,
    }


@dataclass
class Billed:
    server: Server
    standin: StripeStandIn
    admin_token: str
    _events: int = 0

    @property
    def now(self) -> int:
        return int(self.server.clock.time())

    async def member(self, email: str) -> tuple[str, str]:
        user_id = add_user(self.server, email)
        return user_id, add_token(self.server, user_id)

    async def call(self, method: str, path: str, token: str, body: Any = None) -> Response:
        return await api(self.server, method, path, body, token=token)

    async def server_api(self, method: str, path: str) -> Response:
        return await api(self.server, method, path)

    async def me(self, token: str) -> Any:
        got = await self.call("GET", "/api/v1/me", token)
        assert got.status == 200, got.text
        return got.json().get("billing")

    async def add_open_service(self, mcp_url: str = "https://open.example/mcp") -> None:
        body = {"id": "open", "name": "Open", "mcp_url": mcp_url, "auth": {"type": "none"}}
        made = await self.call("POST", "/api/v1/services", self.admin_token, body)
        assert made.status == 201, made.text

    async def connect(self, token: str) -> Response:
        return await self.call("POST", "/api/v1/connections", token, {"service": "open"})

    async def statuses(self, token: str) -> list[str]:
        listed = await self.call("GET", "/api/v1/connections", token)
        return [c["status"] for c in listed.json()["items"]]

    async def deliver(
        self,
        kind: str,
        obj: dict[str, Any],
        *,
        event_id: str | None = None,
        created: int | None = None,
        secret: str = WEBHOOK_SECRET,
        timestamp: int | None = None,
        payload: bytes | None = None,
    ) -> Response:
        if event_id is None:
            self._events += 1
            event_id = f"evt_{self._events:04d}"
        body = payload or event(event_id, kind, obj, self.now if created is None else created)
        headers = {
            "Stripe-Signature": sign(body, secret, timestamp),
            "Content-Type": "application/json",
        }
        return await api(self.server, "POST", "/billing/webhook", raw_body=body, headers=headers)

    async def subscribe(
        self, user_id: str, token: str, quantity: int, *, days: int = 30
    ) -> tuple[str, str]:
        """Checkout, then Stripe's `checkout.session.completed`: the member subscribes."""
        got = await self.call("POST", "/api/v1/billing/checkout", token, {"quantity": quantity})
        assert got.status == 200, got.text
        customer = self.standin.calls("/v1/checkout/sessions")[-1].form["customer"]
        sub_id = self.standin.next_id("sub")
        self.standin.subscriptions[sub_id] = subscription(
            sub_id, customer, quantity=quantity, period_end=self.now + days * 86400
        )
        session = {
            "id": "cs_done",
            "object": "checkout.session",
            "client_reference_id": user_id,
            "customer": customer,
            "subscription": sub_id,
        }
        done = await self.deliver("checkout.session.completed", session)
        assert done.status == 200, done.text
        return customer, sub_id

    def events(self) -> list[tuple[str, str]]:
        return self.server.store.call(
            lambda: [(e.id, e.outcome) for e in BillingEvent.select().order_by(BillingEvent.id)]
        )

    def suspended_ids(self) -> list[str]:
        return self.server.store.call(
            lambda: [
                c.id
                for c in Connection.select().where(Connection.billing_suspended_at.is_null(False))
            ]
        )


@pytest.fixture
async def standin() -> AsyncIterator[StripeStandIn]:
    s = await StripeStandIn().start()
    yield s
    await s.stop()


async def open_billed(tmp_path: Path, standin: StripeStandIn, **overrides: Any) -> Billed:
    tmp_path.mkdir(parents=True, exist_ok=True)
    server = await start_appliance(tmp_path, **billing_settings(standin, **overrides))
    admin = add_user(server, "admin@example.com", "admin")
    return Billed(server, standin, add_token(server, admin))


async def close_billed(billed: Billed) -> None:
    await billed.server.app.settings["runtime"].close()
    await billed.server.close()


@pytest.fixture
async def billed(tmp_path: Path, standin: StripeStandIn) -> AsyncIterator[Billed]:
    b = await open_billed(tmp_path, standin)
    await b.add_open_service()
    yield b
    await close_billed(b)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
