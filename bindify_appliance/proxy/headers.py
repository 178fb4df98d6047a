"""Which headers cross the proxy, in each direction (DESIGN §6, mcp-protocol §5).

Request (client → upstream) is an allow-list: only the MCP transport headers, content
negotiation, the user agent and trace context are forwarded. Everything else — the client's
`Authorization` (it may hold a `bnd_` key), cookies, `Origin`, `Referer`, hop-by-hop headers,
`Host`, `Content-Length`, `Accept-Encoding` — stays behind. `Host` is set by the HTTP client from
the upstream URL, `Accept-Encoding: identity` keeps bodies byte-exact, and the target's injected
credential headers are added last so a client can never override them.

Response (upstream → client) is an allow-list too: `Content-Type`, `Mcp-Session-Id`,
`Cache-Control`, `Retry-After`, `Allow`; a `Content-Type` that is missing or names anything but
JSON or an event stream goes out as `application/octet-stream` (DESIGN §9, `sandbox.py`).
Never `WWW-Authenticate` (token passthrough is forbidden: a client that sees the upstream's
challenge would run OAuth against the upstream) and never `Set-Cookie`.

Invariant: injected values are secrets; nothing here logs or formats them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bindify_appliance.header_names import HOP_BY_HOP
from bindify_appliance.sandbox import safe_content_type

__all__ = [
    "FORWARDED_REQUEST_HEADERS",
    "FORWARDED_RESPONSE_HEADERS",
    "HOP_BY_HOP",
    "MCP_PARAM_PREFIX",
    "SESSION_HEADER",
    "request_headers",
    "response_headers",
]

SESSION_HEADER = "Mcp-Session-Id"
MCP_PARAM_PREFIX = "mcp-param-"

# Lower-case names; values are the canonical spelling sent upstream (names are case-insensitive,
# but some servers compare literally, so the spec's spelling is used).
FORWARDED_REQUEST_HEADERS: Mapping[str, str] = {
    "mcp-protocol-version": "MCP-Protocol-Version",
    "mcp-session-id": "Mcp-Session-Id",
    "mcp-method": "Mcp-Method",
    "mcp-name": "Mcp-Name",
    "last-event-id": "Last-Event-ID",
    "accept": "Accept",
    "content-type": "Content-Type",
    "user-agent": "User-Agent",
    "traceparent": "traceparent",
    "tracestate": "tracestate",
    "baggage": "baggage",
}

FORWARDED_RESPONSE_HEADERS: Mapping[str, str] = {
    "content-type": "Content-Type",
    "mcp-session-id": "Mcp-Session-Id",
    "cache-control": "Cache-Control",
    "retry-after": "Retry-After",
    "allow": "Allow",
}

# RFC 9110 §7.6.1 plus the usual proxy ones: never forwarded (none is on the allow-list; a test
# checks), as is any header a `Connection` header names.


def request_headers(
    client_headers: Iterable[tuple[str, str]], inject: Mapping[str, str]
) -> dict[str, str]:
    """The headers to send upstream: the allow-listed client headers, then `inject`.

    `client_headers` is every (name, value) pair the client sent. Repeated allow-listed headers
    are joined with ", " (their list form); `Mcp-Param-*` keep the client's spelling. A header
    the client's `Connection` header names is hop-by-hop (RFC 9110 §7.6.1) and dropped.
    """
    out: dict[str, str] = {}
    lowered: dict[str, str] = {}  # canonical name → its lower-case form, for `Connection`
    declared: list[str] = []
    for name, value in client_headers:
        lower = name.lower()
        canonical = FORWARDED_REQUEST_HEADERS.get(lower)
        if canonical is None:
            if lower == "connection":
                declared.extend(t.strip().lower() for t in value.split(","))
                continue
            if not lower.startswith(MCP_PARAM_PREFIX):
                continue
            canonical = name
        previous = out.get(canonical)
        out[canonical] = value if previous is None else f"{previous}, {value}"
        lowered[canonical] = lower
    if declared:
        dropped = set(declared)
        for canonical in [c for c, lower in lowered.items() if lower in dropped]:
            del out[canonical]
    out["Accept-Encoding"] = "identity"
    # Injected credentials win over anything the client sent under the same name.
    if inject:
        lowered_inject = {k.lower() for k in inject}
        for key in [k for k in out if k.lower() in lowered_inject]:
            del out[key]
        out.update(inject)
    return out


def response_headers(upstream_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream response headers the client may see, in the canonical spelling."""
    out: list[tuple[str, str]] = []
    typed = False
    for name, value in upstream_headers:
        canonical = FORWARDED_RESPONSE_HEADERS.get(name.lower())
        if canonical is None:
            continue
        if canonical == "Content-Type":
            if typed:
                continue  # one type only: a second could undo the rewrite below
            typed = True
            value = safe_content_type(value)
        out.append((canonical, value))
    if not typed:
        out.append(("Content-Type", safe_content_type(None)))
    return out
