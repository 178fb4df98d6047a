"""Which redirect URIs a client may register, and how a requested one matches (DESIGN §10).

Allowed: https (to any host, or only the hosts `BINDIFY_OAUTH_REDIRECT_HOSTS` lists), loopback
http (`127.0.0.1`, `[::1]`, `localhost`, any port), a reverse-DNS private-use scheme
(`com.example.app:/cb`) or a known client's scheme (`cursor://`, `vscode://`, …). Everything
else — `javascript:`, `data:`, `file:`, plain http to other hosts — is refused.

Matching is exact, except that a loopback http URI matches with any port (RFC 8252 §7.3).
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import SplitResult, urlsplit

from bindify_appliance.config import Settings
from bindify_appliance.oauth_server.settings import redirect_host_allowed

__all__ = ["MAX_REDIRECT_URIS", "redirect_uri_problem", "redirect_uris_match"]

MAX_REDIRECT_URIS: Final = 10
MAX_URI_LENGTH: Final = 2000
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
# Schemes of MCP clients that register without a reverse-DNS name.
KNOWN_APP_SCHEMES: Final = frozenset({"cursor", "vscode", "vscode-insiders", "windsurf", "claude"})
_REVERSE_DNS: Final = re.compile(r"[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+")
_NEVER: Final = frozenset({"javascript", "data", "file", "vbscript", "blob", "about"})


def _split(uri: str) -> SplitResult | None:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return None
    return parts


def _is_loopback_http(parts: SplitResult) -> bool:
    return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_HOSTS


def redirect_uri_problem(config: Settings, uri: object) -> str | None:
    """Why `uri` may not be registered (a message naming the rule, not the URI), or None."""
    if not isinstance(uri, str) or not uri:
        return "redirect URIs must be non-empty strings"
    if len(uri) > MAX_URI_LENGTH or not uri.isascii() or not uri.isprintable() or " " in uri:
        return "a redirect URI is too long or has characters a URI may not have"
    parts = _split(uri)
    if parts is None or not parts.scheme:
        return "a redirect URI is not an absolute URI"
    scheme = parts.scheme.lower()
    if parts.fragment or "#" in uri:
        return "redirect URIs must not have a fragment"
    if scheme in _NEVER:
        return f"{scheme}: redirect URIs are never allowed"
    if parts.username is not None or parts.password is not None:
        return "redirect URIs must not carry user information"
    if scheme == "https":
        host = parts.hostname or ""
        if not host:
            return "an https redirect URI needs a host"
        if host not in LOOPBACK_HOSTS and not redirect_host_allowed(config, host):
            return "this appliance does not allow redirects to that host"
        return None
    if scheme == "http":
        if _is_loopback_http(parts):
            return None
        return "plain http redirect URIs are allowed only to 127.0.0.1, [::1] or localhost"
    if scheme in KNOWN_APP_SCHEMES or _REVERSE_DNS.fullmatch(scheme):
        return None
    return (
        "redirect URIs must be https, loopback http, or an app's reverse-DNS scheme "
        "(com.example.app:/callback)"
    )


def redirect_uris_match(registered: str, requested: str) -> bool:
    """Exact match; a loopback http URI matches whatever the port (RFC 8252 §7.3)."""
    if registered == requested:
        return True
    reg, req = _split(registered), _split(requested)
    if reg is None or req is None or not _is_loopback_http(reg) or not _is_loopback_http(req):
        return False
    return (
        reg.hostname == req.hostname
        and reg.path == req.path
        and reg.query == req.query
        and not req.fragment
        and req.username is None
        and req.password is None
    )
