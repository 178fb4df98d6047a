"""The lean upstream client's HTTP/1.1 framing (`proxy/h1client.py`), against raw servers on
127.0.0.1 that write exact bytes: what goes out (nothing but what was asked, no header can smuggle
a second request), what comes back (chunked edge cases, trailers, 1xx, read-until-close, bodies
that do not exist) and the response-smuggling attempts that must cost the connection.

Reuse is observed as the server sees it: `Scripted.connections` counts accepted sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bindify_appliance.errors import UpstreamError
from bindify_appliance.outbound_policy import AddressPolicy
from bindify_appliance.proxy.h1client import Response
from bindify_appliance.proxy.h1pool import H1Client

from .h1_peers import CLOSE, Scripted, chunked, ok, replies


@pytest.fixture
async def client() -> AsyncIterator[H1Client]:
    c = H1Client(AddressPolicy(allow_private=True))  # the servers are on loopback
    yield c
    await c.close()


async def fetch(
    client: H1Client,
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[Response, bytes]:
    """One exchange read to its end and released (pooled if it may be)."""
    response = await client.request(method, url, headers or {}, body)
    data = await response.read_all()
    assert response.at_eof()
    response.release()
    return response, data


# -- what goes out ----------------------------------------------------------------------------


async def test_the_request_is_exactly_what_was_asked(client: H1Client) -> None:
    async with Scripted(replies(ok(), ok(), ok())) as server:
        headers = {"Accept": "application/json", "X-Key": "k1"}
        await fetch(client, server.url("/mcp?q=1#frag"), "POST", b'{"a":1}', headers)
        await fetch(client, server.url("/a b/é"), "GET")
        await fetch(client, server.url(""), "POST")
    sent = [raw for _, raw in server.requests]
    host = f"Host: 127.0.0.1:{server.port}\r\n".encode()
    assert sent[0] == (
        b"POST /mcp?q=1 HTTP/1.1\r\n" + host + b"Accept: application/json\r\n"
        b'X-Key: k1\r\nContent-Length: 7\r\n\r\n{"a":1}'
    )
    # Unsafe bytes in the target are percent-encoded; a GET has no Content-Length.
    assert sent[1] == b"GET /a%20b/%C3%A9 HTTP/1.1\r\n" + host + b"\r\n"
    # A body-less POST says so (some servers wait for a body otherwise).
    assert sent[2].startswith(b"POST / HTTP/1.1\r\n")
    assert sent[2].endswith(b"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/x", {"X-A": "1\r\nX-Injected: 2"}),
        ("GET", "/x", {"X-A": "1\nX-Injected: 2"}),
        ("GET", "/x", {"X-A": "1\rX-Injected: 2"}),
        ("GET", "/x", {"X-A": "a\x00b"}),
        ("GET", "/x", {"X-A\r\nX-Injected": "2"}),
        ("GET", "/x", {"X A": "1"}),
        ("GET", "/x", {"X-A:": "1"}),
        ("GET", "/x", {"Content-Length": "0"}),
        ("GET", "/x", {"Transfer-Encoding": "chunked"}),
        ("GET", "/x", {"Host": "elsewhere"}),
        ("GET", "/x", {"Connection": "close"}),
        ("GET", "/x HTTP/1.1\r\n\r\nGET /smuggled", {}),
        ("GET", "/x\nGET /smuggled", {}),
        ("GET", "/x\x00", {}),
        ("GET / HTTP/1.1\r\n\r\nGET", "/x", {}),
        ("GE T", "/x", {}),
    ],
)
async def test_header_and_request_line_injection_is_refused_before_connecting(
    client: H1Client, method: str, path: str, headers: dict[str, str]
) -> None:
    async with Scripted(replies(ok())) as server:
        with pytest.raises(ValueError):
            await client.request(method, server.url(path), headers, None)
        await asyncio.sleep(0.02)
    assert server.connections == 0


# -- what comes back --------------------------------------------------------------------------


async def test_status_and_headers_keep_the_upstreams_spelling_and_order(client: H1Client) -> None:
    answer = ok(b"{}", "mcp-session-ID: s1", "X-Twice: a", "X-Twice: b")
    async with Scripted(replies(answer)) as server:
        response, body = await fetch(client, server.url())
    assert (response.status, body) == (200, b"{}")
    assert response.headers[1:4] == [("mcp-session-ID", "s1"), ("X-Twice", "a"), ("X-Twice", "b")]
    assert response.header("MCP-SESSION-ID") == "s1"
    assert response.content_type == "application/json"


async def test_chunked_with_extensions_split_lines_and_trailers(client: H1Client) -> None:
    # Every byte in its own write: chunk-size lines, extensions and CRLFs split across reads.
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value;other\r\nhello\r\n"
        b'1;x="q"\r\n \r\n'
        b"5\r\nworld\r\n"
        b"0;last=yes\r\nX-Trailer: t\r\nServer-Timing: x\r\n\r\n"
    )
    steps: list[bytes | float] = []
    for i in range(len(wire)):
        steps += [0.0005, wire[i : i + 1]]
    async with Scripted(replies(steps, ok(b"again"))) as server:  # type: ignore[arg-type]
        response, body = await fetch(client, server.url())
        assert body == b"hello world"
        names = {name.lower() for name, _ in response.headers}
        assert not names & {"x-trailer", "server-timing"}
        _, second = await fetch(client, server.url())
    assert second == b"again"
    assert server.connections == 1  # trailers read in full: the connection was reused


async def test_a_zero_size_last_chunk_with_trailers_in_one_write(client: H1Client) -> None:
    async with Scripted(replies(chunked(b"ab", b"c", trailer=b"Digest: x\r\n"), ok())) as server:
        _, body = await fetch(client, server.url())
        await fetch(client, server.url())
    assert body == b"abc" and server.connections == 1


@pytest.mark.parametrize(
    "bad_chunk",
    [
        b"1" * 17 + b"\r\n",  # beyond 64 bits
        b"FFFFFFFFFFFFFFFFF\r\n",
        b"zz\r\n",
        b"-1\r\n",
        b"5 5\r\n",
        b"0x5\r\n",
        b"\r\n",
    ],
)
async def test_invalid_or_overflowing_chunk_sizes_break_the_response(
    client: H1Client, bad_chunk: bytes
) -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n" + bad_chunk
    async with Scripted(replies(wire + b"data\r\n", ok(b"fresh"))) as server:
        response = await client.request("GET", server.url(), {}, None)
        with pytest.raises(UpstreamError):
            await response.read_all()
        response.release()
        _, body = await fetch(client, server.url())
        await server.eof_of(0)  # the broken connection was closed, not pooled
    assert body == b"fresh" and server.connections == 2


@pytest.mark.parametrize("status", [b"100 Continue", b"103 Early Hints", b"102 Processing"])
async def test_interim_answers_are_skipped(client: H1Client, status: bytes) -> None:
    interim = b"HTTP/1.1 " + status + b"\r\nLink: </x>; rel=preload\r\n\r\n"
    async with Scripted(replies([interim, 0.01, interim, ok(b"final")], ok())) as server:
        response, body = await fetch(client, server.url(), "POST", b"{}")
        await fetch(client, server.url())
    assert (response.status, body) == (200, b"final")
    assert response.header("Link") is None
    assert server.connections == 1


async def test_a_protocol_switch_nobody_asked_for_is_an_error(client: H1Client) -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    async with Scripted(replies(switch)) as server:
        with pytest.raises(UpstreamError):
            await client.request("GET", server.url(), {}, None)
        await server.eof_of(0)


async def test_a_body_read_until_the_upstream_closes(client: H1Client) -> None:
    wire = [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ", 0.02, b"two", CLOSE]
    async with Scripted(replies(wire, ok(b"next"))) as server:  # type: ignore[arg-type]
        _, body = await fetch(client, server.url())
        _, after = await fetch(client, server.url())
    assert (body, after) == (b"part one, two", b"next")
    assert server.connections == 2  # a body ended by close cannot leave the connection open


async def test_http10_and_connection_close_answers_are_not_reused(client: H1Client) -> None:
    old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with Scripted(replies(old, closing, ok())) as server:
        for _ in range(3):
            await fetch(client, server.url())
    assert server.connections == 3


async def test_head_204_and_304_have_no_body(client: H1Client) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: application/json\r\n\r\n"
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    not_modified = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n"
    async with Scripted(replies(head, no_content, not_modified, ok(b"x"))) as server:
        answers = [
            await asyncio.wait_for(fetch(client, server.url(), method), 2)
            for method in ("HEAD", "DELETE", "GET")
        ]
        assert [(r.status, body) for r, body in answers] == [(200, b""), (204, b""), (304, b"")]
        _, last = await fetch(client, server.url())
    assert last == b"x"
    # HEAD's connection is never pooled (its answer's length says nothing of the wire); the
    # 204 and 304 ones are.
    assert server.connections == 2


# -- response smuggling -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n Content-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\rContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 3\r\n\r\n",
    ],
)
async def test_ambiguous_framing_is_refused(client: H1Client, head: bytes) -> None:
    async with Scripted(replies(head + b"3\r\nabc\r\n0\r\n\r\n", ok(b"clean"))) as server:
        with pytest.raises(UpstreamError):
            response = await client.request("GET", server.url(), {}, None)
            await response.read_all()
        _, body = await fetch(client, server.url())
        await server.eof_of(0)
    assert body == b"clean" and server.connections == 2


async def test_bytes_after_a_complete_answer_cost_the_connection(client: H1Client) -> None:
    smuggled = ok(b"first") + b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
    async with Scripted(replies(smuggled, ok(b"second"))) as server:
        _, first = await fetch(client, server.url())
        _, second = await fetch(client, server.url())
        await server.eof_of(0)
    assert (first, second) == (b"first", b"second")
    assert server.connections == 2


async def test_bytes_on_an_idle_pooled_connection_cost_the_connection(client: H1Client) -> None:
    late = ok(b"first")
    unsolicited = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
    async with Scripted(replies([late, 0.05, unsolicited], ok(b"second"))) as server:
        _, first = await fetch(client, server.url())
        await asyncio.sleep(0.1)  # the unsolicited answer arrives while the connection idles
        _, second = await fetch(client, server.url())
    assert (first, second) == (b"first", b"second")
    assert server.connections == 2


async def test_an_endless_header_block_is_refused(client: H1Client) -> None:
    endless = [b"HTTP/1.1 200 OK\r\nX-Big: "] + [b"a" * 8192, 0.0] * 12
    async with Scripted(replies(endless)) as server:  # type: ignore[arg-type]
        with pytest.raises(UpstreamError):
            await asyncio.wait_for(client.request("GET", server.url(), {}, None), 5)
        await server.eof_of(0)


async def test_a_truncated_body_is_an_error_not_an_end(client: H1Client) -> None:
    short = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", CLOSE]
    async with Scripted(replies(short)) as server:  # type: ignore[arg-type]
        response = await client.request("GET", server.url(), {}, None)
        assert await response.read_chunk() == b"abc"
        with pytest.raises(UpstreamError):
            await response.read_chunk()
        assert not response.at_eof()
        response.close()
