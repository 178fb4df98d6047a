"""Reading the JSON-RPC messages out of an MCP server's HTTP answer (JSON or an SSE stream).

Used by the appliance's own small MCP exchanges (the API-key check's handshake, the keep-alive),
never by the proxy, which relays bytes without reading them.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from bindify_appliance.outbound import OutboundResponse

__all__ = ["rpc_messages", "rpc_result"]


def rpc_messages(response: OutboundResponse) -> list[Any]:
    """JSON-RPC messages of a JSON or SSE answer; unparseable parts are skipped."""
    if response.content_type == "text/event-stream":
        out: list[Any] = []
        data: list[str] = []
        for line in [*response.text.splitlines(), ""]:
            if line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif not line and data:
                with contextlib.suppress(ValueError, RecursionError):
                    out.append(json.loads("\n".join(data)))
                data = []
        return out
    try:
        value = response.json()
    except (ValueError, RecursionError):
        return []
    return value if isinstance(value, list) else [value]


def rpc_result(response: OutboundResponse, request_id: int) -> dict[str, Any]:
    """The `result` of the answer to `request_id`.

    Raises ValueError when the answer is an error or is missing.
    """
    for message in rpc_messages(response):
        if isinstance(message, dict) and message.get("id") == request_id:
            result = message.get("result")
            if isinstance(result, dict):
                return result
            raise ValueError("the MCP server answered with an error")
    raise ValueError("no answer to the request in the MCP response")
