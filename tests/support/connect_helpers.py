"""Helpers for the tests that connect to real upstreams through the in-process appliance.

`MapResolver` (a DNS stand-in for `OutboundClient(resolver=…)`), `live_kv_keys()`, `count()`
helpers for "nothing was stored" assertions, `play_authorize()` (the browser's trip to the
upstream's authorization endpoint) and `mcp_tool_call()` (a minimal MCP client over HTTP).
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from bindify_appliance.kv import KVStore, MemoryKV
from bindify_appliance.store import Store
from bindify_appliance.store.models import Connection, ConnectionEvent, DcrRegistration

from .inprocess import Response, fetch


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
