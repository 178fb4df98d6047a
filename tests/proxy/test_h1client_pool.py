"""The lean upstream client's connections (`proxy/h1pool.py`, `proxy/h1client.py`): keep-alive
reuse only after a full read, never after a partial, cancelled or closed one; stale pooled
sockets; idle expiry; flow control; cancellation that closes the socket at once; the connect and
whole-exchange timeouts; TLS that verifies the chain and the host name.

Every server is real and on 127.0.0.1; what the server saw (connections, EOF times) is the proof.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.connect_helpers import MapResolver
from support.smtp_sink import Certs

from bindify_appliance.errors import UpstreamError
from bindify_appliance.outbound_policy import AddressPolicy
from bindify_appliance.proxy.h1pool import H1Client, default_tls_context

from .h1_peers import CLOSE, Peer, Scripted, ok, replies
from .test_h1client import fetch

POLICY = AddressPolicy(allow_private=True)  # the servers are on loopback


@pytest.fixture
async def client() -> AsyncIterator[H1Client]:
    c = H1Client(POLICY)
    yield c
    await c.close()


def streaming_head() -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )


async def test_a_fully_read_answer_leaves_its_connection_for_the_next(client: H1Client) -> None:
    async with Scripted(replies(*[ok(b"%d" % i) for i in range(5)])) as server:
        bodies = [(await fetch(client, server.url(), "POST", b"{}"))[1] for _ in range(5)]
    assert bodies == [b"0", b"1", b"2", b"3", b"4"]
    assert server.connections == 1


async def test_concurrent_requests_each_get_a_connection_then_share_them(client: H1Client) -> None:
    async with Scripted(replies(*[[0.05, ok()] for _ in range(8)], *[ok()] * 8)) as server:
        await asyncio.gather(*(fetch(client, server.url()) for _ in range(8)))
        assert server.connections == 8  # no connection limit
        await asyncio.gather(*(fetch(client, server.url()) for _ in range(8)))
    assert server.connections == 8


async def test_a_partially_read_answer_is_never_pooled(client: H1Client) -> None:
    body = [streaming_head(), b"5\r\nfirst\r\n", 5.0]
    async with Scripted(replies(body, ok(b"next"))) as server:  # type: ignore[arg-type]
        response = await client.request("GET", server.url(), {}, None)
        assert await response.read_chunk() == b"first"
        response.release()  # not at its end: closed, not pooled
        await server.eof_of(0)
        _, after = await fetch(client, server.url())
    assert after == b"next" and server.connections == 2


async def test_close_mid_stream_reaches_the_server_at_once(client: H1Client) -> None:
    async with Scripted(replies([streaming_head(), b"5\r\nfirst\r\n", 30.0])) as server:  # type: ignore[arg-type]
        response = await client.request("GET", server.url(), {}, None)
        assert await response.read_chunk() == b"first"
        reader = asyncio.create_task(response.read_chunk())
        await asyncio.sleep(0.02)
        closed_at = time.monotonic()
        response.close()
        seen = await server.eof_of(0)
        with pytest.raises(UpstreamError):
            await reader
    assert seen - closed_at < 0.2


async def test_cancelling_the_wait_for_headers_closes_the_socket_at_once(client: H1Client) -> None:
    async with Scripted(replies([30.0, ok()], ok(b"fresh"))) as server:
        task = asyncio.create_task(client.request("POST", server.url(), {}, b"{}"))
        while not server.requests:
            await asyncio.sleep(0.005)
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await server.eof_of(0) - cancelled_at < 0.2
        _, body = await fetch(client, server.url())
    assert body == b"fresh" and server.connections == 2


async def test_a_cancelled_read_loses_no_bytes(client: H1Client) -> None:
    """The relay's keep-alive timer cancels a waiting read and reads on (`relay._Watch`)."""
    steps = [streaming_head(), 0.1, b"6\r\nevent1\r\n", 0.05, b"6\r\nevent2\r\n0\r\n\r\n"]
    async with Scripted(replies(steps, ok())) as server:  # type: ignore[arg-type]
        response = await client.request("GET", server.url(), {}, None)
        for _ in range(3):
            reader = asyncio.create_task(response.read_chunk())
            await asyncio.sleep(0.01)
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
        body = await response.read_all()
        assert body == b"event1event2" and response.at_eof()
        response.release()
        await fetch(client, server.url())
    assert server.connections == 1  # a read cancelled and resumed is no reason to drop it


