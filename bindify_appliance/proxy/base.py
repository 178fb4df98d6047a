"""The proxy's HTTP seam: the one Tornado handler base every MCP route stands on.

`ProxyBaseHandler` holds only what a proxied request needs from the HTTP layer, and nothing of
the page layer (no cookies, CSRF, CSP or templates; `web/` is never imported on the proxy path):
- in-flight accounting, the open-stream gauge, the access-log route template and the
  forwarding warning, shared with the page/API base (`http.accounting.CountedHandler`; the raw
  path, which may hold a secret URL segment, is never logged);
- the sandbox headers (`sandbox.SANDBOX_HEADERS`) and `Date` on every answer;
- an unexpected exception (or a status Tornado raises, such as 405) answers in the admin API's
  JSON error shape, with no exception text, and is logged with the route template (not the
  path); a 405 names the route's methods in `Allow`.

What Tornado's `RequestHandler` does per request that a proxy never needs is skipped here
(issue 16, measured in the README's Performance section): the template namespaces built in
`__init__`, the default headers built and then removed (`Server`, an HTML `Content-Type`) and
a `Date` formatted anew for every answer (`clear`), the XSRF and cross-origin checks (MCP
clients authenticate with the URL or a bearer key, never a cookie), ETags (a relayed 200 must
never become a 304) and the application's logging indirection (`_log`).

Performance work on the proxy's HTTP side changes this module (and `proxy/exchange.py`, where
the upstream client plugs in) only: the handlers above it speak `set_status`/`set_header`/
`write`/`flush`/`finish` and never reach into Tornado's connection objects except
`_abort_client`.

Invariant: no log line or error body carries a credential, session id, URL query or payload.
"""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from typing import Any

import tornado.web
from tornado import httputil
from tornado.log import app_log

from bindify_appliance.http.accounting import CountedHandler
from bindify_appliance.http.base import plain_code
from bindify_appliance.sandbox import SANDBOX_HEADERS

__all__ = ["ProxyBaseHandler", "http_date"]

_date_second = -1
_date_text = ""


def http_date() -> str:
    """The current time as an HTTP `Date`, formatted once per second (not once per answer)."""
    global _date_second, _date_text
    now = int(time.time())
    if now != _date_second:
        _date_text = formatdate(now, usegmt=True)
        _date_second = now
    return _date_text


class ProxyBaseHandler(CountedHandler):
    """Accounting, access-log template, stream gauge and sandbox headers for MCP routes."""

    ALLOW = "GET, POST, DELETE, OPTIONS"  # the `Allow` of a 405; each route sets its own

    def __init__(
        self,
        application: tornado.web.Application,
        request: httputil.HTTPServerRequest,
        **kwargs: Any,
    ) -> None:
        # RequestHandler.__init__ without the template namespaces (`ui`): nothing here renders.
        self.application = application
        self.request = request
        self._headers_written = False
        self._finished = False
        self._auto_finish = True
        self._prepared_future = None
        self.clear()
        request.connection.set_close_callback(self.on_connection_close)  # type: ignore[union-attr]
        self.initialize(**kwargs)

    def clear(self) -> None:
        """No content, status 200 and the headers of every answer: the sandbox's and `Date`.

        Tornado's defaults (`Server`, an HTML `Content-Type`) never belong on a relayed answer
        (the upstream's type is set by the relay), so they are never set in the first place.
        """
        headers = httputil.HTTPHeaders()
        for name, value in SANDBOX_HEADERS:
            headers[name] = value
        headers["Date"] = http_date()
        self._headers = headers
        self._write_buffer: list[bytes] = []
        self._status_code = 200
        self._reason = "OK"

    def check_xsrf_cookie(self) -> None:
        """MCP clients authenticate with the URL or a bearer key; no cookies, no CSRF."""

    def _cross_origin_protection(self) -> None:
        # Tornado's cookie-era checks; Origin is the proxy's own business (`proxy/cors.py`).
        return

    def compute_etag(self) -> str | None:
        return None  # never turn a relayed 200 into a 304

    def set_etag_header(self) -> None:
        return

    def check_etag_header(self) -> bool:
        return False

    def _log(self) -> None:
        log_function = self.application.settings.get("log_function")
        if log_function is not None:
            log_function(self)
        else:
            self.application.log_request(self)

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
