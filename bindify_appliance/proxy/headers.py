"""Which headers cross the proxy, in each direction (DESIGN §6, mcp-protocol §5).

Request (client → upstream) is an allow-list: only the MCP transport headers, content
negotiation, the user agent and trace context are forwarded. Everything else — the client's
`Authorization` (it may hold a `bnd_` key), cookies, `Origin`, `Referer`, hop-by-hop headers,
`Host`, `Content-Length`, `Accept-Encoding` — stays behind. `Host` is set by the HTTP client from
the upstream URL, `Accept-Encoding: identity` keeps bodies byte-exact, and the target's injected
credential headers are added last so a client can never override them.

Response (upstream → client) is an allow-list too: `Content-Type`, `Mcp-Session-Id`,
`Cache-Control`, `Retry-After`, `Allow`. Never `WWW-Authenticate` (token passthrough is forbidden:
a client that sees the upstream's challenge would run OAuth against the upstream) and never
`Set-Cookie`.

Invariant: injected values are secrets; nothing here logs or formats them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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

# RFC 9110 §7.6.1 plus the usual proxy ones; listed for the tests and for `Connection` parsing.
HOP_BY_HOP = frozenset(
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


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Header names a `Connection` header declares hop-by-hop (RFC 9110 §7.6.1)."""
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return frozenset(tokens)


def request_headers(
    client_headers: Iterable[tuple[str, str]], inject: Mapping[str, str]
) -> dict[str, str]:
    """The headers to send upstream: the allow-listed client headers, then `inject`.

    `client_headers` is every (name, value) pair the client sent. Repeated allow-listed headers
    are joined with ", " (their list form); `Mcp-Param-*` keep the client's spelling.
    """
    pairs = list(client_headers)
    dropped = _connection_tokens(pairs)
    out: dict[str, str] = {}
    for name, value in pairs:
        lower = name.lower()
        if lower in dropped or lower in HOP_BY_HOP:
            continue
        canonical = FORWARDED_REQUEST_HEADERS.get(lower)
        if canonical is None:
            if not lower.startswith(MCP_PARAM_PREFIX):
                continue
            canonical = name
        previous = out.get(canonical)
        out[canonical] = value if previous is None else f"{previous}, {value}"
    out["Accept-Encoding"] = "identity"
    # Injected credentials win over anything the client sent under the same name.
    lowered_inject = {k.lower() for k in inject}
    if lowered_inject:
        for key in [k for k in out if k.lower() in lowered_inject]:
            del out[key]
        out.update(inject)
    return out


def response_headers(upstream_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream response headers the client may see, in the canonical spelling."""
    out: list[tuple[str, str]] = []
    for name, value in upstream_headers:
        canonical = FORWARDED_RESPONSE_HEADERS.get(name.lower())
        if canonical is not None:
            out.append((canonical, value))
    return out