async def test_an_idle_connection_closed_by_the_peer_is_not_reused(client: H1Client) -> None:
    async with Scripted(replies([ok(b"one"), CLOSE], ok(b"two"))) as server:  # type: ignore[arg-type]
        await fetch(client, server.url(), "POST", b"{}")
        await asyncio.sleep(0.05)  # the server's close reaches the idle pooled connection
        _, body = await fetch(client, server.url(), "POST", b"{}")
    assert body == b"two" and server.connections == 2


class DiesOnSecondRequest:
    """The first connection answers once, then reads the next request and closes without a
    byte: a pooled socket the upstream dropped just as it was reused."""

    def __init__(self) -> None:
        self.server = Scripted(self.handle)

    async def handle(self, peer: Peer) -> None:
        if peer.index == 0:
            await peer.request()
            peer.writer.write(ok(b"first"))
            await peer.request()
            return  # closes without answering
        while await peer.request() is not None:
            peer.writer.write(ok(b"fresh"))


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_an_idempotent_request_on_a_dead_pooled_socket_is_sent_again(
    client: H1Client, method: str
) -> None:
    peer = DiesOnSecondRequest()
    async with peer.server as server:
        await fetch(client, server.url())
        _, body = await fetch(client, server.url(), method)
    assert body == b"fresh"
    assert [index for index, _ in server.requests] == [0, 0, 1]


async def test_a_post_on_a_dead_pooled_socket_is_not_sent_twice(client: H1Client) -> None:
    peer = DiesOnSecondRequest()
    async with peer.server as server:
        await fetch(client, server.url(), "POST", b"{}")
        with pytest.raises(UpstreamError):
            await client.request("POST", server.url(), {}, b'{"once":1}')
        await asyncio.sleep(0.05)
    assert [index for index, _ in server.requests] == [0, 0]


async def test_an_upstream_that_hangs_up_at_once_is_an_error_not_a_wait(
    client: H1Client,
) -> None:
    async def hang_up(peer: Peer) -> None:
        peer.writer.transport.abort()

    async with Scripted(hang_up) as server:
        for _ in range(3):
            with pytest.raises(UpstreamError):
                await asyncio.wait_for(client.request("GET", server.url(), {}, None), 5)


async def test_idle_connections_expire() -> None:
    client = H1Client(POLICY, keepalive_timeout=0.2)
    try:
        async with Scripted(replies(ok(), ok())) as server:
            await fetch(client, server.url())
            started = time.monotonic()
            assert await server.eof_of(0) - started < 0.6  # closed by the client, not the server
            await fetch(client, server.url())
        assert server.connections == 2
    finally:
        await client.close()


async def test_a_slow_reader_pauses_the_socket_and_gets_every_byte() -> None:
    client = H1Client(POLICY, high_water=16 * 1024)
    data = bytes(range(256)) * 16 * 1024  # 4 MiB
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data
    try:
        async with Scripted(replies(answer)) as server:
            response = await client.request("GET", server.url(), {}, None)
            await asyncio.sleep(0.2)  # nobody reads: the client must stop reading the socket
            assert response._size < 16 * 1024 + 512 * 1024
            received = bytearray()
            while chunk := await response.read_chunk():
                received += chunk
            response.release()
        assert received == data
    finally:
        await client.close()


