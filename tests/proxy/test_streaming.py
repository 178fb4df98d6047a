"""Streaming through the proxy: no buffering, no total timeout, keep-alives only between events,
cancellation when the client leaves, many concurrent streams, resumption, upstream restarts."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp
import pytest
from peers.raw_upstream import RawUpstream
from support.mcp_peers import UpstreamProcess

from bindify_appliance.proxy import UpstreamClient

from .conftest import ProxyHarness, close_proxy, make_proxy
from .test_clients import connect

MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
}
INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "1"},
        },
    }
).encode()
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'


async def open_session(http: Any, url: str) -> str:
    """Initialize an MCP session over raw HTTP; returns its session id."""
    async with http.post(url, data=INITIALIZE, headers=MCP_HEADERS) as resp:
        assert resp.status == 200
        session = str(resp.headers["Mcp-Session-Id"])
        await resp.read()
    headers = {**MCP_HEADERS, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    async with http.post(url, data=INITIALIZED, headers=headers) as resp:
        assert resp.status == 202
    return session


async def test_no_total_or_read_timeout_on_the_live_client(raw: RawUpstream) -> None:
    """An answer whose body pauses longer than the client's only bound (connecting) is relayed
    whole: nothing but connecting is timed."""
    client = UpstreamClient(allow_private=True, connect_timeout=0.3)  # the upstreams are local
    raw.script = [b"data: one\n\n", 0.6, b"data: two\n\n"]
    try:
        response = await client.request("GET", raw.url("/script"), {}, None)
        body = await response.read_all()
        assert response.at_eof()
        response.release()
    finally:
        await client.close()
    assert body == b"data: one\n\ndata: two\n\n"


async def test_fifty_get_streams_and_a_tool_call(mcp2_stateful: UpstreamProcess, http: Any) -> None:
    # Fifty streams on one connection: above the default per-connection cap of 32, raised here
    # (the cap itself: test_sandbox_and_limits.py).
    proxy = await make_proxy(settings={"max_streams_per_connection": 64})
    creds, _ = proxy.resolver.add("acme", mcp2_stateful.origin + "/mcp")
    url = proxy.path_url("acme", creds)
    sessions = await asyncio.gather(*(open_session(http, url) for _ in range(50)))
    streams: list[aiohttp.ClientResponse] = []
    try:
        for session in sessions:
            headers = {
                "Accept": "text/event-stream",
                "Mcp-Session-Id": session,
                "MCP-Protocol-Version": "2025-11-25",
            }
            resp = await http.get(url, headers=headers)
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["X-Accel-Buffering"] == "no"
            streams.append(resp)
        started = time.monotonic()
        async with connect(proxy, "acme", creds, "path", mode="legacy") as client:
            result = await asyncio.wait_for(client.call_tool("add", {"a": 1, "b": 2}), 20)
        assert result.content[0].text == "3"  # type: ignore[union-attr]
        assert time.monotonic() - started < 10
        assert all(not s.closed for s in streams)
    finally:
        for resp in streams:
            resp.close()
        await close_proxy(proxy)


@pytest.mark.slow
async def test_a_long_call_without_progress_completes(
    proxy: ProxyHarness, mcp2_stateful: UpstreamProcess
) -> None:
    # 21 s: past Tornado's 20 s default total timeout; nothing flows until the result.
    creds, _ = proxy.resolver.add("acme", mcp2_stateful.origin + "/mcp")
    async with connect(proxy, "acme", creds, "api_key", mode="auto") as client:
        result = await client.call_tool("sleep", {"seconds": 21})
    assert result.content[0].text == "slept 21.0"  # type: ignore[union-attr]


async def test_upstream_sees_its_socket_close_when_the_client_leaves(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/hold"))
    resp = await http.get(proxy.path_url("acme", creds))
    assert resp.status == 200
    first = await resp.content.readuntil(b"\n\n")
    assert first == b"event: message\ndata: {}\n\n"
    await asyncio.sleep(0.2)  # the stream is idle now: no chunk will wake the relay
    left = time.monotonic()
    resp.close()
    while "/hold" not in raw.closed and time.monotonic() - left < 3:
        await asyncio.sleep(0.02)
    assert "/hold" in raw.closed
    assert raw.closed["/hold"] - left < 1.0


async def test_upstream_sees_its_socket_close_when_the_client_leaves_before_headers(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/hold-silent"))
    task = asyncio.ensure_future(
        http.post(proxy.path_url("acme", creds), data=b'{"jsonrpc":"2.0","id":1,"method":"x"}')
    )
    while "/hold-silent" not in raw.opened:
        await asyncio.sleep(0.02)
    left = time.monotonic()
    task.cancel()  # the client gives up on a call the upstream never answers
    with pytest.raises(asyncio.CancelledError):
        await task
    while "/hold-silent" not in raw.closed and time.monotonic() - left < 3:
        await asyncio.sleep(0.02)
    assert raw.closed["/hold-silent"] - left < 1.0


async def read_all(resp: aiohttp.ClientResponse) -> tuple[bytes, list[tuple[float, bytes]]]:
    chunks: list[tuple[float, bytes]] = []
    async for chunk in resp.content.iter_any():
        chunks.append((time.monotonic(), chunk))
    return b"".join(c for _, c in chunks), chunks


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
async def test_keepalives_never_split_a_half_received_event(
    proxy: ProxyHarness, raw: RawUpstream, http: Any, eol: bytes
) -> None:
    # keep-alive interval 0.3 s; the upstream stalls 1 s inside an event, then 1 s between two.
    first = b"event: message" + eol + b'data: {"a":'
    rest = b"1}" + eol + eol
    second = b"data: 2" + eol + eol
    raw.script = [first, 1.0, rest, 1.0, second]
    creds, _ = proxy.resolver.add("acme", raw.url("/script"))
    async with http.get(proxy.path_url("acme", creds)) as resp:
        assert resp.headers["X-Accel-Buffering"] == "no"
        body, _ = await read_all(resp)
    event = first + rest
    assert body.startswith(event), body
    middle = body[len(event) : len(body) - len(second)]
    assert body.endswith(second)
    assert middle == b": keep-alive\n\n" * (middle.count(b": keep-alive\n\n"))
    assert middle.count(b": keep-alive\n\n") >= 2


async def test_events_are_not_buffered(proxy: ProxyHarness, raw: RawUpstream, http: Any) -> None:
    raw.script = [b"data: 1\n\n", 0.5, b"data: 2\n\n", 0.5, b"data: 3\n\n"]
    creds, _ = proxy.resolver.add("acme", raw.url("/script"))
    async with http.post(proxy.path_url("acme", creds), data=b"{}") as resp:
        _, chunks = await read_all(resp)
    stamps = [t for t, c in chunks if c.startswith(b"data:")]
    assert len(stamps) == 3
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(stamps))  # not bunched


async def test_resumption_with_last_event_id(
    proxy: ProxyHarness, mcp2_resumable: UpstreamProcess
) -> None:
    """The upstream closes the call's SSE stream mid-way (2025-11-25 polling); the client
    resumes with GET + Last-Event-ID through the proxy and gets the rest and the result."""
    creds, _ = proxy.resolver.add("acme", mcp2_resumable.origin + "/mcp")
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with connect(proxy, "acme", creds, "path", mode="legacy") as client:
        result = await asyncio.wait_for(
            client.call_tool("resumable", {}, progress_callback=on_progress), 30
        )
    assert result.content[0].text == "resumed"  # type: ignore[union-attr]
    assert seen == [1, 2, 3, 4]
    gets = [u for u in proxy.resolver.uses if u.kind == "streamable-http:get"]
    assert any(u.upstream_status == 200 for u in gets)


async def test_resumption_after_the_client_cut_the_stream(
    proxy: ProxyHarness, mcp2_resumable: UpstreamProcess, http: Any
) -> None:
    """The client drops a POST stream mid-way and resumes it with Last-Event-ID."""
    creds, _ = proxy.resolver.add("acme", mcp2_resumable.origin + "/mcp")
    url = proxy.path_url("acme", creds)
    session = await open_session(http, url)
    headers = {**MCP_HEADERS, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    call = {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "tools/call",
        "params": {
            "name": "progress",
            "arguments": {"steps": 4, "interval": 0.4},
            "_meta": {"progressToken": "p1"},
        },
    }
    resp = await http.post(url, data=json.dumps(call).encode(), headers=headers)
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    last_id = None
    progress_seen = 0
    while progress_seen < 2:
        raw_event = await resp.content.readuntil(b"\n\n")
        for line in raw_event.decode().splitlines():
            if line.startswith("id:"):
                last_id = line[3:].strip()
            if line.startswith("data:") and "notifications/progress" in line:
                progress_seen += 1
    resp.close()  # cut mid-way
    assert last_id is not None
    resume = {
        "Accept": "text/event-stream",
        "Mcp-Session-Id": session,
        "MCP-Protocol-Version": "2025-11-25",
        "Last-Event-ID": last_id,
    }
    async with http.get(url, headers=resume) as again:
        assert again.status == 200
        rest = b""
        while b'"id":5' not in rest:
            rest += await asyncio.wait_for(again.content.readany(), 10)
    text = rest.decode()
    assert text.count("notifications/progress") == 2
    assert "done 4" in text


async def test_upstream_restart_404_passes_through_and_a_new_session_works(
    proxy: ProxyHarness, mcp2_restartable: UpstreamProcess, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", mcp2_restartable.origin + "/mcp")
    url = proxy.path_url("acme", creds)
    session = await open_session(http, url)
    mcp2_restartable.restart()
    headers = {**MCP_HEADERS, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    call = b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}'
    async with http.post(url, data=call, headers=headers) as resp:
        via_proxy = (resp.status, resp.headers.get("Content-Type"), await resp.read())
    async with http.post(mcp2_restartable.origin + "/mcp", data=call, headers=headers) as resp:
        direct = (resp.status, resp.headers.get("Content-Type"), await resp.read())
    assert via_proxy[0] == 404
    assert via_proxy == direct
    async with connect(proxy, "acme", creds, "path", mode="legacy") as client:
        result = await client.call_tool("add", {"a": 20, "b": 22})
    assert result.content[0].text == "42"  # type: ignore[union-attr]


async def test_a_silent_streams_headers_go_out_after_the_grace(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    # The upstream sends its headers, then nothing for 0.6 s: the client has the headers long
    # before the first event (a client waits on them to know the stream is open).
    raw.script = [0.6, b"data: 1\n\n"]
    creds, _ = proxy.resolver.add("acme", raw.url("/script"))
    started = time.monotonic()
    async with http.get(proxy.path_url("acme", creds)) as resp:
        headers_after = time.monotonic() - started
        assert resp.headers["Content-Type"] == "text/event-stream"
        body, _ = await read_all(resp)
    assert headers_after < 0.25, headers_after  # the grace, not the first event
    assert body.endswith(b"data: 1\n\n")  # after one keep-alive (interval 0.3 s)


async def test_a_busy_stream_gets_no_keepalives_and_a_silent_one_does(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    # keep-alive interval 0.3 s: events every 0.1 s for 0.8 s never leave 0.3 s of silence;
    # then 1 s of silence between two events gets its comments, each between events.
    busy: list[bytes | float] = []
    for n in range(8):
        busy += [b"data: %d\n\n" % n, 0.1]
    raw.script = [*busy, 1.0, b"data: last\n\n"]
    creds, _ = proxy.resolver.add("acme", raw.url("/script"))
    async with http.get(proxy.path_url("acme", creds)) as resp:
        body, _ = await read_all(resp)
    events = b"".join(b"data: %d\n\n" % n for n in range(8))
    assert body.startswith(events), body
    assert body.endswith(b"data: last\n\n")
    middle = body[len(events) : -len(b"data: last\n\n")]
    assert middle.count(b": keep-alive\n\n") >= 2
    assert middle == b": keep-alive\n\n" * middle.count(b": keep-alive\n\n")


async def test_cancelling_a_waiting_pump_is_not_swallowed(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    # The pump's timer interrupts its own reads; a client that leaves just after a keep-alive
    # (the timer fired and re-armed) still ends the exchange at once.
    creds, _ = proxy.resolver.add("acme", raw.url("/hold"))
    resp = await http.get(proxy.path_url("acme", creds))
    await resp.content.readuntil(b"\n\n")
    assert await resp.content.readuntil(b"\n\n") == b": keep-alive\n\n"
    left = time.monotonic()
    resp.close()
    while "/hold" not in raw.closed and time.monotonic() - left < 3:
        await asyncio.sleep(0.02)
    assert "/hold" in raw.closed
    assert raw.closed["/hold"] - left < 1.0
