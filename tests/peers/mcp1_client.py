"""A 2025-11-25-era MCP client: `mcp` 1.30.0 `ClientSession`, run by `.venv-mcp1/bin/python`.

Usage: python mcp1_client.py URL http|sse [HEADERS_JSON]   (env PROGRESS_INTERVAL, default 0.05 s)

Connects (Streamable HTTP via `streamablehttp_client`, or legacy SSE via `sse_client`), runs
tools/list, tools/call add, tools/call progress (recording when each progress notification
arrives), resources/list + read, prompts/list + get, ping — and prints one JSON object with what
it saw. Errors are printed as {"error": "..."} with exit status 1.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from typing import Any

from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamablehttp_client


async def exercise(session: ClientSession) -> dict[str, Any]:
    out: dict[str, Any] = {}
    init = await session.initialize()
    out["protocol_version"] = init.protocolVersion
    out["server_name"] = init.serverInfo.name
    tools = await session.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    added = await session.call_tool("add", {"a": 2, "b": 40})
    out["add"] = added.content[0].text  # type: ignore[union-attr]
    stamps: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        stamps.append(time.monotonic())

    interval = float(os.environ.get("PROGRESS_INTERVAL", "0.05"))
    result = await session.call_tool(
        "progress", {"steps": 3, "interval": interval}, progress_callback=on_progress
    )
    out["progress_result"] = result.content[0].text  # type: ignore[union-attr]
    out["progress_gaps"] = [b - a for a, b in itertools.pairwise(stamps)]
    resources = await session.list_resources()
    out["resources"] = sorted(str(r.uri) for r in resources.resources)
    read = await session.read_resource("res://greeting")  # type: ignore[arg-type]
    out["greeting"] = read.contents[0].text  # type: ignore[union-attr]
    prompts = await session.list_prompts()
    out["prompts"] = sorted(p.name for p in prompts.prompts)
    prompt = await session.get_prompt("greet", {"name": "Ada"})
    out["prompt"] = prompt.messages[0].content.text  # type: ignore[union-attr]
    await session.send_ping()
    out["ping"] = True
    return out


async def probe_policy(session: ClientSession) -> dict[str, Any]:
    """MCP1_CLIENT_MODE=policy: what a tool policy lets through (tools/list, a read-only call,
    a refused call and its JSON-RPC error)."""
    await session.initialize()
    out: dict[str, Any] = {}
    tools = await session.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    added = await session.call_tool("add", {"a": 2, "b": 40})
    out["add"] = added.content[0].text  # type: ignore[union-attr]
    try:
        await session.call_tool("wipe", {})
        out["wipe"] = "called"
    except Exception as exc:  # McpError carries the JSON-RPC error
        error = getattr(exc, "error", None)
        out["wipe"] = {"code": getattr(error, "code", None), "message": str(exc)}
    return out


async def main() -> int:
    url, transport = sys.argv[1], sys.argv[2]
    headers = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    run = probe_policy if os.environ.get("MCP1_CLIENT_MODE") == "policy" else exercise
    if transport == "sse":
        async with (
            sse_client(url, headers=headers) as (read, write),
            ClientSession(read, write) as session,
        ):
            result = await run(session)
    else:
        async with (
            streamablehttp_client(url, headers=headers) as (
                read,
                write,
                _,
            ),
            ClientSession(read, write) as session,
        ):
            result = await run(session)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    try:
        status = asyncio.run(main())
    except Exception as exc:  # report, don't dump a traceback into the test's assertion
        print(json.dumps({"error": f"{type(exc).__name__}: {exc!r}"}))
        status = 1
    sys.exit(status)
