"""The base handler every route uses: security headers, in-flight accounting, safe errors.

Invariants:
- The access log names the route template (set by `routes.route`), never the raw path; paths
  that match no route are logged as `<unmatched>`.
- Error responses never echo input or exception text; only `HTTPFacingError.public_message`.
- Every HTML response carries a strict Content-Security-Policy and anti-framing headers.
"""

from __future__ import annotations

import json
import time
from typing import Any

import tornado.web

from bindify_appliance.context import AppContext
from bindify_appliance.errors import HTTPFacingError
from bindify_appliance.logs import log_access

__all__ = ["BaseHandler", "NotFoundHandler", "access_log_function"]

_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
    500: "internal_error",
    502: "upstream_error",
    503: "unavailable",
}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class BaseHandler(tornado.web.RequestHandler):
    """Common behaviour; subclasses set `route_template` through `routes.route`."""

    route_template: str | None = None
    ctx: AppContext

    def initialize(self, ctx: AppContext, route_template: str | None = None) -> None:
        self.ctx = ctx
        self.route_template = route_template
        self._started = time.monotonic()
        self._counted = True
        ctx.lifecycle.request_started()

    def on_finish(self) -> None:
        self._release()

    def on_connection_close(self) -> None:
        self._release()
        super().on_connection_close()

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.ctx.lifecycle.request_finished()

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", CSP)
        self.clear_header("Server")

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload, separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, HTTPFacingError):
            self.set_status(exc.status)
            body: dict[str, Any] = {"error": exc.code, "message": exc.public_message}
            if exc.field:
                body["field"] = exc.field
        else:
            code = _STATUS_CODES.get(status_code, "error")
            message = self._reason if status_code < 500 else "internal error"
            body = {"error": code, "message": message}
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Expected, caller-facing errors are not server errors. Everything else is logged by
        # Tornado, whose message includes the request line (and so possibly a secret URL
        # segment): the scrubbing filter on our one handler redacts it.
        if isinstance(value, HTTPFacingError):
            return
        super().log_exception(typ, value, tb)


class NotFoundHandler(BaseHandler):
    """Default handler for paths no route matches (logged as `<unmatched>`)."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


def access_log_function(handler: tornado.web.RequestHandler) -> None:
    """Tornado's `log_function`: one metadata-only access record per request."""
    started = getattr(handler, "_started", None)
    duration_ms = (
        (time.monotonic() - started) * 1000 if started else handler.request.request_time() * 1000
    )
    log_access(
        method=handler.request.method or "-",
        route=getattr(handler, "route_template", None),
        status=handler.get_status(),
        duration_ms=round(duration_ms, 3),
    )
