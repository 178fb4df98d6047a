"""The streaming half of a relayed exchange: open the upstream request (with the one refresh and
retry an upstream 401/403 earns) and pump its body to the client.

Pumping rules (DESIGN §6):
- No buffering: every chunk is written and flushed as it arrives. The last chunk of a body is
  written together with the end of the response, which is not buffering: nothing is held back.
  A body that is not an event stream and came whole (already buffered when the pump starts) goes
  out in one write with a `Content-Length`.
- Event streams get their headers on the wire with their first bytes, or after `HEADERS_GRACE`
  (5 ms) of upstream silence, whichever comes first (a client waits on them; an answer that
  follows its headers at once goes out in one write instead of two), `X-Accel-Buffering: no`
  (set by the handler) and an SSE comment keep-alive after `keepalive` seconds of upstream
  silence — only when the bytes relayed so far end between two events.
- An event stream always goes out as a stream: its headers are on the wire before its end, so
  its framing (chunked, ending with the terminating chunk) never depends on timing. Without this,
  an upstream whose last event and end were already buffered when the pump started (common under
  concurrency: the handler awaits between the upstream's headers and the pump) had its stream
  sent with a `Content-Length` instead, and a client reading the stream to its terminating
  chunk waited for it forever.
- No total timeout anywhere: a stream lasts as long as both ends keep it.
- Backpressure: the next upstream chunk is read only once the previous one is flushed to the
  client, so a slow client slows the upstream read instead of growing memory.

Cancellation is the handler's: when the client leaves, the handler cancels the task running
`pump`, and the caller's `finally` closes the upstream response (its socket closes at once).

Invariant: nothing here logs payload bytes, URLs or headers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bindify_appliance.connections.needs_reconnect import needs_reconnect_at
from bindify_appliance.proxy.sse import KEEPALIVE, BoundaryTracker
from bindify_appliance.proxy.target import ProxyRefusal, ProxyTarget, TargetResolver
from bindify_appliance.proxy.upstream import UpstreamClient, UpstreamResponse

__all__ = [
    "Downstream",
    "ProxyConfig",
    "needs_reconnect",
    "open_upstream",
    "pump",
    "spawn",
]

log = logging.getLogger(__name__)

# Seconds an event stream's headers wait for its first bytes before they go out alone.
HEADERS_GRACE = 0.005


@dataclass(frozen=True)
class ProxyConfig:
    """Tunables of the relay; defaults are the production values."""

    keepalive_interval: float = 15.0  # seconds of upstream silence before an SSE comment
    legacy_post_timeout: float = 60.0  # some legacy upstreams never answer a bad message POST
    session_ttl: float = 24 * 3600.0  # upstream Mcp-Session-Id bindings, renewed on use
    legacy_session_ttl: float = 300.0  # legacy SSE bindings, renewed while the stream is open
    unknown_credential_limit: int = 30  # unknown-credential hits per IP per window → 429
    unknown_credential_window: float = 600.0
    max_event_bytes: int = 16 * 1024 * 1024  # one legacy SSE event, held while it is parsed
    tool_catalog_ttl: float = 1.0  # read-only flags learnt from tools/list (the memo's TTL)


class Downstream(Protocol):
    """What `pump` needs from the client side (a Tornado RequestHandler fits)."""

    def write(self, chunk: bytes) -> None: ...

    def flush(self) -> Awaitable[None]: ...


async def open_upstream(
    upstream: UpstreamClient,
    resolver: TargetResolver,
    target: ProxyTarget,
    method: str,
    build: Callable[[ProxyTarget], tuple[str, Mapping[str, str]]],
    body: bytes | None,
    *,
    timeout: float | None = None,
) -> tuple[ProxyTarget, UpstreamResponse]:
    """Send the request; on 401/403 refresh once through the resolver and retry once.

    `build(target)` returns the URL and headers for a target (credentials differ after a
    refresh). The buffered `body` is what makes the retry possible.

    Returns the target actually used and the response (headers in, body unread). A second
    401/403 is returned as is; the caller turns it into the needs-reconnect reply.

    Raises:
        UpstreamError: the upstream could not be reached (either attempt).
        ProxyRefusal: the resolver refused to refresh (needs reconnect, cool-down, …).
    """
    url, headers = build(target)
    response = await _request(upstream, target, method, url, headers, body, timeout)
    if response.status not in (401, 403):
        return target, response
    status = response.status
    response.close()  # the challenge body is the upstream's, and is never relayed
    target = await resolver.after_upstream_auth_failure(target, status)
    url, headers = build(target)
    response = await _request(upstream, target, method, url, headers, body, timeout)
    return target, response


async def _request(
    upstream: UpstreamClient,
    target: ProxyTarget,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    timeout: float | None,
) -> UpstreamResponse:
    """One upstream request, its time to headers reported to `upstream.observe` (metrics)."""
    started = time.monotonic()
    response = await upstream.request(
        method, url, headers, body, timeout=timeout, service=target.service_id
    )
    observe = upstream.observe
    if observe is not None:
        observe(target.service_id, time.monotonic() - started)
    return response


def needs_reconnect(target: ProxyTarget) -> ProxyRefusal:
    """The refusal for an upstream that still refuses the credential after one refresh."""
    return needs_reconnect_at(
        target.reconnect_url or None, "the upstream no longer accepts its credentials"
    )


async def pump(
    response: UpstreamResponse,
    out: Downstream,
    *,
    keepalive: float | None = None,
    flush_headers: bool = False,
    transform: Callable[[bytes], Awaitable[bytes]] | None = None,
    every: tuple[float, Callable[[], Awaitable[None]]] | None = None,
) -> None:
    """Copy the upstream body to `out` until the upstream ends it.

    `keepalive`: seconds of upstream silence before a keep-alive comment (event streams only).
    `flush_headers` (event streams): send the response headers with the first bytes, or after
    `HEADERS_GRACE` if none came, and in any case before the end (framed as a stream).
    `transform`: rewrites each chunk (legacy streams; it must return whole events only).
    `every`: (interval, callback) run while the stream is open (legacy binding renewal).

    Timing costs nothing per chunk: one timer per stream (`_Watch`) interrupts a waiting read
    only when something is due, and is re-armed lazily (a chunk only notes the time).

    Returns when the upstream body is complete; the caller finishes the response.

    Raises:
        UpstreamError: the upstream broke the body mid-way.
        tornado.iostream.StreamClosedError: the client went away.
    """
    tracker = BoundaryTracker() if keepalive else None
    # Event streams: whether anything went out yet. The end of a stream must never be what
    # sends its headers, or the response would be framed by a Content-Length (see above).
    flushed = False

    async def end() -> None:
        if flush_headers and not flushed:
            await out.flush()  # headers (and the last chunk) now; the caller's finish ends it

    chunk: bytes | None = response.read_buffered()
    loop = asyncio.get_running_loop()
    headers_due = float("inf")
    if not chunk and not response.at_eof():
        chunk = None  # nothing yet: wait below
        if flush_headers:
            headers_due = loop.time() + HEADERS_GRACE
    watch = (
        _Watch(loop, keepalive, every[0] if every is not None else None, headers_due)
        if keepalive is not None or every is not None or headers_due != float("inf")
        else None
    )
    try:
        while True:
            if chunk is None:
                if watch is None:
                    chunk = await response.read_chunk()
                else:
                    due = await watch.read(response)
                    if due is None:
                        chunk = watch.chunk
                    else:
                        if due.headers and not flushed:
                            await out.flush()
                            flushed = True
                        if due.tick and every is not None:
                            await every[1]()
                        # Mid-event silence: wait another interval rather than corrupt it.
                        if due.keepalive and tracker is not None and tracker.at_boundary:
                            out.write(KEEPALIVE)
                            await out.flush()
                            flushed = True
                        continue
            if not chunk:
                await end()
                return
            if transform is not None:
                chunk = await transform(chunk)
            eof = response.at_eof()
            if chunk:
                out.write(chunk)
                if tracker is not None:
                    tracker.feed(chunk)
            if eof:
                await end()
                return
            if chunk or (flush_headers and not flushed):  # a held-back event: headers go now
                await out.flush()
                flushed = True
                if watch is not None:
                    watch.headers_due = math.inf
            chunk = None
    finally:
        if watch is not None:
            watch.close()


# Timers may fire a little early (loop clock resolution): a deadline this close counts as due.
_SLACK = 0.001


@dataclass
class _Due:
    """What a `_Watch` interrupted a read for."""

    headers: bool = False
    keepalive: bool = False
    tick: bool = False


class _Watch:
    """The one timer of a pumped stream: header grace, keep-alive silence and the `every` tick.

    `read` awaits the next chunk; when a deadline passes while it waits, the timer cancels the
    read (cancelling a read of the upstream client loses no bytes) and `read` returns what is
    due instead. A chunk only records the time: the timer, armed for the earliest deadline,
    re-arms itself when activity moved the keep-alive deadline on, so a busy stream never
    touches it.
    """

    __slots__ = (
        "_fired",
        "_handle",
        "_loop",
        "_task",
        "chunk",
        "every",
        "headers_due",
        "keepalive",
        "last_activity",
        "next_tick",
        "waiting",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        keepalive: float | None,
        every: float | None,
        headers_due: float,
    ) -> None:
        now = loop.time()
        self._loop = loop
        self._task = asyncio.current_task()
        self.keepalive = keepalive
        self.every = every
        self.headers_due = headers_due
        self.last_activity = now
        self.next_tick = now + every if every is not None else float("inf")
        self.waiting = False
        self.chunk = b""
        self._fired = False
        self._handle: asyncio.TimerHandle | None = None
        self._arm()

    def _deadline(self) -> float:
        silence = self.last_activity + self.keepalive if self.keepalive is not None else math.inf
        return min(silence, self.next_tick, self.headers_due)

    def _arm(self) -> None:
        deadline = self._deadline()
        self._handle = (
            self._loop.call_at(deadline, self._on_timer) if deadline != math.inf else None
        )

    def _on_timer(self) -> None:
        self._handle = None
        if self._loop.time() + _SLACK < self._deadline():
            self._arm()  # activity moved the deadline on since this was armed
        elif self.waiting and self._task is not None:
            self._fired = True
            self._task.cancel()
        # Not waiting (a flush to a slow client): `read` sees the deadline itself.

    async def read(self, response: UpstreamResponse) -> _Due | None:
        """The next chunk into `self.chunk` (None returned), or what fell due meanwhile."""
        due = self._due()
        if due is not None:
            return due
        if self._handle is None:
            self._arm()
        self.waiting = True
        try:
            self.chunk = await response.read_chunk()
        except asyncio.CancelledError:
            if not self._fired or self._task is None:
                raise
            self._fired = False
            if self._task.uncancel() > 0:
                raise  # cancelled by someone else as well
            return self._due() or _Due()
        finally:
            self.waiting = False
        self.last_activity = self._loop.time()
        return None

    def _due(self) -> _Due | None:
        now = self._loop.time() + _SLACK
        if now < self._deadline():
            return None
        due = _Due()
        if now >= self.headers_due:
            due.headers = True
            self.headers_due = math.inf
        if now >= self.next_tick and self.every is not None:
            due.tick = True
            self.next_tick = now + self.every
        if self.keepalive is not None and now >= self.last_activity + self.keepalive:
            due.keepalive = True
            self.last_activity = now
        if self._handle is None:
            self._arm()
        return due

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._task = None


_background: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, None], what: str) -> None:
    """Run bookkeeping off the hot path; failures are logged by category, never by content."""

    def done(task: asyncio.Task[Any]) -> None:
        _background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.warning(
                "%s failed: %s", what, type(exc).__name__, extra={"event": "proxy_bookkeeping"}
            )

    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(done)
