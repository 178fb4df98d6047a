"""Checking an API key over the legacy HTTP+SSE MCP transport (services with `"transport": "sse"`).

A legacy server takes no POST on its stream URL (405), so the Streamable HTTP check would
refuse every key. Over SSE the check is the transport's own handshake:

1. GET the SSE URL with the key (and `Accept: text/event-stream`); any status but 200 is the
   server's verdict on the key and is returned as the rejection (body bounded);
2. read events until `endpoint`; its data is the URL for messages, resolved against the SSE
   URL and accepted only on the same origin (the key is sent there too — never elsewhere);
3. POST `initialize` there with the key; a 401/403 (or any non-2xx) is the rejection;
4. read the stream until the answer with id 1: a `result` accepts the key, an `error`
   rejects it; then leave, which closes the stream.

The whole check is bounded by `timeout`; running out raises `OutboundError("timeout")`, a
stream that ends early or speaks nonsense raises `OutboundError` too (502, never a verdict on
the key). Invariant: the key travels only in the headers and query the caller built; no event
data, key or body is logged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bindify_appliance.errors import OutboundError
from bindify_appliance.outbound import OutboundClient, OutboundResponse, same_origin

__all__ = ["check_over_sse"]

TIMEOUT: Final = 15.0
MAX_EVENT: Final = 256 * 1024
MAX_REJECTION_BODY: Final = 4096


async def _events(lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) per server-sent event; data lines joined with newlines."""
    name, data, size = "message", list[str](), 0
    async for raw in lines:
        size += len(raw)
        if size > MAX_EVENT:
            raise OutboundError("an event from the server is too large", reason="too_large")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data, size = "message", [], 0
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    raise OutboundError("the server closed the event stream", reason="unreachable")


def _response(status: int, body: bytes) -> OutboundResponse:
    return OutboundResponse(status=status, headers=CIMultiDictProxy(CIMultiDict()), body=body)


async def _read_rejection(lines: AsyncIterator[bytes]) -> bytes:
    body = b""
    async for line in lines:
        body += line
        if len(body) >= MAX_REJECTION_BODY:
            break
    return body[:MAX_REJECTION_BODY]


async def check_over_sse(
    outbound: OutboundClient,
    sse_url: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    initialize: dict[str, Any],
    *,
    timeout: float = TIMEOUT,
) -> OutboundResponse | None:
    """The module docstring's check; the rejecting answer, or None when the key works.

    `sse_url` already carries `query` (the key, for query injection); `query` is added to the
    messages URL as well.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _check(outbound, sse_url, headers, query, initialize)
    except TimeoutError:
        raise OutboundError(
            "the server did not finish the handshake in time", reason="timeout"
        ) from None


async def _check(
    outbound: OutboundClient,
    sse_url: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    initialize: dict[str, Any],
) -> OutboundResponse | None:
    opening = {**headers, "Accept": "text/event-stream", "Cache-Control": "no-store"}
    async with outbound.stream(sse_url, headers=opening) as (status, lines):
        if status != 200:
            return _response(status, await _read_rejection(lines))
        events = _events(lines)
        endpoint: URL | None = None
        async for name, data in events:
            if name == "endpoint":
                try:
                    endpoint = URL(sse_url).join(URL(data.strip()))
                except (ValueError, TypeError):
                    endpoint = None
                break
        if endpoint is None or not same_origin(URL(sse_url), endpoint):
            raise OutboundError(
                "the server's endpoint event names no usable URL", reason="bad_answer"
            )
        if query:
            endpoint = endpoint.update_query(dict(query))
        posted = await outbound.request(
            "POST",
            str(endpoint),
            headers={**headers, "Content-Type": "application/json"},
            body=json.dumps(initialize).encode(),
            follow_redirects=False,
        )
        if not 200 <= posted.status < 300:
            return posted
        async for name, data in events:
            if name != "message":
                continue
            try:
                message = json.loads(data)
            except ValueError:
                continue
            if not isinstance(message, dict) or message.get("id") != initialize.get("id"):
                continue
            if "result" in message:
                return None
            error = message.get("error")
            text = error.get("message") if isinstance(error, dict) else None
            return _response(posted.status, str(text or "initialize failed").encode())
    raise OutboundError("the server closed the event stream", reason="unreachable")
