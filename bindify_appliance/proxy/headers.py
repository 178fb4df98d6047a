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
    "injected_names",
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


def injected_names(inject: Mapping[str, str]) -> frozenset[str]:
    """The lower-case names of a target's injected headers (computed once per target)."""
    return frozenset(name.lower() for name in inject)


def request_headers(
    client_headers: Iterable[tuple[str, str]],
    inject: Mapping[str, str],
    inject_names: frozenset[str] | None = None,
) -> dict[str, str]:
    """The headers to send upstream: the allow-listed client headers, then `inject`.

    `client_headers` is every (name, value) pair the client sent. Repeated allow-listed headers
    are joined with ", " (their list form); `Mcp-Param-*` keep the client's spelling. A header
    the client's `Connection` header names is hop-by-hop (RFC 9110 §7.6.1) and dropped.
    `inject_names` is `injected_names(inject)` when the caller keeps it (`ProxyTarget` does):
    a client header under an injected name (any case) is never taken, so it cannot override.
    """
    names = injected_names(inject) if inject_names is None else inject_names
    out: dict[str, str] = {}
    declared: list[str] | None = None
    for name, value in client_headers:
        lower = name.lower()
        canonical = FORWARDED_REQUEST_HEADERS.get(lower)
        if canonical is None:
            if lower == "connection":
                if declared is None:
                    declared = []
                declared.extend(t.strip().lower() for t in value.split(","))
                continue
            if not lower.startswith(MCP_PARAM_PREFIX):
                continue
            canonical = name
        if lower in names:
            continue  # the injected credential wins over anything the client sent
        previous = out.get(canonical)
        out[canonical] = value if previous is None else f"{previous}, {value}"
    if declared:
        # Every kept name's lower-case form is its allow-list key (or the Mcp-Param name).
        dropped = set(declared)
        for canonical in [c for c in out if c.lower() in dropped]:
            del out[canonical]
    if "accept-encoding" not in names:
        out["Accept-Encoding"] = "identity"
    if inject:
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
