"""The OAuth server's options (`BINDIFY_OAUTH_*`), read from `Settings`."""

from __future__ import annotations

from urllib.parse import urlsplit

from bindify_appliance.config import Settings

__all__ = ["dcr_enabled", "grant_days", "oauth_server_enabled", "redirect_host_allowed"]


def oauth_server_enabled(config: Settings) -> bool:
    """`BINDIFY_OAUTH_SERVER` (default true); never on under a base URL with a path, where
    the metadata paths of RFC 8414 and RFC 9728 could not be served (DESIGN §10)."""
    return bool(config.oauth_server) and not urlsplit(config.base_url).path.strip("/")


def dcr_enabled(config: Settings) -> bool:
    """`BINDIFY_OAUTH_DCR` (default true): anonymous dynamic client registration."""
    return oauth_server_enabled(config) and bool(config.oauth_dcr)


def grant_days(config: Settings) -> int:
    """`BINDIFY_OAUTH_GRANT_DAYS` (default 90): a grant's longest life, refreshes included."""
    return int(config.oauth_grant_days)


def redirect_host_allowed(config: Settings, host: str) -> bool:
    """`BINDIFY_OAUTH_REDIRECT_HOSTS`: empty allows every host; else the host (lowercase) must
    be listed or be a subdomain of a listed `.example.com` entry. Loopback and private-use
    schemes are not hosts and are never restricted by it."""
    allowed = config.oauth_redirect_hosts
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower()
        if entry.startswith("."):
            if host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False
