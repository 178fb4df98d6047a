"""The base handler every route uses: security headers, in-flight accounting, safe errors.

Invariants:
- The access log names the route template (set by `routes.route`), never the raw path; paths
  that match no route are logged as `<unmatched>`.
- Error responses never echo input or exception text; only `HTTPFacingError.public_message`.
- Every HTML response carries a strict Content-Security-Policy and anti-framing headers.

Cookies and CSRF (security review):
- With an https base URL without a path, the session and XSRF cookies are named with the
  `__Host-` prefix (`__Host-bindify_session`, `__Host-_xsrf`): browsers then accept them only
  Secure, with Path=/ and no Domain, so a sibling subdomain can neither set nor overwrite
  them. With http, or a base URL with a path (Path=/ would reach other apps on the host), the
  plain names are kept.
- The XSRF token is bound to the session: for a request carrying a session cookie the expected
  token is HMAC(secret key, session token), so a token of another session, or one planted in
  the browser before it signed in, is refused (403). Without a session (the sign-in, setup and
  invite forms) it is a random value kept in the XSRF cookie (double submit). Tokens are sent
  masked with a fresh random mask on every page (BREACH); the XSRF cookie carries the current
  token so API clients can copy it into `X-XSRFToken`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from asyncio import Future
from typing import Any, Final
from urllib.parse import urlsplit

import tornado.web

from bindify_appliance.accounts.sessions import SESSION_COOKIE, SESSION_LIFETIME
from bindify_appliance.clientaddr import trusted_networks, warn_untrusted_forwarding
from bindify_appliance.context import AppContext
from bindify_appliance.errors import HTTPFacingError
from bindify_appliance.logs import log_access
from bindify_appliance.sandbox import SANDBOX_HEADERS

__all__ = [
    "XSRF_COOKIE",
    "BaseHandler",
    "NotFoundHandler",
    "access_log_function",
    "cookie_name",
    "host_only_cookies",
]

XSRF_COOKIE: Final = "_xsrf"
_XSRF_CONTEXT: Final = b"bindify-xsrf-v1\x00"
_XSRF_VERSION: Final = "b1"
_XSRF_BYTES: Final = 16


def host_only_cookies(base_url: str) -> bool:
    """Whether cookies get the `__Host-` prefix: https, and the appliance owns the whole host."""
    parts = urlsplit(base_url)
    return parts.scheme == "https" and parts.path in ("", "/")


def cookie_name(name: str, base_url: str) -> str:
    """The name `name` is sent under for this base URL (`__Host-name` or `name`)."""
    return f"__Host-{name}" if host_only_cookies(base_url) else name


def _mask_xsrf(raw: bytes) -> str:
    """`b1|mask|raw XOR mask` in hex, with a fresh mask: never the same bytes twice (BREACH)."""
    mask = secrets.token_bytes(len(raw))
    masked = bytes(a ^ b for a, b in zip(mask, raw, strict=True))
    return f"{_XSRF_VERSION}|{mask.hex()}|{masked.hex()}"


def _unmask_xsrf(token: str | bytes | None) -> bytes | None:
    """The raw token inside a masked one; None when it is not one of ours."""
    if token is None:
        return None
    text = token.decode("ascii", "replace") if isinstance(token, bytes) else token
    parts = text.split("|")
    if len(parts) != 3 or parts[0] != _XSRF_VERSION or len(parts[1]) != 2 * _XSRF_BYTES:
        return None
    try:
        mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
    except ValueError:
        return None
    if len(masked) != len(mask):
        return None
    return bytes(a ^ b for a, b in zip(mask, masked, strict=True))


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
        headers = self.request.headers
        if "X-Forwarded-For" in headers or "Forwarded" in headers:
            warn_untrusted_forwarding(
                self.request.remote_ip or "", trusted_networks(ctx.settings.trusted_proxies)
            )

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

    # -- session cookie and CSRF --------------------------------------------------------------

    @property
    def session_cookie_name(self) -> str:
        return cookie_name(SESSION_COOKIE, self.ctx.settings.base_url)

    @property
    def xsrf_cookie_name(self) -> str:
        return cookie_name(XSRF_COOKIE, self.ctx.settings.base_url)

    def session_token(self) -> str | None:
        """The session token from a validly signed session cookie (not yet looked up)."""
        raw = self.get_signed_cookie(
            self.session_cookie_name, max_age_days=SESSION_LIFETIME.days + 1
        )
        if raw is None:
            return None
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return None

    def _session_xsrf(self, session_token: str) -> bytes:
        digest = hmac.new(
            self.ctx.secret_key, _XSRF_CONTEXT + session_token.encode("ascii"), hashlib.sha256
        ).digest()
        return digest[:_XSRF_BYTES]

    def _expected_xsrf(self) -> bytes | None:
        """The raw token this request must carry: the session's, else the XSRF cookie's."""
        session = self.session_token()
        if session is not None:
            return self._session_xsrf(session)
        return _unmask_xsrf(self.get_cookie(self.xsrf_cookie_name))

    def _issue_xsrf(self, raw: bytes, *, signed_in: bool) -> None:
        """Use `raw` for this response's forms and put it in the XSRF cookie (masked)."""
        token = _mask_xsrf(raw)
        options = dict(self.settings.get("xsrf_cookie_kwargs", {}))
        if signed_in:
            options["expires_days"] = SESSION_LIFETIME.days
        self.set_cookie(self.xsrf_cookie_name, token, **options)
        self._xsrf_token = token.encode("ascii")

    def bind_xsrf(self, session_token: str | None) -> None:
        """After signing in (a new session) or out (None): a token for the new state."""
        if session_token is None:
            self._issue_xsrf(secrets.token_bytes(_XSRF_BYTES), signed_in=False)
        else:
            self._issue_xsrf(self._session_xsrf(session_token), signed_in=True)

    @property
    def xsrf_token(self) -> bytes:
        """The masked token for forms (replaces Tornado's double-submit-only token)."""
        if not hasattr(self, "_xsrf_token"):
            raw = self._expected_xsrf()
            signed_in = self.session_token() is not None
            if raw is None:  # no session and no usable cookie yet: start one
                raw = secrets.token_bytes(_XSRF_BYTES)
            if _unmask_xsrf(self.get_cookie(self.xsrf_cookie_name)) != raw:
                self._issue_xsrf(raw, signed_in=signed_in)
            else:
                self._xsrf_token = _mask_xsrf(raw).encode("ascii")
        token: bytes = self._xsrf_token
        return token

    def check_xsrf_cookie(self) -> None:
        """403 unless the request carries this session's token (or, signed out, the cookie's)."""
        sent = (
            self.get_argument("_xsrf", None)
            or self.request.headers.get("X-Xsrftoken")
            or self.request.headers.get("X-Csrftoken")
        )
        if not sent:
            raise tornado.web.HTTPError(403, "'_xsrf' argument missing from POST")
        got, expected = _unmask_xsrf(sent), self._expected_xsrf()
        if got is None or expected is None or not hmac.compare_digest(got, expected):
            raise tornado.web.HTTPError(403, "XSRF token does not match this session")

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        # Billing (DESIGN §11): the nav link and the banner; both absent when billing is off.
        namespace["billing_on"] = bool(self.ctx.settings.stripe_webhook_secret)
        namespace["billing_banner"] = getattr(self, "billing_banner", None)
        return namespace

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
        for name, value in SANDBOX_HEADERS:
            self.set_header(name, value)
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
