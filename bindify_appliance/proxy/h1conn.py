"""One upstream socket of the lean client: the asyncio protocol under `h1client.Response`.

It hands received bytes to the exchange in progress, closes itself on bytes nobody asked for
(an idle connection is out of step with its peer: never reused), and pauses and resumes reading
for the exchange's flow control. One exchange at a time (no pipelining).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bindify_appliance.proxy.h1client import Response

__all__ = ["H1Connection"]


class H1Connection(asyncio.Protocol):
    """One upstream socket; `response` is the exchange on it, None while idle.

    `on_idle(conn)` is called by `Response.release` when the connection may be reused.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, key: object, high_water: int = 64 * 1024
    ) -> None:
        self.loop = loop
        self.key = key
        self.high_water = high_water
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.closed = False
        self.paused = False
        self.exchanges = 0  # completed before the current one: > 0 means a reused connection
        self.expires = 0.0
        self.on_idle: Callable[[H1Connection], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            self.abort()  # bytes on an idle connection: the peer is out of step, never reuse
            return
        response.feed(data)

    def eof_received(self) -> bool:
        return False  # half-closed is closed: the transport closes, `connection_lost` follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None:
            response.lost()

    def abort(self) -> None:
        """Close the socket now (no flush, no TLS close-notify wait)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            if not self.closed:
                self.transport.resume_reading()

    def start(self, request: bytes, head_only: bool) -> Response:
        """Write `request` (head and body) and return the exchange awaiting its answer."""
        assert self.response is None and self.transport is not None
        response = Response(self, head_only)
        self.response = response
        if self.closed:  # the peer closed while this connection was being made
            response.lost()
            return response
        self.transport.write(request)
        return response

    def idle(self) -> None:
        """The exchange ended cleanly: back to waiting, reading on (to see the peer close)."""
        self.response = None
        self.exchanges += 1
        self.resume()
        if self.on_idle is not None:
            self.on_idle(self)
        else:
            self.abort()
