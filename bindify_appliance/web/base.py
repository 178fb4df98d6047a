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
from asyncio import Future
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

MCP_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"
_MCP_NOT_FOUND = (
    "No MCP endpoint at this path: use /mcp/{service}/{credentials} (your secret URL) or "
    "/mcp/{service} with 'Authorization: Bearer bnd_…'."
)
_PAGE_NOT_FOUND = "There is nothing here. Check the address, or go back to the start page."

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
        self._open_stream: Any = None  # the open-stream gauge child while an SSE body is sent
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
            if self._open_stream is not None:
                self._open_stream.dec()
                self._open_stream = None

    def flush(self, include_footers: bool = False) -> Future[None]:
        # Headers going out before the end of the response: an event stream starts here
        # (`finish()` flushes with the footers, so a whole body never counts as a stream).
        if not self._headers_written and not include_footers and self._counted:
            self._open_stream = self.ctx.metrics.stream_started(self)
        return super().flush(include_footers)

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
            if exc.retry_after is not None:
                self.set_header("Retry-After", str(max(1, exc.retry_after)))
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


class _AnyMethod(tuple[str, ...]):
    """`SUPPORTED_METHODS` that contains every method: an unmatched path is 404 whatever the
    verb (Tornado would answer 405 for a verb outside its usual list before `prepare`)."""

    def __contains__(self, item: object) -> bool:
        return True


class NotFoundHandler(BaseHandler):
    """Default handler for paths no route matches (logged as `<unmatched>`).

    Every method gets 404 in the shape of the path's area: the admin API's JSON envelope under
    `/api/`, a JSON-RPC error (id null) under `/mcp`, an HTML page elsewhere. It never reads a
    cookie, a credential or the body, so the XSRF check (which would answer 403 to a POST) is
    skipped: there is no state to protect here.
    """

    SUPPORTED_METHODS = _AnyMethod()

    def check_xsrf_cookie(self) -> None:
        return

    def prepare(self) -> None:
        path = self.request.path
        if path == "/api" or path.startswith("/api/"):
            self.write_json({"error": "not_found", "message": "no such API route"}, 404)
        elif path == "/mcp" or path.startswith("/mcp/"):
            self._mcp_not_found()
        else:
            self._page_not_found()
        raise tornado.web.Finish()

    def _mcp_not_found(self) -> None:
        # The proxy's answer headers (DESIGN §9): nothing here can act on the UI's origin.
        self.clear_header("Referrer-Policy")
        self.set_header("Content-Security-Policy", MCP_CSP)
        error = {"code": -32600, "message": _MCP_NOT_FOUND}
        self.write_json({"jsonrpc": "2.0", "id": None, "error": error}, 404)

    def _page_not_found(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.render("error.html", status_code=404, title="Not found", message=_PAGE_NOT_FOUND)


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
