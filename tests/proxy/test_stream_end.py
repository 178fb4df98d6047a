"""The end of a relayed event stream reaches the client (DESIGN §9: relayed bodies end when the
upstream's end, under any concurrency and any upstream write pattern).

One freshly started `bindify serve` process and one Tornado upstream (chunked event streams, in
this test's loop) serve every iteration: twenty concurrent streams through one connection, over
three upstream write patterns, GET and POST. The client reads raw bytes and parses the HTTP/1.1
framing itself, so what it checks is exactly what went over the wire: the upstream ends its
event stream with the terminating chunk, and so must the relayed stream, whatever the timing.
No retries: every stream of every iteration must end.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
import tornado.web
from support.appliance import Appliance, admin_token, api_post
from support.ports import free_socket
from tornado.httpserver import HTTPServer

EVENT = b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\n\n'
EVENTS = 10
STREAMS = 20  # concurrent streams per iteration, all through one connection
ITERATIONS = 204  # 34 per (pattern, method)
PATTERNS = ("one-write-per-event", "coalesced", "end-after-pause")
CALL = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slow","arguments":{}}}'


class _Upstream:
    pattern = PATTERNS[0]


class _EventStream(tornado.web.RequestHandler):
    """Ten events, written as `_Upstream.pattern` says, then the end of a chunked response."""

    def initialize(self, up: type[_Upstream]) -> None:
        self.up = up

    def check_xsrf_cookie(self) -> None:
        pass

    async def get(self) -> None:
        await self._stream()

    async def post(self) -> None:
        await self._stream()

    async def _stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        pattern = self.up.pattern
        if pattern == "coalesced":
            await self.flush()  # headers alone, so the body is chunked
            self.write(EVENT * EVENTS)  # every event in one write, the end right behind it
        else:
            for _ in range(EVENTS):
                self.write(EVENT)
                await self.flush()
            if pattern == "end-after-pause":
                await asyncio.sleep(0.02)
        self.finish()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], str, bytes]:
    """(status, headers, framing, body) of one HTTP/1.1 response, parsed from raw bytes."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers: dict[str, str] = {}
    for line in head[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return (
            status,
            headers,
            "content-length",
            await reader.readexactly(int(headers["content-length"])),
        )
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        if size == 0:
            assert await reader.readuntil(b"\r\n") == b"\r\n"
            return status, headers, "chunked", body
        body += await reader.readexactly(size)
        assert await reader.readexactly(2) == b"\r\n", "a chunk without its closing CRLF"


async def _one_stream(port: int, method: str, api_key: str) -> tuple[int, str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = CALL if method == "POST" else b""
    writer.write(
        (
            f"{method} /mcp/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {api_key}\r\n"
            "Accept: application/json, text/event-stream\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    try:
        # Generous: a healthy stream ends in milliseconds; only a lost end takes this long.
        async with asyncio.timeout(20):
            status, _headers, framing, received = await _read_response(reader)
    except TimeoutError:
        return 0, "no end within 20 s", b""
    finally:
        writer.close()
    return status, framing, received


@pytest.mark.slow
async def test_every_relayed_event_stream_ends_like_the_upstreams(tmp_path: Path) -> None:
    sockets, upstream_port = free_socket()
    server = HTTPServer(
        tornado.web.Application(
            [(r"/mcp", _EventStream, {"up": _Upstream})], log_function=lambda handler: None
        )
    )
    server.add_sockets(sockets)
    data = tmp_path / "data"
    token = admin_token(data)
    app = Appliance(data, {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true"}).start()
    try:
        service = {
            "id": "stream",
            "name": "Stream",
            "mcp_url": f"http://127.0.0.1:{upstream_port}/mcp",
            "auth": {"type": "none"},
        }
        await asyncio.to_thread(api_post, app, token, "/services", service)
        made = await asyncio.to_thread(api_post, app, token, "/connections", {"service": "stream"})
        api_key = made["api_key"]
        combos = itertools.cycle(itertools.product(PATTERNS, ("GET", "POST")))
        for iteration in range(ITERATIONS):
            pattern, method = next(combos)
            _Upstream.pattern = pattern
            results = await asyncio.gather(
                *(_one_stream(app.port, method, api_key) for _ in range(STREAMS))
            )
            for status, framing, received in results:
                where = f"iteration {iteration}, {pattern}, {method}"
                assert status == 200, f"{where}: {framing}"
                assert received == EVENT * EVENTS, where
                # The upstream ended a chunked stream: the client must see its terminating chunk.
                assert framing == "chunked", f"{where}: the stream was framed by {framing}"
    finally:
        server.stop()
        await server.close_all_connections()
        assert app.stop() == 0
