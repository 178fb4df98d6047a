"""The proxy's HTTP seam: the one Tornado handler base every MCP route stands on.

`ProxyBaseHandler` holds only what a proxied request needs from the HTTP layer, and nothing of
the page layer (no cookies, CSRF, CSP or templates; `web/` is never imported on the proxy path):
- in-flight accounting, the open-stream gauge, the access-log route template and the
  forwarding warning, shared with the page/API base (`http.accounting.CountedHandler`; the raw
  path, which may hold a secret URL segment, is never logged);
- the sandbox headers (`sandbox.SANDBOX_HEADERS`) as the default headers of every answer;
- an unexpected exception (or a status Tornado raises, such as 405) answers in the admin API's
  JSON error shape, with no exception text, and is logged with the route template (not the
  path); a 405 names the route's methods in `Allow`.

Performance work on the proxy's HTTP side changes this module (and `proxy/exchange.py`, where
the upstream client plugs in) only: the handlers above it speak `set_status`/`set_header`/
`write`/`flush`/`finish` and never reach into Tornado's connection objects except
`_abort_client`.

Invariant: no log line or error body carries a credential, session id, URL query or payload.
"""

from __future__ import annotations

import json
from typing import Any

import tornado.web
from tornado.log import app_log

from bindify_appliance.http.accounting import CountedHandler
from bindify_appliance.http.base import plain_code
from bindify_appliance.sandbox import SANDBOX_HEADERS

__all__ = ["ProxyBaseHandler"]


class ProxyBaseHandler(CountedHandler):
    """Accounting, access-log template, stream gauge and sandbox headers for MCP routes."""

    ALLOW = "GET, POST, DELETE, OPTIONS"  # the `Allow` of a 405; each route sets its own

    def set_default_headers(self) -> None:
        # Tornado's defaults are `Server` and an HTML `Content-Type`: neither belongs on a relayed
        # answer (the upstream's type is set by the relay). Kept by clear(), which calls this.
        self.clear_header("Server")
        self.clear_header("Content-Type")
        for name, value in SANDBOX_HEADERS:
            self.set_header(name, value)

    def check_xsrf_cookie(self) -> None:
        """MCP clients authenticate with the URL or a bearer key; no cookies, no CSRF."""

    def compute_etag(self) -> str | None:
        return None  # never turn a relayed 200 into a 304

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Tornado's line holds the request line and the request's repr (the path may carry a
        # secret URL segment): this one names the route template instead.
        if isinstance(value, tornado.web.HTTPError):
            return  # a status answered on purpose (405), not a fault
        app_log.error(
            "uncaught exception in %s %s",
            self.request.method,
            self.route_template or "<unmatched>",
            exc_info=(typ, value, tb),
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        code = plain_code(status_code)
        message = "internal error" if status_code >= 500 else self._reason
        if status_code == 405:
            self.set_header("Allow", self.ALLOW)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": code, "message": message}))
