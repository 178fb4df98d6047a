"""A real MCP upstream built with the `mcp` 2.x SDK (`MCPServer`), run as a subprocess by tests.

Usage: python mcp2_server.py --fd N [--transport streamable|sse] [--stateless] [--json]
                             [--event-store] [--retry-ms N]

It serves on an already-listening socket inherited from the test (fd N), so the test knows the
port before the server starts and can restart the server on the same port. Binds nothing itself.

Tools: add, echo, whoami (headers the upstream received), progress (steps x interval with
progress notifications), sleep (a long call with no progress), resumable (closes its SSE stream
mid-way so the client must resume with Last-Event-ID; needs --event-store).
Resources: res://greeting, template res://item/{name}. Prompt: greet(name).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import threading
import time
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import ToolAnnotations


class MemoryEventStore(EventStore):
    """The smallest event store that makes the server resumable."""

    def __init__(self) -> None:
        self._events: list[tuple[StreamId, EventId, Any]] = []
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: Any) -> EventId:
        event_id = f"{stream_id}:{next(self._ids)}"
        self._events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        position = next(
            (i for i, (_, eid, _) in enumerate(self._events) if eid == last_event_id), None
        )
        if position is None:
            return None
        stream_id = self._events[position][0]
        for sid, eid, message in self._events[position + 1 :]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, eid))
        return stream_id


def build() -> MCPServer:
    server = MCPServer("bindify-test-upstream")

    # Annotations for the tool-policy tests (read_only keeps only readOnlyHint true).
    read_only = ToolAnnotations.model_validate({"readOnlyHint": True})

    @server.tool(annotations=read_only)
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool(annotations=read_only)
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    @server.tool(
        annotations=ToolAnnotations.model_validate({"readOnlyHint": False, "destructiveHint": True})
    )
    def wipe() -> str:
        """A destructive tool (does nothing)."""
        return "wiped"

    @server.tool()
    def whoami(ctx: Context) -> dict[str, str]:
        """The request headers this upstream received."""
        return {k.lower(): v for k, v in (ctx.headers or {}).items()}

    @server.tool()
    async def progress(steps: int, interval: float, ctx: Context) -> str:
        """Report progress `steps` times, `interval` seconds apart."""
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
            if i + 1 < steps:
                await asyncio.sleep(interval)
        return f"done {steps}"

    @server.tool()
    async def sleep(seconds: float) -> str:
        """A long call that sends nothing until it returns."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool()
    async def resumable(ctx: Context) -> str:
        """Two progress events, a server-side cut of the stream, two more, then the result."""
        await ctx.report_progress(1, 4)
        await ctx.report_progress(2, 4)
        close = ctx.request_context.close_sse_stream
        if close is None:
            return "not resumable"  # no event store, or the client's revision has no polling
        await close()
        await asyncio.sleep(0.3)
        await ctx.report_progress(3, 4)
        await ctx.report_progress(4, 4)
        return "resumed"

    @server.resource("res://greeting")
    def greeting() -> str:
        """A fixed resource."""
        return "hello from upstream"

    @server.resource("res://item/{name}")
    def item(name: str) -> str:
        """A templated resource."""
        return f"item {name}"

    @server.prompt()
    def greet(name: str) -> str:
        """A prompt with one argument."""
        return f"Say hello to {name}."

    return server


def exit_with_parent() -> None:
    """Die when the test process does, even if it was killed before stopping us."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    exit_with_parent()
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--transport", choices=["streamable", "sse"], default="streamable")
    parser.add_argument("--stateless", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--event-store", action="store_true")
    parser.add_argument("--retry-ms", type=int, default=None)
    args = parser.parse_args()

    server = build()
    if args.transport == "sse":
        app = server.sse_app()
    else:
        app = server.streamable_http_app(
            stateless_http=args.stateless,
            json_response=args.json,
            event_store=MemoryEventStore() if args.event_store else None,
            retry_interval=args.retry_ms,
        )
    sock = socket.socket(fileno=args.fd)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
