"""The neutral handler base: what every route needs and nothing more.

`HttpHandler` holds in-flight accounting (the lifecycle's drain counter and the open-stream
gauge), the route template (set by `routes.route`), the client address, baseline security
headers and the one error seam. HTML pages (`web.pages`), the admin API (`api.base`), the
operations routes (`ops/`) and the proxy build on it.

Invariants:
- The access log names the route template, never the raw path; paths that match no route are
  logged as `<unmatched>`.
- `write_error` is the one place an error becomes a response: `errors.http_parts` says what an
  error the appliance raises on purpose answers (store refusals included: 404/409, never 500);
  anything else answers its status with a fixed phrase. Never input or exception text.
- No cookie authenticates a handler of this class, so it needs no CSRF check;
  `http.cookies.SessionCookies` adds the check with the session.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

import tornado.web

from bindify_appliance.clientaddr import client_ip, trusted_networks
from bindify_appliance.errors import ErrorParts, http_parts
from bindify_appliance.http.accounting import CountedHandler
from bindify_appliance.logs import log_access

__all__ = [
    "CSP",
    "ErrorSeam",
    "HttpHandler",
    "access_log_function",
    "plain_code",
    "request_ip",
]

# The policy of the appliance's own answers; JSON carries it too (nothing it serves may be
# framed or run script), the proxy replaces it with the sandbox (DESIGN §9).
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

_STATUS_CODES: Final = {
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


def plain_code(status: int) -> str:
    """The machine code of an answer known only by its status (a framework error or a bug)."""
    return _STATUS_CODES.get(status, "invalid_request" if status < 500 else "internal_error")


def request_ip(handler: tornado.web.RequestHandler, trusted_proxies: tuple[str, ...]) -> str:
    """The client address (forwarding headers believed only from BINDIFY_TRUSTED_PROXIES).

    The same rules as the proxy's limiter (`clientaddr.client_ip`); with no trusted proxy
    the peer address as Tornado reports it.
    """
    peer = handler.request.remote_ip or ""
    if not trusted_proxies:
        return peer
    headers = handler.request.headers
    return client_ip(
        peer,
        headers.get_list("Forwarded"),
        headers.get_list("X-Forwarded-For"),
        trusted_networks(trusted_proxies),
    )


class ErrorSeam:
    """The one error seam: `write_error` turns an error into an answer, `render_error` shapes it.

    A mixin over any handler with Tornado's answer API (`set_status`, `set_header`, `finish`,
    `_reason`): the page/API base below and the proxy's exchange (`proxy.base`) both use it.
    Subclasses change only the shape (`render_error`: pages render HTML, the OAuth endpoints
    the RFC 6749 shape, the proxy adds `Allow` to a 405), never which error answers what.
    """

    _reason: str

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        parts = http_parts(exc)
        if parts is not None and parts.retry_after is not None:
            answer: Any = self  # a mixin: the answer API is the handler's own
            answer.set_header("Retry-After", str(max(1, parts.retry_after)))
        self.render_error(status_code, parts, exc)

    def render_error(
        self, status_code: int, parts: ErrorParts | None, exc: BaseException | None
    ) -> None:
        """The answer's body: JSON `{"error", "message", "field"?}` (pages render HTML)."""
        if parts is None:
            message = self._reason if status_code < 500 else "internal error"
            parts = ErrorParts(status_code, plain_code(status_code), message)
        body: dict[str, Any] = {"error": parts.code, "message": parts.message}
        if parts.field:
            body["field"] = parts.field
        answer: Any = self
        answer.set_status(parts.status)
        answer.set_header("Content-Type", "application/json")
        answer.set_header("Cache-Control", "no-store")
        answer.finish(json.dumps(body))


class HttpHandler(ErrorSeam, CountedHandler):
    """Common behaviour of every route; subclasses set `route_template` through `routes.route`."""

    # -- request and response ----------------------------------------------------------------

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Content-Security-Policy", CSP)
        self.clear_header("Server")

    def check_xsrf_cookie(self) -> None:
        """Nothing ambient authenticates this handler: no CSRF check (see the module doc)."""

    def client_ip(self) -> str:
        """The client's address, trusted-proxy rules applied."""
        return request_ip(self, self.ctx.settings.trusted_proxies)

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload, separators=(",", ":")))

    def write_no_content(self) -> None:
        self.set_status(204)
        self.set_header("Cache-Control", "no-store")
        self.finish()

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Answers given on purpose are not server errors. Everything else is logged by Tornado,
        # whose message includes the request line (and so possibly a secret URL segment): the
        # scrubbing filter on our one handler redacts it.
        if http_parts(value) is not None:
            return
        super().log_exception(typ, value, tb)


def access_log_function(handler: tornado.web.RequestHandler) -> None:
    """Tornado's `log_function` (and the proxy exchanges', `proxy/base.py`): one metadata-only
    access record per request."""
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
