"""The proxy's HTTP seam: the one Tornado handler base every MCP route stands on.

`ProxyBaseHandler` holds only what a proxied request needs from the HTTP layer, and nothing of
the page layer (no cookies, CSRF, CSP or templates; `web/` is never imported on the proxy path):
- in-flight accounting (`ctx.lifecycle`, so a drain waits for open exchanges and streams);
- the route template for the access log (`web.base.access_log_function` reads `route_template`
  and `_started`), never the raw path, which may hold a secret URL segment;
- the open-stream gauge: headers flushed before the end of a response start a stream;
- the sandbox headers (`sandbox.SANDBOX_HEADERS`) as the default headers of every answer;
- the one-time warning about forwarding headers from an untrusted peer;
- an unexpected exception (or a status Tornado raises, such as 405) answers in the admin API's
  JSON error shape, with no exception text.

Performance work on the proxy's HTTP side changes this module (and `proxy/exchange.py`, where
the upstream client plugs in) only: the handlers above it speak `set_status`/`set_header`/
`write`/`flush`/`finish` and never reach into Tornado's connection objects except
`_abort_client`.

Invariant: no log line or error body carries a credential, session id, URL query or payload.
"""

from __future__ import annotations

import json
import time
from asyncio import Future
from typing import Any

import tornado.web

from bindify_appliance.clientaddr import trusted_networks, warn_untrusted_forwarding
from bindify_appliance.context import AppContext
from bindify_appliance.sandbox import SANDBOX_HEADERS

__all__ = ["ProxyBaseHandler"]

# The admin API's error codes for the statuses Tornado itself can raise on an MCP route.
_STATUS_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    500: "internal_error",
}


class ProxyBaseHandler(tornado.web.RequestHandler):
    """Accounting, access-log template, stream gauge and sandbox headers for MCP routes."""

    route_template: str | None = None
    ctx: AppContext

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

    def set_default_headers(self) -> None:
        # Tornado's defaults are `Server` and an HTML `Content-Type`: neither belongs on a relayed
        # answer (the upstream's type is set by the relay). Kept by clear(), which calls this.
        self.clear_header("Server")
        self.clear_header("Content-Type")
        for name, value in SANDBOX_HEADERS:
            self.set_header(name, value)

    def on_finish(self) -> None:
        self._release()

    def on_connection_close(self) -> None:
        self._release()
        super().on_connection_close()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.ctx.lifecycle.request_finished()
            if self._open_stream is not None:
                self._open_stream.dec()
                self._open_stream = None

    def flush(self, include_footers: bool = False) -> Future[None]:
        # Headers going out before the end of the response: an event stream starts here
        # (`finish()` flushes with the footers, so a whole body never counts as a stream).
        if not self._headers_written and not include_footers and self._counted:
            self._open_stream = self.ctx.metrics.stream_started(self)
        return super().flush(include_footers)

    def check_xsrf_cookie(self) -> None:
        """MCP clients authenticate with the URL or a bearer key; no cookies, no CSRF."""

    def compute_etag(self) -> str | None:
        return None  # never turn a relayed 200 into a 304

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        code = _STATUS_CODES.get(status_code, "error")
        message = "internal error" if status_code >= 500 else self._reason
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": code, "message": message}))
