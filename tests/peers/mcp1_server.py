"""A 2025-11-25-era MCP upstream: `mcp` 1.30.0 `FastMCP`, run by `.venv-mcp1/bin/python`.

Usage: python mcp1_server.py --fd N [--transport streamable|sse] [--stateless] [--json]

Serves on a listening socket inherited from the test (fd N). Tools: add, echo, progress;
resource res://greeting; prompt greet(name) — the same surface as `mcp2_server.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import threading
import time

import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from mcp.types import ToolAnnotations


def build(stateless: bool, json_response: bool) -> FastMCP:
    server = FastMCP(
        "bindify-test-upstream-1x", stateless_http=stateless, json_response=json_response
    )

    # Annotations for the tool-policy tests (read_only keeps only readOnlyHint true).
    read_only = ToolAnnotations(readOnlyHint=True)

    @server.tool(annotations=read_only)
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool(annotations=read_only)
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True))
    def wipe() -> str:
        """A destructive tool (does nothing)."""
        return "wiped"

    @server.tool()
    async def progress(steps: int, interval: float, ctx: Context) -> str:
        """Report progress `steps` times, `interval` seconds apart."""
        for i in range(steps):
            await ctx.report_progress(i + 1, steps)
            if i + 1 < steps:
                await asyncio.sleep(interval)
        return f"done {steps}"

    @server.resource("res://greeting")
    def greeting() -> str:
        """A fixed resource."""
        return "hello from upstream 1.x"

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
    args = parser.parse_args()
    server = build(args.stateless, args.json)
    app = server.sse_app() if args.transport == "sse" else server.streamable_http_app()
    sock = socket.socket(fileno=args.fd)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
