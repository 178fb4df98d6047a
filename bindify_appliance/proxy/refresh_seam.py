"""The OAuth refresh seam of credential resolution.

`TokenRefresher` is what the resolver asks to refresh an OAuth connection's token
(`services/refresh.py` implements it). `RefreshHandle` is the explicit refresh handle a resolved
target carries (`ProxyTarget.refresh`): the one refresh after an upstream 401/403 reads it from
the target it is handed back, never from a side table.

Invariant: a handle holds a decrypted payload and the request's credential; it is never logged
or stored, and its repr hides the payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from bindify_appliance.crypto.credentials import Credentials
from bindify_appliance.store.connections import ConnectionAuth

__all__ = ["RefreshHandle", "TokenRefresher"]


class TokenRefresher(Protocol):
    """The OAuth token-lifecycle seam (`services/refresh.py`); a resolver without one never
    refreshes."""

    async def fresh_payload(
        self, conn: ConnectionAuth, payload: dict[str, Any], creds: Credentials | None
    ) -> dict[str, Any]:
        """Before use: refresh when the token is (nearly) expired; return the payload to use.

        May raise ProxyRefusal ("cooldown", "needs_reconnect").
        """
        ...

    async def refresh_after_rejection(
        self, conn: ConnectionAuth, payload: dict[str, Any], creds: Credentials | None
    ) -> dict[str, Any] | None:
        """After an upstream 401/403: one forced refresh; the new payload, or None if refused."""
        ...


@dataclass(frozen=True)
class RefreshHandle:
    """What one refresh after an upstream 401/403 needs, carried by the target it was issued
    with (`ProxyTarget.refresh`): only OAuth targets under a refresher get one."""

    conn: ConnectionAuth
    creds: Credentials | None
    payload: dict[str, Any] = field(repr=False)
