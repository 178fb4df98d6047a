"""`Origin` validation and CORS for the MCP routes (DESIGN §6, mcp-protocol §2.1, §7).

An `Origin` header is allowed when it is the base URL's origin or listed in
`BINDIFY_ALLOWED_ORIGINS`; any other present `Origin` gets 403 with no body (the spec's DNS-
rebinding defence). Requests without `Origin` (every non-browser MCP client) are not affected.

For allowed origins, responses carry `Access-Control-Allow-Origin: <origin>`, `Vary: Origin` and
expose `Mcp-Session-Id` (browser clients must read it). Preflights are answered here, before any
credential work, allowing the MCP request headers (and any `Mcp-Param-*` the browser asks for).
No cookies are used, so credentials mode is never allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["ALLOWED_METHODS", "OriginPolicy"]

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"

_ALLOWED_REQUEST_HEADERS = frozenset(
    {
        "authorization",
        "content-type",
        "accept",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "last-event-id",
        "traceparent",
        "tracestate",
        "baggage",
    }
)
_DEFAULT_ALLOW_HEADERS = (
    "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, "
    "Mcp-Name, Last-Event-ID"
)
_EXPOSE = "Mcp-Session-Id"
_MAX_AGE = "600"


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme.lower()}://{host}{port}"


class OriginPolicy:
    """Which browser origins may use the MCP routes, and the CORS headers they get."""

    def __init__(self, base_url: str, allowed_origins: Iterable[str]) -> None:
        origins = {_origin_of(o) for o in allowed_origins if o}
        if base_url:
            origins.add(_origin_of(base_url))
        self._allowed = frozenset(origins)

    def allowed(self, origin: str | None) -> bool:
        """True when there is no `Origin` or it is allowed."""
        if origin is None:
            return True
        try:
            return _origin_of(origin.strip()) in self._allowed
        except ValueError:
            return False

    def response_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """CORS headers for an actual (non-preflight) response to an allowed origin."""
        if origin is None:
            return []
        return [
            ("Access-Control-Allow-Origin", origin.strip()),
            ("Access-Control-Expose-Headers", _EXPOSE),
            ("Vary", "Origin"),
        ]

    def preflight_headers(self, origin: str, requested: str | None) -> list[tuple[str, str]]:
        """Headers answering an allowed preflight."""
        allow = _DEFAULT_ALLOW_HEADERS
        if requested:
            names = [h.strip() for h in requested.split(",") if h.strip()]
            accepted = [
                h
                for h in names
                if h.lower() in _ALLOWED_REQUEST_HEADERS or h.lower().startswith("mcp-param-")
            ]
            if accepted:
                allow = ", ".join(accepted)
        return [
            ("Access-Control-Allow-Origin", origin.strip()),
            ("Access-Control-Allow-Methods", ALLOWED_METHODS),
            ("Access-Control-Allow-Headers", allow),
            ("Access-Control-Expose-Headers", _EXPOSE),
            ("Access-Control-Max-Age", _MAX_AGE),
            ("Vary", "Origin"),
        ]
