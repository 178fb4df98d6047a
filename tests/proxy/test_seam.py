"""The proxy's HTTP seam (`proxy/base.py`): what it answers by itself, on a real server.

Unsupported methods (405 with the route's `Allow`, HEAD included, no body on HEAD), an
oversized body (refused before the upstream is reached), an exception inside a handler (the
JSON 500 with no exception text, and a log line without the path), the access log (the route
template, never the raw path) and the headers every answer carries (sandbox, `Date`; no
`Server`, no default HTML type).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import pytest
from peers.raw_upstream import RawUpstream

from bindify_appliance.errors import NotFoundError
from bindify_appliance.proxy.target import ProxyTarget
from bindify_appliance.sandbox import SANDBOX_HEADERS

from .conftest import ProxyHarness, close_proxy, make_proxy
from .resolver import StaticResolver

CALL = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}'


async def _raw_exchange(port: int, request: bytes) -> bytes:
    """Send `request` as is and read the answer until the server closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 2.0)
            except TimeoutError:
                return data
            if not chunk:
                return data
            data += chunk
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("suffix", "method", "allow"),
    [
        ("", "PUT", "GET, POST, DELETE, OPTIONS"),
        ("", "PATCH", "GET, POST, DELETE, OPTIONS"),
        ("/sse", "POST", "GET, OPTIONS"),
        ("/messages", "GET", "POST, OPTIONS"),
    ],
)
async def test_unsupported_methods_are_405_with_the_routes_allow(
    proxy: ProxyHarness, raw: RawUpstream, http: Any, suffix: str, method: str, allow: str
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    async with http.request(method, proxy.path_url("acme", creds, suffix), data=CALL) as resp:
        body = await resp.read()
        assert resp.status == 405
        assert resp.headers["Allow"] == allow
        assert resp.headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"error": "method_not_allowed", "message": "Method Not Allowed"}
        for name, value in SANDBOX_HEADERS:
            assert resp.headers[name] == value
    assert raw.requests == []
    assert proxy.resolver.resolve_calls == 0  # refused before admission


