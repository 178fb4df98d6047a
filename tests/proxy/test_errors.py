"""Every row of the DESIGN §6 error table, with the request's id, batches, and the no-id forms.

Rows that come from resolution are produced by the test resolver's refusals; the handler's own
rows (missing Authorization, upstream unreachable/reset/timed out, session not found) come from
real conditions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from peers.raw_upstream import RawUpstream
from support.ports import free_port

from bindify_appliance.proxy import ProxyConfig
from bindify_appliance.proxy.target import ProxyRefusal

from .conftest import ProxyHarness, close_proxy, make_proxy

CALL = b'{"jsonrpc":"2.0","id":"call-1","method":"tools/call","params":{"name":"add"}}'
NOTIFY = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
BATCH = (
    b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"},'
    b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}},'
    b'{"jsonrpc":"2.0","id":"b","method":"ping"}]'
)


_closed_port = free_port  # bound, then released: nobody listens there


async def _post(http: Any, url: str, body: bytes, **kw: Any) -> tuple[int, Any, bytes]:
    async with http.post(url, data=body, **kw) as resp:
        raw = await resp.read()
        return resp.status, resp.headers, raw


@pytest.mark.parametrize(
    ("refusal", "status", "code"),
    [
        (ProxyRefusal("malformed", "Invalid request path."), 400, -32600),
        (ProxyRefusal("unknown_service", "Unknown service."), 404, -32006),
        (ProxyRefusal("unknown_credential", "Connection not found."), 404, -32001),
        (ProxyRefusal("disabled", "Connection disabled."), 403, -32002),
        (ProxyRefusal("needs_reconnect", "Reconnect at http://a/connections/1"), 200, -32003),
        (ProxyRefusal("upstream_unavailable", "Upstream down."), 200, -32603),
        (ProxyRefusal("cooldown", "Refresh cooling down.", retry_after=60), 200, -32007),
        (ProxyRefusal("rate_limited", "Too many requests.", retry_after=42), 200, -31029),
    ],
)
async def test_resolution_refusals_follow_the_table(
    proxy: ProxyHarness, raw: RawUpstream, http: Any, refusal: ProxyRefusal, status: int, code: int
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    proxy.resolver.refuse(creds, refusal)
    got_status, headers, raw_body = await _post(http, proxy.path_url("acme", creds), CALL)
    assert got_status == status
    assert headers["Content-Type"] == "application/json"
    body = json.loads(raw_body)
    assert body["jsonrpc"] == "2.0"
    assert body["id"] == "call-1"
    assert body["error"]["code"] == code
    assert body["error"]["message"] == refusal.message
    if refusal.kind == "upstream_unavailable":
        assert body["error"]["data"] == {"proxy": True}
    if refusal.kind in ("cooldown", "rate_limited"):
        assert body["error"]["data"] == {"retry_after": refusal.retry_after}
    assert raw.requests == []
    assert creds not in raw_body.decode()


async def test_the_no_oracle_rows_answer_identically(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    proxy.resolver.services.add("other")
    unknown = await _post(http, proxy.path_url("acme", "A" * 86), CALL)
    wrong_service = await _post(http, proxy.path_url("other", creds), CALL)
    assert unknown[0] == wrong_service[0] == 404
    assert unknown[2] == wrong_service[2]
    assert json.loads(unknown[2])["error"]["code"] == -32001
    assert raw.requests == []


async def test_malformed_credentials_reach_nothing_upstream(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    proxy.resolver.add("acme", raw.url("/echo"))
    status, _, body = await _post(http, proxy.path_url("acme", "short"), CALL)
    assert status == 400
    assert json.loads(body)["error"]["code"] == -32600
    status, _, body = await _post(
        http, proxy.key_url("acme"), CALL, headers={"Authorization": "Bearer bndpat_x"}
    )
    assert status == 400
    assert raw.requests == []


async def test_api_key_form_without_authorization_is_400_before_resolving(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    proxy.resolver.add("acme", raw.url("/echo"))
    ping = b'{"jsonrpc":"2.0","id":3,"method":"ping"}'
    status, _headers, body = await _post(http, proxy.key_url("acme"), ping)
    assert status == 400
    data = json.loads(body)
    assert data["id"] == 3
    assert data["error"]["code"] == -32600
    assert "Authorization" in data["error"]["message"]
    assert proxy.resolver.resolve_calls == 0
    async with http.get(proxy.key_url("acme", "/sse")) as resp:
        assert resp.status == 400
    assert raw.requests == []


async def test_upstream_unreachable_is_a_per_call_error(proxy: ProxyHarness, http: Any) -> None:
    creds, _ = proxy.resolver.add("acme", f"http://127.0.0.1:{_closed_port()}/mcp")
    status, headers, body = await _post(http, proxy.path_url("acme", creds), CALL)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert data["id"] == "call-1"
    assert data["error"]["code"] == -32603
    assert data["error"]["data"] == {"proxy": True}


@pytest.fixture
async def resetting_upstream() -> AsyncIterator[str]:
    """Accepts, reads the request, then closes the connection without answering."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/mcp"
    server.close()
    await server.wait_closed()


