"""Grants: a client's lasting access to one connection, and their revocation.

Invariants: a grant belongs to one issuer, connection, user and client; revoking it deletes
its tokens' hashes at once, so its tokens are refused on every instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bindify_appliance.context import AppContext

__all__ = [
    "GrantView",
    "list_grants",
    "revoke_connection_grants",
    "revoke_grant",
    "revoke_user_grants",
]


@dataclass(frozen=True)
class GrantView:
    """A grant as the member sees it ("Connected apps")."""

    id: str
    client_id: str
    client_name: str
    created_at: datetime
    last_used_at: datetime | None


async def list_grants(ctx: AppContext, connection_id: str) -> list[GrantView]:
    """The connection's live grants under the current issuer, newest first."""
    raise NotImplementedError


async def revoke_grant(ctx: AppContext, connection_id: str, grant_id: str) -> bool:
    """End one grant of the connection; False when it has no such grant."""
    raise NotImplementedError


async def revoke_connection_grants(ctx: AppContext, connection_id: str) -> int:
    """End every grant of the connection; the number ended."""
    raise NotImplementedError


async def revoke_user_grants(ctx: AppContext, user_id: str) -> int:
    """End every grant the user gave; the number ended."""
    raise NotImplementedError
