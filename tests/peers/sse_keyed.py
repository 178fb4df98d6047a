"""A legacy HTTP+SSE MCP server behind an API-key check, in-process on loopback.

The `mcp` SDK's `MCPServer.sse_app()` (GET `/sse` opens the stream and sends the `endpoint`
event; POST `/messages/?session_id=…` takes the messages, whose answers arrive on the stream),
wrapped so every request must carry one of `keys` as its `Authorization` header, else 401.
A POST to `/sse` gets 405, as from any legacy server. `seen` records each request's
(method, path, Authorization) for the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from support.ports import free_socket

__all__ = ["SseKeyedUpstream"]


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner owns the signals
        yield


class SseKeyedUpstream:
    def __init__(self, keys: set[str]) -> None:
        self.keys = keys
        self.seen: list[tuple[str, str, str]] = []
        server = MCPServer("sse-keyed-upstream")

        @server.tool()
        def echo(text: str = "") -> str:
            """Echo the text."""
            return text

        self._app = server.sse_app()
        sockets, self.port = free_socket()
        self._sock = sockets[0]
        self._server: _QuietServer | None = None
        self._task: asyncio.Future[Any] | None = None

    @property
    def sse_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sse"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
            presented = headers.get("authorization", "")
            self.seen.append((scope["method"], scope["path"], presented))
            if presented not in self.keys:
                body = b'{"error":"invalid_key"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self._app(scope, receive, send)

    async def __aenter__(self) -> SseKeyedUpstream:
        self._sock.listen(64)
        config = uvicorn.Config(self, log_level="warning", lifespan="off")
        self._server = _QuietServer(config)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._sock]))
        for _ in range(500):
            if self._server.started:
                return self
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise RuntimeError("the SSE upstream did not start")

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # open event streams would hold a graceful exit
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, 10)
        self._sock.close()