async def test_upstream_reset_is_a_per_call_error(
    proxy: ProxyHarness, http: Any, resetting_upstream: str
) -> None:
    creds, _ = proxy.resolver.add("acme", resetting_upstream)
    status, _, body = await _post(http, proxy.path_url("acme", creds), CALL)
    assert status == 200
    assert json.loads(body)["error"]["code"] == -32603


async def test_upstream_timeout_on_a_legacy_message_is_a_per_call_error(
    raw: RawUpstream, http: Any
) -> None:
    harness = await make_proxy(config=ProxyConfig(keepalive_interval=0.3, legacy_post_timeout=0.5))
    try:
        creds, target = harness.resolver.add("acme", raw.url("/legacy/sse"), transport="sse")
        message_url = raw.url("/hold-silent")
        session = await harness.legacy_session(target.connection_id, message_url)
        url = harness.path_url("acme", creds, f"/messages?session={session}")
        status, _, body = await _post(http, url, CALL)
        assert status == 200
        data = json.loads(body)
        assert data["id"] == "call-1"
        assert data["error"]["code"] == -32603
    finally:
        await close_proxy(harness)


async def test_failures_without_an_id_are_bare_502_or_503(proxy: ProxyHarness, http: Any) -> None:
    creds, _ = proxy.resolver.add("acme", f"http://127.0.0.1:{_closed_port()}/mcp")
    async with http.get(proxy.path_url("acme", creds)) as resp:
        assert resp.status == 502
        assert await resp.read() == b""
    status, _, body = await _post(http, proxy.path_url("acme", creds), NOTIFY)
    assert (status, body) == (502, b"")
    status, _, body = await _post(http, proxy.path_url("acme", creds), b"not json")
    assert (status, body) == (502, b"")

    proxy.resolver.refuse(creds, ProxyRefusal("cooldown", "cooling", retry_after=60))
    status, headers, body = await _post(http, proxy.path_url("acme", creds), NOTIFY)
    assert (status, body) == (503, b"")
    assert headers["Retry-After"] == "60"
    proxy.resolver.refuse(creds, ProxyRefusal("rate_limited", "limited", retry_after=5))
    async with http.get(proxy.path_url("acme", creds)) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        assert await resp.read() == b""
    proxy.resolver.refuse(creds, ProxyRefusal("needs_reconnect", "reconnect"))
    async with http.get(proxy.path_url("acme", creds)) as resp:
        assert resp.status == 502
    # Rows with a real status keep it, with a JSON-RPC body whose id is null.
    proxy.resolver.refuse(creds, ProxyRefusal("disabled", "disabled"))
    async with http.get(proxy.path_url("acme", creds)) as resp:
        assert resp.status == 403
        assert (await resp.json())["id"] is None


async def test_batches_get_one_error_per_request_id(proxy: ProxyHarness, http: Any) -> None:
    creds, _ = proxy.resolver.add("acme", f"http://127.0.0.1:{_closed_port()}/mcp")
    status, _, body = await _post(http, proxy.path_url("acme", creds), BATCH)
    assert status == 200
    data = json.loads(body)
    assert [e["id"] for e in data] == [1, "b"]
    assert all(e["error"]["code"] == -32603 for e in data)

    proxy.resolver.refuse(creds, ProxyRefusal("disabled", "Connection disabled."))
    status, _, body = await _post(http, proxy.path_url("acme", creds), BATCH)
    assert status == 403
    assert [e["id"] for e in json.loads(body)] == [1, "b"]


async def test_error_messages_never_contain_credentials_or_payload(
    proxy: ProxyHarness, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", f"http://127.0.0.1:{_closed_port()}/mcp?key=k")
    secret_payload = b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"x":"TOPSECRET"}}'
    _, _, body = await _post(http, proxy.path_url("acme", creds), secret_payload)
    text = body.decode()
    assert creds not in text
    assert "TOPSECRET" not in text
    assert "key=k" not in text
    assert "127.0.0.1" not in text
