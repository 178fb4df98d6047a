"""The proxy's HTTP seam: the one Tornado handler base every MCP route stands on.

`ProxyBaseHandler` holds only what a proxied request needs from the HTTP layer, and nothing of
the page layer (no cookies, CSRF, CSP or templates; `web/` is never imported on the proxy path):
- in-flight accounting, the open-stream gauge, the access-log route template and the
  forwarding warning, shared with the page/API base (`http.accounting.CountedHandler`; the raw
  path, which may hold a secret URL segment, is never logged);
- the sandbox headers (`sandbox.SANDBOX_HEADERS`) as the default headers of every answer;
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
from typing import Any

from bindify_appliance.http.accounting import CountedHandler
from bindify_appliance.http.base import plain_code
from bindify_appliance.sandbox import SANDBOX_HEADERS

__all__ = ["ProxyBaseHandler"]


class ProxyBaseHandler(CountedHandler):
    """Accounting, access-log template, stream gauge and sandbox headers for MCP routes."""

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

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        code = plain_code(status_code)
        message = "internal error" if status_code >= 500 else self._reason
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"error": code, "message": message}))
