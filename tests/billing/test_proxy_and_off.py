"""The proxy's -32004 through a real MCP upstream, and billing off (no routes, no fields, the
proxy unaffected), and turning billing on for members who already have connections."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.inprocess import Response, add_token, add_user, api, fetch, start_appliance
from support.mcp_peers import UpstreamProcess

from bindify_appliance.store.models import Connection

from .conftest import Billed, billing_settings, close_billed, open_billed
from .stripe_standin import StripeStandIn, subscription

DAY = 86400
INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "billing-test", "version": "1"},
        },
    }
)
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def mcp_upstream() -> Iterator[UpstreamProcess]:
    proc = UpstreamProcess(sys.executable, "mcp2_server.py", "--stateless")
    proc.start()
    yield proc
    proc.close()


async def _call(url: str) -> Response:
    return await fetch(url, "POST", body=INITIALIZE, headers=MCP_HEADERS)


async def test_proxy_answers_32004_until_the_member_pays(
    tmp_path: Path, standin: StripeStandIn, mcp_upstream: UpstreamProcess
) -> None:
    b = await open_billed(tmp_path, standin)
    try:
        await b.add_open_service(mcp_upstream.origin + "/mcp")
        user_id, token = await b.member("m@example.com")
        made = await b.connect(token)
        secret_url = made.json()["secret_url"]
        served = await _call(secret_url)
        assert served.status == 200, served.text
        b.server.clock.advance(5 * DAY)  # the trial ends: no sync needed, the row says so
        refused = await _call(secret_url)
        assert refused.status == 403
        body = json.loads(refused.body)
        assert body["id"] == 7 and body["error"]["code"] == -32004
        assert f"{b.server.url}/billing" in body["error"]["message"]
        assert await b.statuses(token) == ["suspended"]
        await b.subscribe(user_id, token, 1)
        again = await _call(secret_url)
        assert again.status == 200, again.text
        # Beyond the allowance: the newest is suspended and refused; the oldest is served.
        b.server.clock.advance(1)
        customer = b.standin.calls("/v1/checkout/sessions")[-1].form["customer"]
        sub_id = next(iter(b.standin.subscriptions))
        await b.deliver(
            "customer.subscription.updated",
            subscription(sub_id, customer, quantity=2, period_end=b.now + 30 * DAY),
        )
        newer = await b.connect(token)
        assert newer.status == 201
        b.server.clock.advance(1)
        await b.deliver(
            "customer.subscription.updated",
            subscription(sub_id, customer, quantity=1, period_end=b.now + 30 * DAY),
        )
        assert (await _call(newer.json()["secret_url"])).status == 403
        assert (await _call(secret_url)).status == 200
    finally:
        await close_billed(b)


async def test_billing_off_has_no_routes_fields_or_limits(
    tmp_path: Path, mcp_upstream: UpstreamProcess
) -> None:
    server = await start_appliance(tmp_path, allow_private_upstreams=True)
    try:
        admin = add_user(server, "admin@example.com", "admin")
        admin_token = add_token(server, admin)
        member = add_user(server, "m@example.com")
        token = add_token(server, member)
        body = {
            "id": "open",
            "name": "Open",
            "mcp_url": mcp_upstream.origin + "/mcp",
            "auth": {"type": "none"},
        }
        assert (
            await api(server, "POST", "/api/v1/services", body, token=admin_token)
        ).status == 201
        urls = []
        for _ in range(4):
            made = await api(
                server, "POST", "/api/v1/connections", {"service": "open"}, token=token
            )
            assert made.status == 201
            urls.append(made.json()["secret_url"])
        me = await api(server, "GET", "/api/v1/me", token=token)
        assert "billing" not in me.json()
        for method, path in (
            ("POST", "/billing/webhook"),
            ("GET", "/billing"),
            ("POST", "/api/v1/billing/checkout"),
            ("POST", "/api/v1/billing/portal"),
            ("PATCH", "/api/v1/billing"),
        ):
            got = await api(server, method, path, {}, token=token)
            assert got.status == 404, (method, path, got.status)
        # A suspension left from when billing was on changes nothing at the proxy.
        server.store.call(
            lambda: Connection.update(billing_suspended_at=server.clock.now()).execute()
        )
        server.app.settings["runtime"].resolver.forget_all()
        assert (await _call(urls[0])).status == 200
    finally:
        await server.app.settings["runtime"].close()
        await server.close()


async def test_turning_billing_on_suspends_nobody(tmp_path: Path, standin: StripeStandIn) -> None:
    off = await start_appliance(tmp_path)
    admin = add_user(off, "admin@example.com", "admin")
    admin_token = add_token(off, admin)
    member = add_user(off, "m@example.com")
    token = add_token(off, member)
    body = {
        "id": "open",
        "name": "Open",
        "mcp_url": "https://open.example/mcp",
        "auth": {"type": "none"},
    }
    assert (await api(off, "POST", "/api/v1/services", body, token=admin_token)).status == 201
    for _ in range(4):
        assert (
            await api(off, "POST", "/api/v1/connections", {"service": "open"}, token=token)
        ).status == 201
    await off.app.settings["runtime"].close()
    await off.close()

    on = await start_appliance(tmp_path, **billing_settings(standin))
    b = Billed(on, standin, admin_token)
    try:
        on.clock.advance(3600)
        # Every existing connection stays usable during the trial that starts now.
        assert await b.statuses(token) == ["active"] * 4
        state = await b.me(token)
        assert state["status"] == "trialing" and state["connections_active"] == 4
        assert state["trial_ends_at"] == "2026-12-04T11:00:00Z"
        assert (await b.connect(token)).status == 402
        on.clock.advance(5 * DAY)
        assert await b.statuses(token) == ["suspended"] * 4
    finally:
        await close_billed(b)
