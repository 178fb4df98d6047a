"""Header names the relay owns, shared by the proxy's header policy and the service validator.

`HOP_BY_HOP` is never forwarded in either direction (RFC 9110 §7.6.1 plus the usual proxy ones).
`RELAY_MANAGED` are set by the relay itself (framing, routing, content negotiation, the MCP
transport headers). `NOT_INJECTABLE` is what an admin-added service may not name as the header
its API key goes into: all of the above, and the browser headers that would carry the key
somewhere unexpected. Lower-case names throughout.

`header_value(headers, name)` is `headers.get(name)` for Tornado's `HTTPHeaders` without the
`KeyError` that `Mapping.get` raises and catches inside for every absent header (most of the
headers the proxy asks about on every request are absent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from tornado.httputil import HTTPHeaders

__all__ = ["HOP_BY_HOP", "NOT_INJECTABLE", "RELAY_MANAGED", "header_value"]


def header_value(headers: HTTPHeaders, name: str) -> str | None:
    """`headers.get(name)`: the values of `name` joined with "," as Tornado joins them, or
    None when the request has none."""
    values = headers.get_list(name)
    if not values:
        return None
    return values[0] if len(values) == 1 else ",".join(values)


HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

RELAY_MANAGED: Final = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "accept",
        "accept-encoding",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "last-event-id",
    }
)

NOT_INJECTABLE: Final = HOP_BY_HOP | RELAY_MANAGED | {"cookie", "origin", "referer"}
