"""Changing where credentials go needs the member (DESIGN §9): an admin moving a service.

The appliance runs in process on loopback with its own `/mcp/` routes and the real resolver
(1-second memo; the `ManualClock` never advances here, so a memo entry warmed before the change
is still fresh after it). The service's real upstream holds the member's key; the attacker's
address is a `RawUpstream` that records every request it receives. After the admin's PATCH the
member's next call must answer -32003 and the attacker must have received nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from peers.oauth_upstream import OAuthUpstream
from peers.raw_upstream import RawUpstream
from support.inprocess import Appliance, api, start_appliance

KEY = "good-key-0123456789"
MOVED_REASON = "the service's address changed"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}


async def call(app: Appliance, method: str, path: str, token: str, body: Any = None) -> Any:
    return await api(app, method, path, body, token=token)


async def rpc(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """One JSON-RPC `initialize` through the appliance's proxy; (HTTP status, answer)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url,
            json=INITIALIZE,
            headers={"Accept": "application/json, text/event-stream", **(headers or {})},
        ) as answer,
    ):
        text = await answer.text()
        if answer.headers.get("Content-Type", "").startswith("text/event-stream"):
            data = [ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:")]
            return answer.status, json.loads(data[-1])
        return answer.status, json.loads(text) if text else {}


@pytest.fixture
async def appliance(tmp_path: Path) -> AsyncIterator[Appliance]:
    """The composition root's own proxy routes and resolver (real 1-second memo)."""
    app = await start_appliance(tmp_path, allow_private_upstreams=True)
    yield app
    await app.close()
    # The composition root's own upstream client (the harness closes only its side proxy's).
    await app.http.request_callback.settings["runtime"].upstream.close()  # type: ignore[union-attr]


@pytest.fixture
async def attacker() -> AsyncIterator[RawUpstream]:
    up = RawUpstream()
    await up.start()
    yield up
    await up.stop()


@pytest.fixture
async def keyed(appliance: Appliance, admin_token: str) -> AsyncIterator[OAuthUpstream]:
    """An admin-added API-key service on a real local MCP upstream that accepts KEY."""
    async with OAuthUpstream(api_keys={"Bearer " + KEY}) as up:
        body = {
            "id": "keyed",
            "name": "Keyed",
            "mcp_url": up.mcp_url,
            "auth": {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
        }
        made = await call(appliance, "POST", "/api/v1/services", admin_token, body)
        assert made.status == 201, made.text
        yield up


async def _connect(app: Appliance, token: str, mode: str) -> dict[str, Any]:
    made = await call(
        app,
        "POST",
        "/api/v1/connections",
        token,
        {"service": "keyed", "api_key": KEY, "key_storage_mode": mode},
    )
    assert made.status == 201, made.text
    answer: dict[str, Any] = made.json()
    return answer


def _leaked(attacker: RawUpstream) -> list[str]:
    return [
        f"{name}: …"
        for seen in attacker.requests
        for name, value in seen.headers
        if KEY in value or "bnd_" in value
    ] + [seen.query for seen in attacker.requests if KEY in seen.query]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param("mcp_url", id="mcp_url"),
        pytest.param("transport", id="transport"),
        pytest.param("header", id="injection-header"),
    ],
)
async def test_an_admin_moving_a_service_sends_no_credential_to_the_new_address(
    appliance: Appliance,
    admin_token: str,
    member_token: str,
    keyed: OAuthUpstream,
    attacker: RawUpstream,
    change: str,
) -> None:
    managed = await _connect(appliance, member_token, "managed")
    zero = await _connect(appliance, member_token, "zero_knowledge")
    # Both work, and the resolver's memo now holds both rows (the clock never moves).
    for made in (managed, zero):
        status, answer = await rpc(made["secret_url"])
        assert status == 200 and "result" in answer, answer
    assert keyed.mcp_authorizations[-1] == "Bearer " + KEY

    body: dict[str, Any] = {"mcp_url": attacker.url("/echo")}
    if change == "transport":
        body["transport"] = "sse"
        body["mcp_url"] = attacker.url("/legacy/sse")
    if change == "header":
        body = {
            "mcp_url": attacker.url("/echo"),
            "auth": {"type": "api_key", "header": "X-Api-Key", "prefix": ""},
        }
    moved = await call(appliance, "PATCH", "/api/v1/services/keyed", admin_token, body)
    assert moved.status == 200, moved.text

    for made in (managed, zero):
        for url, headers in (
            (made["secret_url"], {}),
            (appliance.url + "/mcp/keyed", {"Authorization": f"Bearer {made['api_key']}"}),
        ):
            status, answer = await rpc(url, headers)
            assert status == 200, answer
            assert answer.get("id") == 7, answer
            assert answer.get("error", {}).get("code") == -32003, answer
            assert f"/connections/{made['connection']['id']}" in answer["error"]["message"]
    assert attacker.requests == [], [(r.method, r.path) for r in attacker.requests]
    assert _leaked(attacker) == []

    for made in (managed, zero):
        cid = made["connection"]["id"]
        got = await call(appliance, "GET", f"/api/v1/connections/{cid}", member_token)
        assert got.json()["connection"]["status"] == "needs_reconnect"
        events = await call(appliance, "GET", f"/api/v1/connections/{cid}/events", member_token)
        flagged = [
            e
            for e in events.json()["items"]
            if (e["event_type"], e["category"]) == ("connection", "needs_reconnect")
        ]
        assert [e["detail"] for e in flagged] == [MOVED_REASON]
    # Still nothing after the member's further tries.
    assert attacker.requests == []


async def test_renaming_a_service_changes_no_connection(
    appliance: Appliance, admin_token: str, member_token: str, keyed: OAuthUpstream
) -> None:
    made = await _connect(appliance, member_token, "zero_knowledge")
    cid = made["connection"]["id"]
    for body in ({"name": "Keyed Renamed"}, {}, {"mcp_url": keyed.mcp_url}):
        renamed = await call(appliance, "PATCH", "/api/v1/services/keyed", admin_token, body)
        assert renamed.status == 200, renamed.text
    got = await call(appliance, "GET", f"/api/v1/connections/{cid}", member_token)
    assert got.json()["connection"]["status"] == "active"
    status, answer = await rpc(made["secret_url"])
    assert status == 200 and "result" in answer, answer
    events = await call(appliance, "GET", f"/api/v1/connections/{cid}/events", member_token)
    assert all(e["category"] != "needs_reconnect" for e in events.json()["items"])


async def test_a_reconnected_member_reaches_the_new_address(
    appliance: Appliance,
    admin_token: str,
    member_token: str,
    keyed: OAuthUpstream,
) -> None:
    made = await _connect(appliance, member_token, "managed")
    async with OAuthUpstream(api_keys={"Bearer " + KEY}) as second:
        moved = await call(
            appliance, "PATCH", "/api/v1/services/keyed", admin_token, {"mcp_url": second.mcp_url}
        )
        assert moved.status == 200
        status, answer = await rpc(made["secret_url"])
        assert answer.get("error", {}).get("code") == -32003, answer
        assert second.mcp_authorizations == []
        # Reconnecting (a new key for the new address, replacing the old connection) works.
        again = await call(
            appliance,
            "POST",
            "/api/v1/connections",
            member_token,
            {"service": "keyed", "api_key": KEY, "replace": made["connection"]["id"]},
        )
        assert again.status == 201, again.text
        status, answer = await rpc(again.json()["secret_url"])
        assert status == 200 and "result" in answer, answer
        assert second.mcp_authorizations[-1] == "Bearer " + KEY
