"""Legacy HTTP+SSE (2024-11-05): the `endpoint` event rewritten onto the appliance's origin with a
proxy-minted session bound to the connection; message POSTs relayed to the upstream's URL."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest
from peers.raw_upstream import RawUpstream, Step

from .conftest import ProxyHarness

MESSAGE = b'{"jsonrpc":"2.0","id":4,"method":"tools/list"}'


async def read_event(resp: aiohttp.ClientResponse) -> bytes:
    """One raw event (up to and including its blank line), whatever the line endings."""
    buffer = b""
    while not re.search(rb"(\r\n|\r|\n)(\r\n|\r|\n)", buffer.lstrip(b"\r\n")):
        chunk = await asyncio.wait_for(resp.content.readany(), 5)
        if not chunk:
            break
        buffer += chunk
    return buffer


def endpoint_of(event: bytes) -> str:
    lines = re.split(rb"\r\n|\r|\n", event)
    assert b"event: endpoint" in lines, event
    data = next(line for line in lines if line.startswith(b"data:"))
    return data[5:].strip().decode()


def setups(raw: RawUpstream) -> dict[str, list[Step]]:
    return {
        "relative-lf": [b"event: endpoint\ndata: /legacy/messages?session_id=abc\n\n"],
        "split-crlf": [
            b"event: endp",
            0.05,
            b"oint\r\ndata: /legacy/mes",
            0.05,
            b"sages?session_id=abc\r",
            0.05,
            b"\n\r\n",
        ],
        "absolute": [
            f"event: endpoint\ndata: {raw.origin}/legacy/messages?session_id=abc\n\n".encode()
        ],
        "relative-no-slash": [b"event:endpoint\ndata:messages?session_id=abc\n\n"],
        "cr-only": [b"event: endpoint\rdata: /legacy/messages?session_id=abc\r\r"],
    }


@pytest.mark.parametrize(
    "variant", ["relative-lf", "split-crlf", "absolute", "relative-no-slash", "cr-only"]
)
@pytest.mark.parametrize("form", ["path", "api_key"])
async def test_endpoint_rewrite_and_message_relay(
    proxy: ProxyHarness, raw: RawUpstream, http: Any, variant: str, form: str
) -> None:
    raw.endpoint_chunks = setups(raw)[variant]
    creds, _ = proxy.resolver.add(
        "acme", raw.url("/legacy/sse"), transport="sse", inject_query={"key": "k9"}
    )
    auth = {"Authorization": f"Bearer bnd_test_{creds}"}
    if form == "path":
        sse_url, headers = proxy.path_url("acme", creds, "/sse"), {}
        prefix = f"{proxy.url}/mcp/acme/{creds}/messages?session="
    else:
        sse_url, headers = proxy.key_url("acme", "/sse"), auth
        prefix = f"{proxy.url}/mcp/acme/messages?session="
    async with http.get(sse_url, headers=headers) as stream:
        assert stream.status == 200
        assert stream.headers["X-Accel-Buffering"] == "no"
        event = await read_event(stream)
        if variant == "split-crlf":
            assert b"\r\n" in event
        url = endpoint_of(event)
        assert url.startswith(prefix)
        if form == "api_key":
            assert creds not in url  # hosted quirk Q10: no credentials in an API-key user's URL
        async with http.post(url, data=MESSAGE, headers=headers) as resp:
            assert resp.status == 202
            assert await resp.read() == b"Accepted"
    hits = raw.hits("/legacy/messages")
    assert len(hits) == 1
    assert hits[0].query == "session_id=abc&key=k9"
    assert hits[0].body == MESSAGE
    assert hits[0].header("Authorization") is None
    assert raw.hits("/legacy/sse")[0].query == "key=k9"


async def test_other_events_pass_through_unchanged(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    other = b': ping - 2026\r\n\r\nevent: message\r\ndata: {"jsonrpc":"2.0"}\r\n\r\n'
    raw.endpoint_chunks = [
        b"event: endpoint\r\ndata: /legacy/messages?session_id=1\r\n\r\n" + other[:9],
        0.05,
        other[9:],
    ]
    creds, _ = proxy.resolver.add("acme", raw.url("/legacy/sse"), transport="sse")
    async with http.get(proxy.path_url("acme", creds, "/sse")) as stream:
        received = b""
        while not received.endswith(other):
            received += await asyncio.wait_for(stream.content.readany(), 5)
    assert received.startswith(b"event: endpoint\r\ndata: " + proxy.url.encode())
    assert received.endswith(other)


async def test_endpoint_on_a_foreign_origin_is_refused(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    raw.endpoint_chunks = [b"event: endpoint\ndata: http://evil.example/steal?s=1\n\n"]
    creds, _ = proxy.resolver.add("acme", raw.url("/legacy/sse"), transport="sse")
    async with http.get(proxy.path_url("acme", creds, "/sse")) as stream:
        if stream.status == 200:  # headers were already sent: the stream is cut
            with pytest.raises(aiohttp.ClientPayloadError):
                await asyncio.wait_for(stream.read(), 5)
        else:  # the event came with the headers: a bare 502
            assert stream.status == 502
            assert "Content-Type" not in stream.headers
            assert await stream.read() == b""
    assert not any(b"evil" in r.body for r in raw.requests)


async def test_legacy_sessions_are_bound_to_their_connection_and_their_stream(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    raw.endpoint_chunks = [b"event: endpoint\ndata: /legacy/messages?session_id=abc\n\n"]
    creds_a, _ = proxy.resolver.add("acme", raw.url("/legacy/sse"), transport="sse")
    creds_b, _ = proxy.resolver.add("acme", raw.url("/legacy/sse"), transport="sse")
    async with http.get(proxy.path_url("acme", creds_a, "/sse")) as stream:
        url = endpoint_of(await read_event(stream))
        session = url.rsplit("session=", 1)[1]
        foreign = proxy.path_url("acme", creds_b, f"/messages?session={session}")
        async with http.post(foreign, data=MESSAGE) as resp:
            assert resp.status == 404
            body = await resp.json()
        assert body["id"] == 4
        assert body["error"]["code"] == -32001
        async with http.post(
            proxy.path_url("acme", creds_a, "/messages?session=made-up"), data=MESSAGE
        ) as resp:
            assert resp.status == 404
        assert raw.hits("/legacy/messages") == []
    # The client left: the proxy closes the upstream stream, after ending the session.
    for _ in range(100):
        if "/legacy/sse" in raw.closed:
            break
        await asyncio.sleep(0.02)
    assert "/legacy/sse" in raw.closed
    async with http.post(url, data=MESSAGE) as resp:
        assert resp.status == 404
    assert raw.hits("/legacy/messages") == []


async def test_sse_route_on_a_streamable_service_is_refused(
    proxy: ProxyHarness, raw: RawUpstream, http: Any
) -> None:
    creds, _ = proxy.resolver.add("acme", raw.url("/echo"))
    async with http.get(proxy.path_url("acme", creds, "/sse")) as resp:
        assert resp.status == 400
        body = json.loads(await resp.read())
    assert body["error"]["code"] == -32600
    assert raw.requests == []
