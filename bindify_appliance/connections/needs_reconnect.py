"""The "needs reconnecting" refusal and its link, built in one place.

The link is the connection's page (`/connections/{id}`), where its owner reconnects in place;
the refusal becomes JSON-RPC -32003 with `data.reconnect_url` (DESIGN §9). The message names
a reason at most, never a credential or an upstream answer.
"""

from __future__ import annotations

from bindify_appliance.proxy.target import ProxyRefusal

__all__ = ["needs_reconnect", "reconnect_link"]


def reconnect_link(base_url: str, connection_id: str) -> str:
    """Where the owner reconnects this connection."""
    return f"{base_url}/connections/{connection_id}"


def needs_reconnect(base_url: str, connection_id: str, reason: str | None = None) -> ProxyRefusal:
    """The refusal for a connection whose credential no longer works (`reason` in brackets)."""
    link = reconnect_link(base_url, connection_id)
    why = f" ({reason})" if reason else ""
    return ProxyRefusal(
        "needs_reconnect",
        f"This connection needs reconnecting{why}. Reconnect at {link}",
        reconnect_url=link,
    )
