"""The shared base of the OAuth server's endpoints: JSON answers, RFC error shapes, CORS.

These endpoints authenticate with client credentials or tokens in the request, never with
cookies, so they take no CSRF token and read no session; any browser origin may call them
(`Access-Control-Allow-Origin: *`, no credentials), as browser-based MCP clients must.

Invariant: no answer or log line carries a token, code, verifier or client secret.
"""

from __future__ import annotations

import json
from typing import Any

from bindify_appliance.errors import ErrorParts
from bindify_appliance.http.base import HttpHandler, request_ip

__all__ = ["OAuthEndpoint"]


class OAuthEndpoint(HttpHandler):
    """JSON in and out, `no-store`, CORS for any origin without credentials."""

    ALLOW_METHODS = "GET, OPTIONS"

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")
        self.set_header("Pragma", "no-cache")
        self.set_header("Access-Control-Allow-Origin", "*")

    def check_xsrf_cookie(self) -> None:
        """Client credentials or tokens authenticate these requests; cookies are never read."""

    def options(self, *args: Any, **kwargs: Any) -> None:
        self.set_header("Access-Control-Allow-Methods", self.ALLOW_METHODS)
        self.set_header(
            "Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version"
        )
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()

    def client_ip(self) -> str:
        return request_ip(self, self.ctx.settings.trusted_proxies)

    def send_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload, separators=(",", ":")))

    def oauth_error(
        self, status: int, error: str, description: str, *, retry_after: int | None = None
    ) -> None:
        """`{"error", "error_description"}` (RFC 6749 §5.2, RFC 7591 §3.2.2)."""
        if retry_after is not None:
            self.set_header("Retry-After", str(max(1, retry_after)))
        self.send_json({"error": error, "error_description": description}, status)

    def render_error(
        self, status_code: int, parts: ErrorParts | None, exc: BaseException | None
    ) -> None:
        # Whatever went wrong, the answer keeps the RFC shape and says nothing more (an error
        # raised on purpose keeps its status, as everywhere: `http.base.ErrorSeam`).
        status = parts.status if parts is not None else status_code
        error = "invalid_request" if status < 500 else "server_error"
        message = "malformed request" if status < 500 else "internal error"
        self.clear_header("Content-Type")
        self.oauth_error(status, error, message)