async def test_head_is_405_without_a_body(proxy: ProxyHarness, raw: RawUpstream) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    request = (
        f"HEAD /mcp/acme/{creds} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = await _raw_exchange(proxy.port, request)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nAllow: GET, POST, DELETE, OPTIONS" in head
    assert rest == b""  # the headers of the JSON answer, never its body
    assert raw.requests == []


async def test_an_oversized_body_is_refused_before_the_upstream(
    proxy: ProxyHarness, raw: RawUpstream
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    request = (
        f"POST /mcp/acme/{creds} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {16 * 1024 * 1024 + 1}\r\n\r\n"
    ).encode() + CALL
    answer = await _raw_exchange(proxy.port, request)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert raw.requests == []


class _BrokenResolver(StaticResolver):
    """A resolver with a bug: it raises an exception whose text holds the credential."""

    async def resolve(
        self, service_id: str, credential: str, *, form: Literal["path", "api_key"]
    ) -> ProxyTarget:
        raise RuntimeError(f"resolver bug while reading {credential}")


@pytest.mark.allow_error_logs
async def test_an_exception_in_a_handler_is_the_json_500_without_its_text(
    raw: RawUpstream, http: Any, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy(resolver=_BrokenResolver())
    try:
        creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
        with caplog.at_level(logging.ERROR):
            async with http.post(proxy.path_url("acme", creds), data=CALL) as resp:
                body = await resp.read()
                assert resp.status == 500
                assert resp.headers["Content-Type"] == "application/json"
                assert resp.headers["Cache-Control"] == "no-store"
                for name, value in SANDBOX_HEADERS:
                    assert resp.headers[name] == value
    finally:
        await close_proxy(proxy)
    assert json.loads(body) == {"error": "internal_error", "message": "internal error"}
    assert creds.encode() not in body and b"resolver bug" not in body
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors, "the bug is logged"
    for record in errors:
        assert creds not in record.getMessage()  # the line names the route, not the path
        assert "/mcp/{service}/{credentials}" in record.getMessage()
    assert raw.requests == []


class _GoneResolver(StaticResolver):
    """A resolver whose store refuses on purpose (a row deleted under it)."""

    async def resolve(
        self, service_id: str, credential: str, *, form: Literal["path", "api_key"]
    ) -> ProxyTarget:
        raise NotFoundError("the connection is gone")


@pytest.mark.allow_error_logs
async def test_an_error_raised_on_purpose_answers_its_status_through_the_one_seam(
    raw: RawUpstream, http: Any, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy(resolver=_GoneResolver())
    try:
        creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
        with caplog.at_level(logging.ERROR):
            async with http.post(proxy.path_url("acme", creds), data=CALL) as resp:
                body = await resp.read()
                assert resp.status == 404  # the store's refusal, never a 500
                assert resp.headers["Content-Type"] == "application/json"
    finally:
        await close_proxy(proxy)
    assert json.loads(body) == {"error": "not_found", "message": "the connection is gone"}
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []  # not a server error
    assert raw.requests == []


async def test_the_access_log_names_the_route_template_not_the_path(
    proxy: ProxyHarness, raw: RawUpstream, http: Any, caplog: pytest.LogCaptureFixture
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    with caplog.at_level(logging.INFO, logger="bindify_appliance.access"):
        async with http.post(proxy.path_url("acme", creds) + "?q=secretquery", data=CALL) as resp:
            await resp.read()
            assert resp.status == 200
        async with http.put(proxy.path_url("acme", creds, "/sse")) as resp:
            assert resp.status == 405
    access = [r for r in caplog.records if r.name == "bindify_appliance.access"]
    assert [(r.method, r.route, r.status) for r in access] == [  # type: ignore[attr-defined]
        ("POST", "/mcp/{service}/{credentials}", 200),
        ("PUT", "/mcp/{service}/{credentials}/sse", 405),
    ]
    for record in access:
        assert creds not in record.getMessage() and "secretquery" not in record.getMessage()


async def test_every_answer_has_the_sandbox_and_a_date_and_no_server_header(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    for url in (proxy.path_url("acme", creds), proxy.path_url("acme", "not-a-credential")):
        async with http.post(url, data=CALL) as resp:
            await resp.read()
            for name, value in SANDBOX_HEADERS:
                assert resp.headers[name] == value
            assert "Server" not in resp.headers
            assert parsedate_to_datetime(resp.headers["Date"]).tzinfo is not None
    async with http.options(proxy.path_url("acme", creds)) as resp:
        assert resp.status == 204
        assert "Content-Type" not in resp.headers  # no default HTML type on an empty answer


async def test_a_client_that_goes_away_cancels_the_upstream_exchange_at_once(
    proxy: ProxyHarness, raw: RawUpstream
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/hold-silent"))
    _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        f"POST /mcp/acme/{creds} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(CALL)}\r\n\r\n".encode()
        + CALL
    )
    await writer.drain()
    while "/hold-silent" not in raw.opened:
        await asyncio.sleep(0.01)
    left = time.monotonic()
    writer.close()  # the client hangs up while the upstream has not answered yet
    while "/hold-silent" not in raw.closed and time.monotonic() - left < 3:
        await asyncio.sleep(0.01)
    assert raw.closed["/hold-silent"] - left < 0.5  # the upstream saw its socket close


async def test_a_client_that_does_not_read_holds_the_upstream_back(
    proxy: ProxyHarness, raw: RawUpstream
) -> None:
    """Backpressure: `flush()` waits for the client's socket, so the relay reads the upstream
    no faster than the client reads it; nothing is buffered without bound."""
    event = b"data: " + b"x" * 65_530 + b"\n\n"  # 64 KiB
    steps = 800  # 50 MiB: far more than every socket buffer on the way can hold
    raw.script = [event] * steps
    creds, _ = proxy.resolver.add("acme", raw.url("/script"))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, limit=2**20)
    writer.write(
        f"GET /mcp/acme/{creds} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    await asyncio.sleep(1.0)  # the client reads nothing for a second
    held = raw.played
    assert held < steps // 2, held
    received = 0
    while True:  # now it reads: everything arrives
        chunk = await asyncio.wait_for(reader.read(2**20), 10)
        received += len(chunk)
        if not chunk or (raw.played == steps and received >= steps * len(event)):
            break
    writer.close()
    assert raw.played == steps
    assert received >= steps * len(event)
