"""`Counting`: the part of every route's handler that the page/API base (`http.base`, through
`CountedHandler`) and the proxy's exchange base (`proxy.base`) share, and nothing else (no
headers, errors or cookies). It is a mixin over either kind of handler: both have
`request`, `_headers_written`, `flush` and `on_connection_close` with Tornado's meaning.

- In-flight accounting: `ctx.lifecycle` counts the request from `initialize` until it finishes or
  its connection closes (exactly once), so a drain waits for open exchanges and streams.
- The open-stream gauge: headers flushed before the end of a response start a stream
  (`finish()` flushes with the footers, so a whole body never counts as one).
- `route_template` and `_started` for the access log, which names the template, never the path.
- The one-time warning about forwarding headers from a peer that is not a trusted proxy.
"""

from __future__ import annotations

import time
from asyncio import Future
from typing import Any

import tornado.web
from tornado import httputil

from bindify_appliance.clientaddr import trusted_networks, warn_untrusted_forwarding
from bindify_appliance.context import AppContext

__all__ = ["CountedHandler", "Counting"]


class Counting:
    """In-flight accounting, the stream gauge and the access-log template of one request."""

    route_template: str | None = None
    ctx: AppContext
    request: httputil.HTTPServerRequest
    _headers_written: bool

    def initialize(self, ctx: AppContext, route_template: str | None = None) -> None:
        self.ctx = ctx
        self.route_template = route_template
        self._started = time.monotonic()
        self._counted = True
        self._open_stream: Any = None  # the open-stream gauge child while a stream is sent
        ctx.lifecycle.request_started()
        headers = self.request.headers
        if "X-Forwarded-For" in headers or "Forwarded" in headers:
            warn_untrusted_forwarding(
                self.request.remote_ip or "", trusted_networks(ctx.settings.trusted_proxies)
            )

    def on_finish(self) -> None:
        self._release()

    def on_connection_close(self) -> None:
        self._release()
        super().on_connection_close()  # type: ignore[misc]

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.ctx.lifecycle.request_finished()
            if self._open_stream is not None:
                self._open_stream.dec()
                self._open_stream = None

    def flush(self, include_footers: bool = False) -> Future[None]:
        if not self._headers_written and not include_footers and self._counted:
            self._open_stream = self.ctx.metrics.stream_started(self)
        return super().flush(include_footers)  # type: ignore[misc,no-any-return]


class CountedHandler(Counting, tornado.web.RequestHandler):
    """A Tornado `RequestHandler` with `Counting` (the page/API base stands on it)."""
