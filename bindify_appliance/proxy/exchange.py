"""The relay of an admitted MCP proxy request to its upstream and back.

`RelayHandler` (on top of `AdmissionHandler`) holds what every proxy route does after
admission:
5. More than `BINDIFY_MAX_STREAMS_PER_CONNECTION` exchanges open on the connection here →
   -31029 (503 without an id), upstream never reached (`_open`).
6. Relay (`relay.open_upstream` + `relay.pump`); under a tool policy (DESIGN §13) the POST body
   is gated first (`_gate`) and `tools/list` answers are filtered (`_answer`); then
   `resolver.record_use` off the hot path (after the answer, or at the start of a stream).

A relayed `Content-Type` other than JSON or an event stream is sent as
`application/octet-stream` (`headers.response_headers`); an upstream 401/403 answers the client
with the reconnect refusal and records the use.

Invariants: `_guarded` always closes the upstream response and gives back the stream slot,
whatever ends the request (a departed client is a quiet end, a KV outage a 503); an upstream
failure before any header was sent becomes a refusal, after it the client's connection is cut.
No log line carries a credential, session id, URL query or payload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from tornado.iostream import StreamClosedError

from bindify_appliance.errors import KVError
from bindify_appliance.proxy.admission import KV_UNAVAILABLE, AdmissionHandler
from bindify_appliance.proxy.headers import request_headers, response_headers
from bindify_appliance.proxy.query import client_url
from bindify_appliance.proxy.relay import needs_reconnect, open_upstream, pump, spawn
from bindify_appliance.proxy.sse import SSEError
from bindify_appliance.proxy.target import ProxyRefusal, ProxyTarget
from bindify_appliance.proxy.tool_filter import SSERewriter, sse_event
from bindify_appliance.proxy.tool_gate import Admission, fetch_url
from bindify_appliance.proxy.upstream import UpstreamError, UpstreamResponse

__all__ = ["RelayHandler"]

log = logging.getLogger(__name__)

_UNAVAILABLE = "The upstream service could not be reached. Try again shortly."
_TOO_MANY_STREAMS = (
    "This connection has too many requests and streams open at once; retry when one ends "
    "(BINDIFY_MAX_STREAMS_PER_CONNECTION)."
)


class RelayHandler(AdmissionHandler):
    """Upstream opening, response relaying, use recording and cancellation."""

    async def _guarded(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work`, turning a departed client into a quiet end and closing the upstream."""
        self._task = asyncio.current_task()
        try:
            await work()
        except asyncio.CancelledError:
            if not self._client_gone or self._task is None:
                raise
            self._task.uncancel()
        except StreamClosedError:
            self._client_gone = True
        except KVError:
            log.warning(
                "key-value store unavailable during a proxied request", extra={"event": "kv"}
            )
            if not self._headers_written and not self._finished:
                self._reset_response()
                self._refuse(ProxyRefusal("upstream_unavailable", KV_UNAVAILABLE))
        finally:
            self._task = None
            response, self._upstream_response = self._upstream_response, None
            if response is not None:
                response.close()
            if self._slot is not None:
                self.proxy.streams.give_back(self._slot)
                self._slot = None

    async def _open(
        self,
        method: str,
        target: ProxyTarget,
        url: Callable[[ProxyTarget], str],
        body: bytes | None,
        *,
        timeout: float | None = None,
    ) -> tuple[ProxyTarget, UpstreamResponse] | None:
        """Open the upstream request; on failure answer the client and return None."""
        if self._slot is None:
            if not self.proxy.streams.take(target.connection_id):
                self._refuse(ProxyRefusal("rate_limited", _TOO_MANY_STREAMS, retry_after=1))
                return None
            self._slot = target.connection_id
        client_headers = list(self.request.headers.get_all())

        def build(t: ProxyTarget) -> tuple[str, Mapping[str, str]]:
            return client_url(url(t), self), request_headers(
                client_headers, t.inject_headers, t.inject_names
            )

        try:
            target, response = await open_upstream(
                self.proxy.upstream,
                self.proxy.resolver,
                target,
                method,
                build,
                body,
                timeout=timeout,
            )
        except UpstreamError:
            self._refuse(ProxyRefusal("upstream_unavailable", _UNAVAILABLE))
            return None
        except ProxyRefusal as refusal:
            self._refuse(refusal)
            return None
        self._upstream_response = response
        if response.status in (401, 403):
            self._record(target, response.status)
            self._refuse(needs_reconnect(target))
            return None
        return target, response

    def _use_kind(self) -> str:
        return f"{self._kind}:{(self.request.method or '').lower()}"

    def _record(self, target: ProxyTarget, status: int) -> None:
        """`record_use` in the background (streams and refusals: don't wait for it)."""
        spawn(
            self.proxy.resolver.record_use(target, upstream_status=status, kind=self._use_kind()),
            "record_use",
        )

    async def _record_after(self, target: ProxyTarget, status: int) -> None:
        """`record_use` once the client has its answer (no extra task on the hot path)."""
        try:
            await self.proxy.resolver.record_use(
                target, upstream_status=status, kind=self._use_kind()
            )
        except Exception as exc:  # bookkeeping must never break a relayed request
            log.warning(
                "record_use failed: %s", type(exc).__name__, extra={"event": "proxy_bookkeeping"}
            )

    _kind = "streamable-http"

    def _start_response(self, response: UpstreamResponse) -> bool:
        """Status and allowed headers from the upstream; True for an event stream."""
        self.set_status(response.status)
        for name, value in response_headers(response.headers):
            self.set_header(name, value)
        sse = response.content_type == "text/event-stream"
        if sse:
            self.set_header("X-Accel-Buffering", "no")
            if response.header("Cache-Control") is None:
                self.set_header("Cache-Control", "no-cache")
        return sse

    async def _finish_relay(
        self,
        target: ProxyTarget,
        response: UpstreamResponse,
        sse: bool,
        *,
        transform: Callable[[bytes], Awaitable[bytes]] | None = None,
        every: tuple[float, Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        """Pump the body, finish, and record the use (at the start of a stream, else after)."""
        if sse:
            self._record(target, response.status)
            await self._pump(response, sse, transform=transform, every=every)
            return
        try:
            await self._pump(response, sse)
        finally:
            await self._record_after(target, response.status)

    async def _gate(self, target: ProxyTarget, body: bytes) -> Admission | None:
        """Tool policy admission of a POST body (DESIGN §13); None when answered here."""
        legacy = self._kind == "sse-messages"
        admission = await self.proxy.tools.admit(
            target,
            body,
            self.request.headers,
            list(self.request.headers.get_all()),
            fetch_url=None if legacy else fetch_url(target),
        )
        if admission.reply is not None:
            self._reply(admission.reply)
            return None
        return admission

    async def _answer(
        self, target: ProxyTarget, response: UpstreamResponse, admission: Admission | None
    ) -> None:
        """Relay the upstream's answer; under a policy, filter its tools/list answers and merge
        the refused batch entries' errors (proxy/tool_filter.py)."""
        sse = self._start_response(response)
        if admission is None or not admission.rewrites or not 200 <= response.status < 300:
            await self._finish_relay(target, response, sse)
            return
        listed = admission.filter or self.proxy.tools.list_filter(target, frozenset())
        if sse:
            prefix = b"".join(map(sse_event, admission.errors))
            rewriter = SSERewriter(listed, self.proxy.config.max_event_bytes, prefix)
            await self._finish_relay(target, response, sse, transform=rewriter)
            return
        try:
            limit = self.proxy.config.max_event_bytes
            body = await response.read_all(limit)
            if not response.at_eof():
                raise UpstreamError("a tools/list answer exceeds the size limit")
        except UpstreamError:
            self._reset_response()
            self._refuse(ProxyRefusal("upstream_unavailable", _UNAVAILABLE))
            return
        rewritten = listed.json_body(body, admission.errors)
        if rewritten is not None and response.status == 202:
            self.set_status(200)  # the upstream took the rest; the refused entries get errors
            self.set_header("Content-Type", "application/json")
        self._upstream_response = None
        response.release()
        self.finish(rewritten if rewritten is not None else body)
        await self._record_after(target, response.status)

    async def _pump(
        self,
        response: UpstreamResponse,
        sse: bool,
        *,
        transform: Callable[[bytes], Awaitable[bytes]] | None = None,
        every: tuple[float, Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        keepalive = self.proxy.config.keepalive_interval if sse else None
        try:
            await pump(
                response,
                self,
                keepalive=keepalive,
                flush_headers=sse,
                transform=transform,
                every=every,
            )
        except (UpstreamError, SSEError):
            # The upstream broke the body mid-way: end the client's response the same way.
            if not self._headers_written:
                self._reset_response()
                self._refuse(ProxyRefusal("upstream_unavailable", _UNAVAILABLE))
                return
            self._abort_client()
            return
        self._upstream_response = None
        response.release()
        self.finish()

    def _abort_client(self) -> None:
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            stream.close()
        self._client_gone = True
