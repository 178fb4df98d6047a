"""An in-process appliance for the upstream-connect tests, with the proxy wired beside it.

`start_appliance()` builds the real application (`app.build_application`) with a
`ConnectServices` the test may shape (an `OutboundClient` with a test DNS resolver, say), over a
migrated SQLite (or PostgreSQL) database, the in-process KV and a `ManualClock`, served on a free
loopback port that is also the base URL. With `proxy=True` the MCP proxy routes
(`proxy_routes` + the real `ConnectionResolver` over the same registry) are served on a second
port (with its own client and a resolver without memo) and `connect.resolver` is that
resolver; the composition root serves `/mcp/` on the main port too.

Settings may come from an environment mapping (`environ=`), read by `config.load_settings`
exactly as `bindify serve` reads `BINDIFY_*`, which is how the built-in stand-ins are configured.

Also: `MapResolver` (a DNS stand-in for `OutboundClient(resolver=…)`), `live_kv_keys()`,
`count()` helpers for "nothing was stored" assertions, and `play_authorize()` (the browser's
trip to the upstream's authorization endpoint).
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from accounts.harness import START, Browser, Response, fetch, session_browser
from aiohttp.abc import AbstractResolver, ResolveResult
from support.ports import free_socket
from support.stores import migrated_store
from tornado.httpserver import HTTPServer
from tornado.web import Application

from bindify_appliance.app import build_application
from bindify_appliance.clock import ManualClock
from bindify_appliance.config import Settings, load_settings
from bindify_appliance.context import AppContext
from bindify_appliance.crypto.keyring import generate_master_key
from bindify_appliance.datadir import KeySource
from bindify_appliance.http.base import access_log_function
from bindify_appliance.http.not_found import NotFoundHandler
from bindify_appliance.kv import KVStore, MemoryKV
from bindify_appliance.outbound import OutboundClient
from bindify_appliance.proxy import ProxyConfig, UpstreamClient, proxy_routes
from bindify_appliance.proxy.resolver import ConnectionResolver
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.store import Store
from bindify_appliance.store.models import Connection, ConnectionEvent, DcrRegistration

SECRET_KEY = b"s" * 43


class MapResolver(AbstractResolver):
    """DNS for tests: host name → list of addresses (unknown names fail like NXDOMAIN)."""

    def __init__(self, table: Mapping[str, list[str]]) -> None:
        self.table = dict(table)
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host}")
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in self.table[host]
        ]

    async def close(self) -> None:
        return None


@dataclass
class Appliance:
    ctx: AppContext
    clock: ManualClock
    url: str
    http: HTTPServer
    connect: ConnectServices
    proxy_url: str | None = None
    proxy_http: HTTPServer | None = None
    upstream: UpstreamClient | None = None
    # The composition root's own proxy client (`app.py` serves `/mcp/` on `url` too).
    root_upstream: UpstreamClient | None = None

    @property
    def store(self) -> Store:
        return self.ctx.store

    async def browser(self, user_id: str) -> Browser:
        return await session_browser(self, user_id)  # type: ignore[arg-type]

    async def close(self) -> None:
        for server in (self.http, self.proxy_http):
            if server is not None:
                server.stop()
                await server.close_all_connections()
        for client in (self.upstream, self.root_upstream):
            if client is not None:
                await client.close()
        await self.connect.close()
        await self.ctx.kv.close()
        self.ctx.store.close()


async def start_appliance(
    tmp_path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    outbound: Callable[[Settings], OutboundClient] | None = None,
    proxy: bool = False,
    database_url: str | None = None,
    base_url: str | None = None,
    master_keys: str | None = None,
    clock: ManualClock | None = None,
    kv: KVStore | None = None,
    allow_private: bool = True,
) -> Appliance:
    """Serve the appliance on loopback (see the module docstring)."""
    sockets, port = free_socket()
    url = f"http://127.0.0.1:{port}"
    db_url = database_url or f"sqlite:///{tmp_path}/bindify.db"
    env = {
        "BINDIFY_DATA_DIR": str(tmp_path),
        "BINDIFY_PORT": str(port),
        "BINDIFY_BASE_URL": base_url or url,
        "BINDIFY_DATABASE_URL": db_url,
        "BINDIFY_MASTER_KEYS": master_keys or json.dumps([{"key": generate_master_key()}]),
        "BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true" if allow_private else "false",
        "BINDIFY_LOG_FORMAT": "json",
        **(environ or {}),
    }
    settings = load_settings(environ=env)
    store = migrated_store(db_url)
    clock = clock or ManualClock(START.timestamp())
    ctx = AppContext(
        settings=settings,
        store=store,
        # `is not None`: an empty MemoryKV is falsy.
        kv=kv
        if kv is not None
        else MemoryKV(clock, anonymous_records=settings.kv_anonymous_records),
        keys=KeySource(settings),
        clock=clock,
        secret_key=SECRET_KEY,
        instance_id="test",
    )
    ctx.lifecycle.ready = True
    client = outbound(settings) if outbound else None
    connect = ConnectServices.build(ctx, outbound=client)
    app = build_application(ctx, connect)
    http = HTTPServer(app)
    http.add_sockets(sockets)
    appliance = Appliance(ctx=ctx, clock=clock, url=url, http=http, connect=connect)
    appliance.root_upstream = app.settings["runtime"].upstream
    if proxy:
        resolver = ConnectionResolver(ctx, connect.registry, memo_ttl=0)
        connect.resolver = resolver
        upstream = UpstreamClient(allow_private=settings.allow_private_upstreams)
        proxy_app = Application(
            proxy_routes(ctx, resolver, upstream, ProxyConfig(keepalive_interval=1.0)),
            default_handler_class=NotFoundHandler,
            default_handler_args={"ctx": ctx},
            log_function=access_log_function,
            compress_response=False,
        )
        psockets, pport = free_socket()
        proxy_http = HTTPServer(proxy_app, idle_connection_timeout=60)
        proxy_http.add_sockets(psockets)
        appliance.proxy_url = f"http://127.0.0.1:{pport}"
        appliance.proxy_http = proxy_http
        appliance.upstream = upstream
    return appliance


# -- "nothing was stored" -------------------------------------------------------------------


def count(store: Store, model: Any) -> int:
    return int(store.call(lambda: model.select().count()))


def counts(store: Store) -> dict[str, int]:
    return {
        "connections": count(store, Connection),
        "events": count(store, ConnectionEvent),
        "registrations": count(store, DcrRegistration),
    }


async def live_kv_keys(kv: KVStore, prefix: str = "") -> list[str]:
    assert isinstance(kv, MemoryKV)
    keys = [k for k in list(kv._data) if k.startswith(prefix)]
    return [k for k in keys if await kv.get(k) is not None]


def state_key(state: str) -> str:
    return "oauth_state:" + hashlib.sha256(state.encode()).hexdigest()


# -- the browser's part ---------------------------------------------------------------------


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


async def play_authorize(authorize_url: str) -> str:
    """Visit the upstream authorization URL; the callback URL it redirects back to."""
    answer: Response = await fetch(authorize_url)
    assert answer.status == 302, (answer.status, answer.text)
    assert answer.location
    return answer.location


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + ("?" + parts.query if parts.query else "")


# -- MCP over HTTP (a minimal client for "the call went through") ---------------------------


def _rpc_messages(content_type: str, text: str) -> list[Any]:
    if content_type.startswith("text/event-stream"):
        out = []
        for block in text.split("\n\n"):
            data = [line[5:].lstrip() for line in block.splitlines() if line.startswith("data:")]
            if data:
                out.append(json.loads("\n".join(data)))
        return out
    value = json.loads(text)
    return value if isinstance(value, list) else [value]


async def mcp_tool_call(
    url: str, tool: str, arguments: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """initialize → notifications/initialized → tools/call; the call's JSON-RPC answer."""
    import aiohttp

    base = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        **(headers or {}),
    }
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def post(body: dict[str, Any], extra: Mapping[str, str]) -> tuple[Any, list[Any]]:
            async with http.post(url, json=body, headers={**base, **extra}) as r:
                text = await r.text()
                msgs = _rpc_messages(r.headers.get("Content-Type", ""), text) if text else []
                return r, msgs

        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"},
            },
        }
        first, msgs = await post(init, {})
        assert first.status == 200, (first.status, msgs)
        extra = {"MCP-Protocol-Version": msgs[0]["result"]["protocolVersion"]}
        if first.headers.get("Mcp-Session-Id"):
            extra["Mcp-Session-Id"] = first.headers["Mcp-Session-Id"]
        await post({"jsonrpc": "2.0", "method": "notifications/initialized"}, extra)
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": tool, "arguments": dict(arguments)},
        }
        answer, msgs = await post(call, extra)
        assert answer.status == 200, (answer.status, msgs)
        return next(m for m in msgs if m.get("id") == 2)
