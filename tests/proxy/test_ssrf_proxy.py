"""The outbound policy seen through the proxy and the admin API (DESIGN §9, "one outbound policy").

An attacker who can choose where the appliance connects — an admin account, a row saved by an
earlier version whose URL check was syntax-only, a name that resolves inside — tries every
spelling of loopback against a real TCP listener on 127.0.0.1. With private upstreams off the
listener never sees a connection, the member gets the ordinary "upstream unavailable" answer,
and the refusal is logged (host and reason only). The admin API refuses to save those URLs; a
non-canonical numeric host is refused even with private upstreams allowed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from support.inprocess import Appliance, add_token, add_user, api, start_appliance

from bindify_appliance.connections.create import create_connection
from bindify_appliance.store.models import Service
from bindify_appliance.store.services import ServiceSpec, insert_service

# Every spelling of "this machine" the review found accepted; `{port}` is the listener's.
LOOPBACK_SPELLINGS = [
    "https://0x7f.1:{port}/mcp",
    "https://127.1:{port}/mcp",
    "https://2130706433:{port}/mcp",
    "https://[::ffff:127.0.0.1]:{port}/mcp",
    "https://[64:ff9b::7f00:1]:{port}/mcp",
    "https://localhost:{port}/mcp",
    "http://localhost:{port}/mcp",
]
NON_CANONICAL = [
    "https://0x7f.1:{port}/mcp",
    "https://127.1:{port}/mcp",
    "https://2130706433:{port}/mcp",
]
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "attacker", "version": "1"},
    },
}


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it accepts (and drops them)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Listener:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    target = await Listener().start()
    yield target
    await target.stop()


async def _legacy_service_with_a_connection(app: Appliance, url: str) -> str:
    """A service row saved by an earlier version (syntax-only check) and a member's connection
    to it; returns the connection's secret MCP URL."""
    spec = ServiceSpec(
        id="legacy",
        name="Legacy",
        mcp_url=url,
        transport="streamable-http",
        auth={"type": "api_key", "header": "X-Key", "prefix": ""},
    )
    now = app.clock.now()
    app.store.call(
        lambda: insert_service(spec, client_secret_sealed=None, key_fingerprint="", now=now)
    )
    app.connect.registry.invalidate()
    definition = await app.connect.registry.get("legacy")
    assert definition is not None and definition.mcp_url == url
    member = add_user(app, "member@example.com")
    created = await create_connection(
        app.ctx,
        user_id=member,
        service=definition,
        auth_type="api_key",
        payload={"api_key": "upstream-key-123"},
    )
    return created.secret_url


async def _call(secret_url: str) -> tuple[int, dict[str, object]]:
    headers = {"Accept": "application/json, text/event-stream"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.post(secret_url, json=INITIALIZE, headers=headers) as response,
    ):
        return response.status, json.loads(await response.text())


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
async def test_the_proxy_never_connects_to_loopback_with_private_upstreams_off(
    tmp_path: Path, listener: Listener, spelling: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = await start_appliance(tmp_path, allow_private_upstreams=False)
    try:
        url = spelling.format(port=listener.port)
        secret_url = await _legacy_service_with_a_connection(app, url)
        with caplog.at_level(logging.WARNING, logger="bindify_appliance.proxy.upstream"):
            status, answer = await _call(secret_url)
        assert status == 200
        assert answer["id"] == 1 and answer["error"]["code"] == -32603  # type: ignore[index]
        await asyncio.sleep(0.05)  # a connection in flight would have been accepted by now
        assert listener.accepted == 0
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert refusals, "the proxy did not log the refused destination"
        assert all("upstream-key-123" not in m and "/mcp" not in m for m in refusals)
    finally:
        await app.close()


@pytest.mark.parametrize("spelling", NON_CANONICAL)
async def test_non_canonical_numeric_hosts_are_refused_even_with_private_upstreams(
    tmp_path: Path, listener: Listener, spelling: str
) -> None:
    app = await start_appliance(tmp_path, allow_private_upstreams=True)
    try:
        secret_url = await _legacy_service_with_a_connection(
            app, spelling.format(port=listener.port)
        )
        status, answer = await _call(secret_url)
        assert status == 200 and answer["error"]["code"] == -32603  # type: ignore[index]
        assert listener.accepted == 0
    finally:
        await app.close()


async def test_private_upstreams_allowed_still_reach_a_local_upstream(
    tmp_path: Path, listener: Listener
) -> None:
    """The setting the test suites rely on: loopback upstreams work when explicitly allowed."""
    app = await start_appliance(tmp_path, allow_private_upstreams=True)
    try:
        secret_url = await _legacy_service_with_a_connection(
            app, f"http://127.0.0.1:{listener.port}/mcp"
        )
        await _call(secret_url)  # the listener drops the connection: an error answer
        assert listener.accepted >= 1
    finally:
        await app.close()


# -- the admin API ----------------------------------------------------------------------------


async def _post_service(app: Appliance, token: str, body: dict[str, object]) -> tuple[int, dict]:
    answer = await api(app, "POST", "/api/v1/services", body, token=token)
    return answer.status, answer.json()


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
async def test_the_admin_api_refuses_to_save_loopback_urls(tmp_path: Path, spelling: str) -> None:
    app = await start_appliance(tmp_path, allow_private_upstreams=False)
    try:
        admin = add_token(app, add_user(app, "admin@example.com", "admin"))
        url = spelling.format(port=8443)
        base = {"id": "inside", "name": "Inside", "auth": {"type": "none"}}
        status, body = await _post_service(app, admin, {**base, "mcp_url": url})
        assert status == 400, body
        assert (body["error"], body["field"]) == ("invalid_request", "mcp_url")
        assert "8443" not in body["message"] and "/mcp" not in body["message"]
        oauth = {"type": "oauth", "authorization_url": url, "token_url": url}
        status, body = await _post_service(
            app, admin, {**base, "mcp_url": "https://mcp.example.com/mcp", "auth": oauth}
        )
        assert status == 400 and body["field"] == "auth.authorization_url", body
        created = await _post_service(
            app, admin, {**base, "mcp_url": "https://mcp.example.com/mcp"}
        )
        assert created[0] == 201, created
        patched = await api(app, "PATCH", "/api/v1/services/inside", {"mcp_url": url}, token=admin)
        assert patched.status == 400 and patched.json()["field"] == "mcp_url", patched.text
        rows = app.store.call(lambda: [s.mcp_url for s in Service.select()])
        assert url not in rows
    finally:
        await app.close()


@pytest.mark.parametrize("spelling", NON_CANONICAL)
async def test_the_admin_api_refuses_non_canonical_numbers_whatever_the_setting(
    tmp_path: Path, spelling: str
) -> None:
    app = await start_appliance(tmp_path, allow_private_upstreams=True)
    try:
        admin = add_token(app, add_user(app, "admin@example.com", "admin"))
        body = {"id": "odd", "name": "Odd", "auth": {"type": "none"}}
        status, answer = await _post_service(
            app, admin, {**body, "mcp_url": spelling.format(port=8443)}
        )
        assert status == 400, answer
        assert (answer["error"], answer["field"]) == ("invalid_request", "mcp_url")
        assert "numeric" in answer["message"]
        # The canonical spelling of the same address is what private upstreams allow.
        status, answer = await _post_service(
            app, admin, {**body, "mcp_url": "http://127.0.0.1:8443/mcp"}
        )
        assert status == 201, answer
    finally:
        await app.close()
