"""What keeps anything served under `/mcp/` from acting on the UI's origin (DESIGN §9).

MCP URLs share the appliance's origin with the UI, and an upstream chooses what its answers say.
So every `/mcp/` answer (relayed, refused, or the 404 of an unknown MCP path) carries
`SANDBOX_HEADERS`; a relayed `Content-Type` other than JSON or an event stream goes out as
`application/octet-stream` (`safe_content_type`), so a browser never renders or runs it; and a
browser navigation to an MCP URL (`Sec-Fetch-Mode: navigate`) is answered with `NAVIGATION_PAGE`
without contacting the upstream.

Shared by the proxy and the web layer's default handler; imports nothing of either.
Invariant: the page is constant text: it never echoes the URL, a credential or anything upstream.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "MCP_CSP",
    "NAVIGATION_PAGE",
    "RELAYED_MEDIA_TYPES",
    "SANDBOX_HEADERS",
    "safe_content_type",
]

MCP_CSP: Final = "default-src 'none'; sandbox; frame-ancestors 'none'"

SANDBOX_HEADERS: Final = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", MCP_CSP),
    ("X-Frame-Options", "DENY"),
)

RELAYED_MEDIA_TYPES: Final = frozenset({"application/json", "text/event-stream"})
_OPAQUE: Final = "application/octet-stream"


def safe_content_type(value: str | None) -> str:
    """`value` when its media type is JSON or an event stream, else `application/octet-stream`."""
    if value is None:
        return _OPAQUE
    media_type = value.split(";", 1)[0].strip().lower()
    return value if media_type in RELAYED_MEDIA_TYPES else _OPAQUE


# No script, no style sheet, no link back to anything: the CSP above allows none of them anyway.
NAVIGATION_PAGE: Final = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bindify MCP address</title></head>
<body>
<h1>This is an MCP server address</h1>
<p>It is not a web page. Paste it into your AI assistant's MCP settings (Claude, Cursor,
VS Code, ChatGPT connectors or any MCP client) as a remote server URL.</p>
<p>Treat it like a password: anyone who has it can use the account it connects to. If it was
shared by mistake, rotate it on the appliance's Connections page.</p>
</body></html>
"""
