"""A scriptable raw HTTP upstream (Tornado, in the test's own event loop) for what real MCP SDKs
cannot show: exactly which headers arrived, byte-level SSE framing, when a socket closed.

Routes (all under the server's own origin):
    /echo             any method: JSON of what arrived (method, path, query, header pairs, body);
                      answers with headers the proxy must drop (Set-Cookie, WWW-Authenticate, …)
    /status/{code}    answers `code` with a fixed JSON-RPC body and Allow/Retry-After headers
    /script           SSE, written step by step from `RawUpstream.script` (bytes or a pause)
    /hold             SSE: one event, then silence until the client goes; records the close
    /hold-silent      no response at all until the client goes; records the close
    /auth             401 + WWW-Authenticate unless `Authorization: Bearer good`
    /legacy/sse       legacy SSE stream: `RawUpstream.endpoint_chunks`, then holds
    /legacy/messages  legacy message POST: records it, 202 "Accepted"
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import tornado.web
from support.ports import free_socket
from tornado.httpserver import HTTPServer

Step = bytes | float  # bytes are written and flushed; a float pauses that many seconds


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


@dataclass
class RawUpstream:
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    script: Sequence[Step] = ()
    endpoint_chunks: Sequence[Step] = ()
    closed: dict[str, float] = field(default_factory=dict)  # route → monotonic close time
    opened: dict[str, float] = field(default_factory=dict)
    played: int = 0  # script steps written and flushed so far (a held-back reader stops it)
    server: HTTPServer | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def hits(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    async def start(self) -> None:
        sockets, self.port = free_socket()
        app = tornado.web.Application(
            [
                (r"/echo", _Echo, {"up": self}),
                (r"/status/(\d+)", _Status, {"up": self}),
                (r"/script", _Script, {"up": self}),
                (r"/hold", _Hold, {"up": self}),
                (r"/hold-silent", _HoldSilent, {"up": self}),
                (r"/auth", _Auth, {"up": self}),
                (r"/legacy/sse", _LegacySSE, {"up": self}),
                (r"/legacy/messages", _LegacyMessages, {"up": self}),
            ],
            log_function=lambda handler: None,
        )
        self.server = HTTPServer(app)
        self.server.add_sockets(sockets)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()


class _Base(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "POST", "DELETE", "PUT", "OPTIONS")

    def initialize(self, up: RawUpstream) -> None:
        self.up = up

    def prepare(self) -> None:
        self.up.requests.append(
            Seen(
                method=self.request.method or "",
                path=self.request.path,
                query=self.request.query,
                headers=list(self.request.headers.get_all()),
                body=self.request.body or b"",
            )
        )

    def check_xsrf_cookie(self) -> None:
        pass


class _Echo(_Base):
    def _answer(self) -> None:
        seen = self.up.requests[-1]
        status = int(self.get_query_argument("status", "200"))
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Set-Cookie", "upstream=1; Path=/")
        self.set_header("WWW-Authenticate", 'Bearer resource_metadata="http://x/"')
        self.set_header("X-Upstream-Secret", "s3cr3t")
        self.set_header("Mcp-Session-Id", self.get_query_argument("session", "echo-session"))
        self.set_header("Cache-Control", "no-store")
        self.finish(
            json.dumps(
                {
                    "method": seen.method,
                    "path": seen.path,
                    "query": seen.query,
                    "headers": seen.headers,
                    "body": seen.body.decode("latin-1"),
                }
            )
        )

    def get(self) -> None:
        self._answer()

    def post(self) -> None:
        self._answer()

    def delete(self) -> None:
        self._answer()


_STATUS_BODY = b'{"jsonrpc":"2.0","id":"srv","error":{"code":-32600,"message":"upstream says no"}}'


class _Status(_Base):
    def _answer(self, code: str) -> None:
        status = int(code)
        self.set_status(status)
        self.set_header("Allow", "POST")
        self.set_header("Retry-After", "7")
        self.set_header("WWW-Authenticate", "Bearer")
        if status in (204, 304):
            self.finish()
            return
        self.set_header("Content-Type", "application/json")
        self.finish(_STATUS_BODY if status != 202 else b"")

    def get(self, code: str) -> None:
        self._answer(code)

    def post(self, code: str) -> None:
        self._answer(code)

    def delete(self, code: str) -> None:
        self._answer(code)


async def _play(handler: tornado.web.RequestHandler, steps: Sequence[Step]) -> None:
    up = getattr(handler, "up", None)
    for step in steps:
        if isinstance(step, bytes):
            handler.write(step)
            await handler.flush()
        else:
            await asyncio.sleep(step)
        if up is not None:
            up.played += 1


class _Script(_Base):
    async def _run(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        await self.flush()
        await _play(self, self.up.script)
        self.finish()

    async def get(self) -> None:
        await self._run()

    async def post(self) -> None:
        await self._run()


class _Hold(_Base):
    async def _run(self) -> None:
        self.up.opened["/hold"] = time.monotonic()
        self._gone = asyncio.Event()
        self.set_header("Content-Type", "text/event-stream")
        self.write(b"event: message\ndata: {}\n\n")
        await self.flush()
        await self._gone.wait()

    def on_connection_close(self) -> None:
        self.up.closed["/hold"] = time.monotonic()
        self._gone.set()

    async def get(self) -> None:
        await self._run()

    async def post(self) -> None:
        await self._run()


class _HoldSilent(_Base):
    async def post(self) -> None:
        self.up.opened["/hold-silent"] = time.monotonic()
        self._gone = asyncio.Event()
        await self._gone.wait()

    def on_connection_close(self) -> None:
        self.up.closed["/hold-silent"] = time.monotonic()
        self._gone.set()


class _Auth(_Base):
    def post(self) -> None:
        if self.request.headers.get("Authorization") != "Bearer good":
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Bearer error="invalid_token"')
            self.set_header("Content-Type", "application/json")
            self.finish(b'{"error":"invalid_token"}')
            return
        self.set_header("Content-Type", "application/json")
        self.finish(b'{"jsonrpc":"2.0","id":1,"result":{}}')


class _LegacySSE(_Base):
    async def get(self) -> None:
        self.up.opened["/legacy/sse"] = time.monotonic()
        self._gone = asyncio.Event()
        self.set_header("Content-Type", "text/event-stream")
        await self.flush()
        await _play(self, self.up.endpoint_chunks)
        await self._gone.wait()

    def on_connection_close(self) -> None:
        self.up.closed["/legacy/sse"] = time.monotonic()
        self._gone.set()


class _LegacyMessages(_Base):
    def post(self) -> None:
        self.set_status(202)
        self.set_header("Content-Type", "text/plain")
        self.finish(b"Accepted")


def seen_json(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    data["headers"] = [tuple(pair) for pair in data["headers"]]
    return data
