"""Managed OAuth connections for the refresh tests: connect one through the real flow, count
provider refreshes, read a connection's state, and call a tool through the proxy (one JSON-RPC
answer)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import tornado.web
from peers.oauth_upstream import OAuthUpstream

from bindify_appliance.app import Runtime
from bindify_appliance.crypto.keyring import open_managed
from bindify_appliance.store.models import Connection, ConnectionEvent

from .connect_helpers import path_of, play_authorize
from .inprocess import Appliance, api


def runtime_of(app: Appliance) -> Runtime:
    """The runtime `build_application` made (its proxy routes use the real refresher)."""
    application = app.http.request_callback
    assert isinstance(application, tornado.web.Application)
    runtime = application.settings["runtime"]
    assert isinstance(runtime, Runtime)
    return runtime


@dataclass(frozen=True)
class Connected:
    connection_id: str
    secret_path: str
    api_key: str


async def add_service(app: Appliance, token: str, upstream: OAuthUpstream) -> None:
    body = {"id": "acme", "name": "Acme", "mcp_url": upstream.mcp_url, "auth": {"type": "oauth"}}
    created = await api(app, "POST", "/api/v1/services", body, token=token)
    assert created.status == 201, created.text


async def connect_managed(app: Appliance, member_id: str, service: str = "acme") -> Connected:
    browser = await app.browser(member_id)
    started = await browser.api(
        "POST", f"/api/v1/connections/{service}/authorize", {"key_storage_mode": "managed"}
    )
    assert started.status == 200, started.text
    callback = await play_authorize(started.json()["url"])
    done = await browser.get(path_of(callback))
    assert done.status == 302, done.text
    location = done.location or ""
    connection_id = location.split("/")[2].split("?")[0]
    claimed = await browser.api("GET", "/api/v1/claims/" + location.split("claim=")[1])
    assert claimed.status == 200, claimed.text
    result = claimed.json()
    return Connected(connection_id, result["secret_url"][len(app.url) :], result["api_key"])


def refresh_calls(upstream: OAuthUpstream) -> int:
    return sum(1 for c in upstream.token_requests if c.form.get("grant_type") == "refresh_token")


def row(app: Appliance, connection_id: str) -> Connection:
    return app.store.call(lambda: Connection.get_by_id(connection_id))


def payload(app: Appliance, connection_id: str) -> dict[str, Any]:
    r = row(app, connection_id)
    assert r.encrypted_tokens is not None
    plain = open_managed(
        app.ctx.keys.keyring, r.key_fingerprint, r.id, r.encrypted_tokens, field="encrypted_tokens"
    )
    return dict(json.loads(plain))


def events(app: Appliance, connection_id: str) -> list[tuple[str, str, str | None]]:
    def work() -> list[tuple[str, str, str | None]]:
        q = ConnectionEvent.select().where(ConnectionEvent.connection == connection_id)
        return [(e.event_type, e.category, e.detail) for e in q.order_by(ConnectionEvent.id)]

    return app.store.call(work)


async def rpc(url: str, *, rid: int = 7, method: str = "tools/list") -> dict[str, Any]:
    """One stateless JSON-RPC POST through the proxy; the answer for `rid`."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-06-18",
    }
    body = {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.post(url, json=body, headers=headers) as r,
    ):
        text = await r.text()
        assert r.status == 200, (r.status, text)
        if r.headers.get("Content-Type", "").startswith("text/event-stream"):
            for block in text.split("\n\n"):
                data = [ln[5:].strip() for ln in block.splitlines() if ln.startswith("data:")]
                if data:
                    msg = json.loads("\n".join(data))
                    if msg.get("id") == rid:
                        return dict(msg)
            raise AssertionError(text)
        value = json.loads(text)
        return dict(value[0] if isinstance(value, list) else value)
