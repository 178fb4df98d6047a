"""DESIGN §9 timeouts: request headers and request bodies must arrive within 60 s each.

Before, a client sending half a header kept its connection (and a slot of the server) for the
3600 s idle timeout. The server `serve` runs is built by `http_server`; here it is built with
short timeouts and attacked over a real socket, and its production values are checked.
"""

from __future__ import annotations

import asyncio

import tornado.web
from support.ports import free_socket

from bindify_appliance.server import BODY_TIMEOUT, HEADER_TIMEOUT, http_server


class Echo(tornado.web.RequestHandler):
    def post(self) -> None:
        self.write(self.request.body)


async def _closed_within(port: int, data: bytes, limit: float) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        got = await asyncio.wait_for(reader.read(), limit)
    except TimeoutError:
        return False
    finally:
        writer.close()
    return got == b""


async def test_half_sent_headers_and_bodies_are_cut_off() -> None:
    app = tornado.web.Application([("/", Echo)])
    server = http_server(app, header_timeout=0.5, body_timeout=0.5)
    sockets, port = free_socket()
    server.add_sockets(sockets)
    try:
        assert await _closed_within(port, b"POST / HTTP/1.1\r\nHost: x\r\n", 5)
        assert await _closed_within(
            port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf", 5
        )
        # A request that arrives whole is answered.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        answer = await asyncio.wait_for(reader.readuntil(b"ok"), 5)
        assert answer.startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        server.stop()


def test_production_timeouts_are_sixty_seconds() -> None:
    assert HEADER_TIMEOUT == 60
    assert BODY_TIMEOUT == 60
    server = http_server(tornado.web.Application([]))
    params = server.conn_params  # type: ignore[attr-defined]
    assert params.header_timeout == 60
    assert params.body_timeout == 60
