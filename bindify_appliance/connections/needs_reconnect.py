"""The "needs reconnecting" refusal and its link, built in one place.

The link is the connection's page (`/connections/{id}`), where its owner reconnects in place;
the refusal becomes JSON-RPC -32003 with `data.reconnect_url` (DESIGN §9). The message names
a reason at most, never a credential or an upstream answer.
"""

from __future__ import annotations

from bindify_appliance.errors import ProxyRefusal

__all__ = ["needs_new_key", "needs_reconnect", "needs_reconnect_at", "reconnect_link"]


def reconnect_link(base_url: str, connection_id: str) -> str:
    """Where the owner reconnects this connection."""
    return f"{base_url}/connections/{connection_id}"


def needs_reconnect(base_url: str, connection_id: str, reason: str | None = None) -> ProxyRefusal:
    """The refusal for a connection whose credential no longer works (`reason` in brackets)."""
    return needs_reconnect_at(reconnect_link(base_url, connection_id), reason)


def needs_reconnect_at(link: str | None, reason: str | None = None) -> ProxyRefusal:
    """The same refusal where only the link is at hand (a target; None: no link known)."""
    why = f" ({reason})" if reason else ""
    where = f" Reconnect at {link}" if link else ""
    return ProxyRefusal(
        "needs_reconnect",
        f"This connection needs reconnecting{why}.{where}",
        reconnect_url=link or None,
    )


def needs_new_key(base_url: str, connection_id: str) -> ProxyRefusal:
    """The API-key form of the refusal: the upstream rejected the key itself."""
    link = reconnect_link(base_url, connection_id)
    return ProxyRefusal(
        "needs_reconnect",
        f"The upstream service rejected this connection's API key. Update your key at {link}",
        reconnect_url=link,
    )