async def test_the_whole_exchange_timeout_covers_the_body(client: H1Client) -> None:
    stalls = [streaming_head(), b"5\r\nfirst\r\n", 30.0]
    async with Scripted(replies(stalls, [30.0, ok()])) as server:  # type: ignore[arg-type]
        started = time.monotonic()
        response = await client.request("POST", server.url(), {}, b"{}", timeout=0.3)
        assert await response.read_chunk() == b"first"
        with pytest.raises(UpstreamError, match="in time"):
            await response.read_chunk()
        assert 0.25 < time.monotonic() - started < 1.5
        await server.eof_of(0)
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="in time"):
            await client.request("POST", server.url(), {}, b"{}", timeout=0.3)
        assert 0.25 < time.monotonic() - started < 1.5
        await server.eof_of(1)


async def test_without_a_timeout_a_slow_answer_is_waited_for(client: H1Client) -> None:
    async with Scripted(replies([1.2, ok(b"late")])) as server:
        _, body = await fetch(client, server.url())
    assert body == b"late"


async def test_the_connect_timeout_bounds_a_tcp_connect_that_never_completes() -> None:
    # A listener that never accepts, its backlog full: further SYNs go unanswered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    client = H1Client(POLICY, connect_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="in time"):
            await client.request("GET", f"http://127.0.0.1:{port}/", {}, None)
        assert time.monotonic() - started < 2
    finally:
        await client.close()
        for s in [*fillers, listener]:
            s.close()


async def test_an_address_that_never_connects_costs_a_quarter_second_not_the_timeout() -> None:
    """Happy eyeballs: a name whose first address is blackholed (a full backlog on 127.0.0.2)
    reaches its second (127.0.0.1, same port) without waiting for the connect timeout."""
    async with Scripted(replies(ok(b"second address"))) as server:
        blackhole = socket.socket()
        blackhole.bind(("127.0.0.2", server.port))
        blackhole.listen(0)
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.2", server.port))
            fillers.append(s)
        resolver = MapResolver({"dual.test": ["127.0.0.2", "127.0.0.1"]})
        client = H1Client(POLICY, resolver=resolver, connect_timeout=5.0)
        try:
            started = time.monotonic()
            _, body = await fetch(client, server.url(host="dual.test"))
            assert time.monotonic() - started < 2
        finally:
            await client.close()
            for s in [*fillers, blackhole]:
                s.close()
    assert body == b"second address"


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs.make(tmp_path)  # a test CA and a leaf for 127.0.0.1 only


async def test_tls_with_a_trusted_certificate(certs: Certs) -> None:
    client = H1Client(POLICY, tls=certs.client_context())
    try:
        async with Scripted(replies(ok(b"secure"), ok(b"again")), tls=certs.server_context()) as s:
            _, first = await fetch(client, s.url())
            _, second = await fetch(client, s.url())
        assert (first, second) == (b"secure", b"again") and s.connections == 1
    finally:
        await client.close()


async def test_tls_refuses_an_untrusted_certificate(certs: Certs) -> None:
    client = H1Client(POLICY)  # the system's CAs: the test CA is not one of them
    try:
        async with Scripted(replies(ok()), tls=certs.server_context()) as server:
            with pytest.raises(UpstreamError, match="could not be reached"):
                await client.request("GET", server.url(), {}, None)
            assert server.requests == []
    finally:
        await client.close()


async def test_tls_refuses_a_certificate_for_another_name(certs: Certs) -> None:
    client = H1Client(POLICY, tls=certs.client_context())
    try:
        async with Scripted(replies(ok()), tls=certs.server_context()) as server:
            with pytest.raises(UpstreamError, match="could not be reached"):
                await client.request("GET", server.url(host="localhost"), {}, None)
            assert server.requests == []
    finally:
        await client.close()


async def test_a_tls_handshake_that_never_ends_is_bounded_by_the_connect_timeout() -> None:
    async def silent(peer: Peer) -> None:
        await peer.wait_eof()

    client = H1Client(POLICY, connect_timeout=0.3)
    try:
        async with Scripted(silent) as server:
            started = time.monotonic()
            with pytest.raises(UpstreamError, match="in time"):
                await client.request("GET", server.url().replace("http:", "https:"), {}, None)
            assert time.monotonic() - started < 2
            await server.eof_of(0)
    finally:
        await client.close()


def test_the_default_tls_context_verifies_chain_and_name() -> None:
    context = default_tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
