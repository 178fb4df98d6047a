"""Grants: a client's lasting access to one connection — issuing, refreshing, listing, ending.

An access token lives `ACCESS_TTL` (1 h), a refresh token `REFRESH_TTL` (30 days), and neither
outlives its grant (`BINDIFY_OAUTH_GRANT_DAYS`). Each token carries the opener of a
zero-knowledge connection sealed under a key derived from itself (`tokens.py`); a refresh opens
it with the old token and seals it anew under the new ones.

Invariants: a grant belongs to one issuer, connection, user and client; ending it deletes its
token hashes at once (cascade), so its tokens are refused at once in the process that ended it
and in every other within the proxy's 1-second memo; a refresh token works once, and its reuse
ends the grant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from bindify_appliance.context import AppContext
from bindify_appliance.errors import DecryptError
from bindify_appliance.oauth_server.codes import CodeGrant
from bindify_appliance.oauth_server.settings import grant_days
from bindify_appliance.oauth_server.tokens import (
    ACCESS_PREFIX,
    REFRESH_PREFIX,
    new_token,
    open_opener,
    seal_opener,
    token_hash,
)
from bindify_appliance.store import oauth_server as rows
from bindify_appliance.store.models import OAuthGrant, new_id
from bindify_appliance.store.oauth_server import NewToken

__all__ = [
    "ACCESS_TTL",
    "REFRESH_TTL",
    "GrantView",
    "IssuedTokens",
    "RefreshRefused",
    "issue_grant",
    "list_grants",
    "refresh_grant",
    "revoke_connection_grants",
    "revoke_grant",
]

ACCESS_TTL: Final = timedelta(hours=1)
REFRESH_TTL: Final = timedelta(days=30)


@dataclass(frozen=True)
class GrantView:
    """A grant as the member sees it ("Connected apps")."""

    id: str
    client_id: str
    client_name: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, repr=False)
class IssuedTokens:
    """A token response's secrets (never logged; `repr` hides them)."""

    grant_id: str
    access_token: str
    refresh_token: str
    expires_in: int

    def __repr__(self) -> str:
        return f"IssuedTokens(grant_id={self.grant_id!r})"


class RefreshRefused(Exception):
    """The refresh token is unknown, expired, another client's, or spent (`reused`)."""

    def __init__(self, reused: bool = False, grant: OAuthGrant | None = None) -> None:
        super().__init__("invalid refresh token")
        self.reused = reused
        self.grant = grant  # the grant a reuse ended


def _pair(
    opener: bytes | None, now: datetime, grant_expires: datetime
) -> tuple[str, str, tuple[NewToken, NewToken], int]:
    access, refresh = new_token(ACCESS_PREFIX), new_token(REFRESH_PREFIX)
    access_expires = min(now + ACCESS_TTL, grant_expires)
    rows_ = (
        NewToken(token_hash(access), "access", seal_opener(access, opener), access_expires),
        NewToken(
            token_hash(refresh),
            "refresh",
            seal_opener(refresh, opener),
            min(now + REFRESH_TTL, grant_expires),
        ),
    )
    return access, refresh, rows_, max(1, int((access_expires - now).total_seconds()))


async def issue_grant(ctx: AppContext, code: CodeGrant, client_name: str) -> IssuedTokens | None:
    """A new grant for an exchanged code, with its first tokens; None when the connection went
    meanwhile."""
    now = ctx.clock.now()
    expires = now + timedelta(days=grant_days(ctx.settings))
    access, refresh, tokens, expires_in = _pair(code.opener, now, expires)
    grant: dict[str, object] = {
        "id": new_id(),
        "issuer": ctx.settings.base_url,
        "client_id": code.client_id,
        "client_name": client_name[:100],
        "connection": code.connection_id,
        "user": code.user_id,
        "service": code.service,
        "resource": code.resource,
        "created_at": now,
        "expires_at": expires,
    }
    if not await ctx.store.run(rows.insert_grant, grant, tokens, now):
        return None
    return IssuedTokens(str(grant["id"]), access, refresh, expires_in)


async def refresh_grant(ctx: AppContext, refresh_token: str, client_id: str) -> IssuedTokens:
    """Rotate `refresh_token` (of `client_id`) into a new pair.

    Raises:
        RefreshRefused: unknown, expired, another client's; `reused=True` when it was spent
            already (its grant is then ended).
    """
    issuer = ctx.settings.base_url
    hashed = token_hash(refresh_token)
    found = await ctx.store.run(rows.token_grant, hashed, issuer)
    if found is None or found[1].kind != "refresh" or found[0].client_id != client_id:
        raise RefreshRefused()
    grant, row = found
    try:
        opener = open_opener(refresh_token, row.opener_sealed)
    except DecryptError:
        raise RefreshRefused() from None
    now = ctx.clock.now()
    access, refresh, tokens, expires_in = _pair(opener, now, grant.expires_at)
    outcome = await ctx.store.run(rows.rotate_refresh, hashed, issuer, now, tokens)
    if outcome.reused:
        raise RefreshRefused(reused=True, grant=grant)
    if outcome.grant is None:
        raise RefreshRefused()
    return IssuedTokens(grant.id, access, refresh, expires_in)


async def list_grants(ctx: AppContext, connection_id: str) -> list[GrantView]:
    """The connection's live grants under the current issuer, newest first."""
    found = await ctx.store.run(
        rows.list_grants, connection_id, ctx.settings.base_url, ctx.clock.now()
    )
    return [
        GrantView(
            id=g.id,
            client_id=g.client_id,
            client_name=g.client_name,
            created_at=g.created_at,
            last_used_at=g.last_used_at,
        )
        for g in found
    ]


async def revoke_grant(ctx: AppContext, connection_id: str, grant_id: str) -> bool:
    """End one grant of the connection; False when it has no such grant."""
    return bool(await ctx.store.run(rows.delete_grant, grant_id, connection_id))


async def revoke_connection_grants(ctx: AppContext, connection_id: str) -> int:
    """End every grant of the connection; the number ended."""
    return int(await ctx.store.run(lambda: rows.delete_grants(connection_id=connection_id)))
