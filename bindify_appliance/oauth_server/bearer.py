"""The proxy's side of the OAuth server: `Authorization: Bearer bndat_…` on `/mcp/{service}`.

A live access token of this issuer resolves to its grant's connection, for the grant's service
only (another service: the "unknown credential" 404, -32001). A zero-knowledge connection opens
with the opener sealed in the token's row under the token itself, and then goes through the
resolver exactly like its secret URL; a managed one through `resolve_connection`. Per-call
behaviour after that is the secret URL's (DESIGN §6). No token, an unknown, expired or revoked
one → 401 with `WWW-Authenticate: Bearer resource_metadata=…` so the client refreshes or signs
in again.

Token rows are memoised per instance for at most `MEMO_TTL` (1 s, like the resolver's memo),
so a revocation anywhere is seen everywhere within a second; `last_used_at` is written at most
once a minute per grant and instance.

Invariants: no token, opener or credential is logged or put in a message.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Final, Protocol

from bindify_appliance.context import AppContext
from bindify_appliance.errors import DecryptError, StoreError
from bindify_appliance.oauth_server.tokens import bearer_value, open_opener, token_hash, token_kind
from bindify_appliance.proxy.relay import spawn
from bindify_appliance.proxy.target import ProxyRefusal, ProxyTarget
from bindify_appliance.store import oauth_server as rows
from bindify_appliance.store.oauth_server import AccessRow

__all__ = ["BearerResolver", "ConnectionTargets"]

log = logging.getLogger(__name__)

MEMO_TTL: Final = 1.0
MEMO_SIZE: Final = 10_000
USE_INTERVAL: Final = timedelta(seconds=60)
MSG_SIGN_IN: Final = (
    "Authorization required: sign in through this appliance (OAuth), or use the connection's "
    "secret URL or its 'Authorization: Bearer bnd_…' API key."
)
MSG_DEAD: Final = "The access token is expired or revoked: refresh it or sign in again."
MSG_OTHER: Final = (
    "Connection not found: this URL or API key may have been deleted or replaced. "
    "Create or copy a current one on the appliance's Connections page."
)


class ConnectionTargets(Protocol):
    """What the bearer path needs of the proxy's resolver (`ConnectionResolver`)."""

    async def resolve(self, service_id: str, credential: str, *, form: str) -> ProxyTarget: ...

    async def resolve_connection(self, service_id: str, connection_id: str) -> ProxyTarget: ...


class BearerResolver:
    def __init__(self, ctx: AppContext, targets: ConnectionTargets) -> None:
        self._ctx = ctx
        self._targets = targets
        self._memo: dict[str, tuple[float, AccessRow | None]] = {}
        self._used: dict[str, float] = {}

    def challenge(self, service_id: str, error: str | None = None) -> str:
        base = self._ctx.settings.base_url
        metadata = f"{base}/.well-known/oauth-protected-resource/mcp/{service_id}"
        if error:
            return f'Bearer error="{error}", resource_metadata="{metadata}"'
        return f'Bearer resource_metadata="{metadata}"'

    def missing(self, service_id: str) -> ProxyRefusal:
        """The 401 for a request with no `Authorization` at all."""
        return ProxyRefusal("oauth_required", MSG_SIGN_IN, challenge=self.challenge(service_id))

    def _dead(self, service_id: str) -> ProxyRefusal:
        return ProxyRefusal(
            "oauth_required", MSG_DEAD, challenge=self.challenge(service_id, "invalid_token")
        )

    async def _row(self, hashed: str) -> AccessRow | None:
        now = self._ctx.clock.monotonic()
        hit = self._memo.get(hashed)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await self._ctx.store.run(rows.find_access, hashed, self._ctx.settings.base_url)
        if len(self._memo) >= MEMO_SIZE:
            self._memo = {k: v for k, v in self._memo.items() if v[0] > now}
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
        self._memo[hashed] = (now + MEMO_TTL, row)
        return row

    async def resolve(self, service_id: str, authorization: str) -> ProxyTarget:
        token = bearer_value(authorization)
        if token_kind(token) != "access":
            raise self._dead(service_id)
        row = await self._row(token_hash(token))
        now = self._ctx.clock.now()
        if row is None or row.expires_at <= now or row.grant_expires_at <= now:
            raise self._dead(service_id)
        if row.service != service_id:
            raise ProxyRefusal("unknown_credential", MSG_OTHER)
        try:
            opener = open_opener(token, row.opener_sealed)
        except DecryptError:
            raise self._dead(service_id) from None
        if opener is None:
            target = await self._targets.resolve_connection(service_id, row.connection_id)
        else:
            target = await self._targets.resolve(
                service_id, opener.decode("ascii", "replace"), form="path"
            )
            if target.connection_id != row.connection_id:
                raise self._dead(service_id)
        self._note_use(row.grant_id)
        return target

    def _note_use(self, grant_id: str) -> None:
        now = self._ctx.clock.monotonic()
        last = self._used.get(grant_id)
        if last is not None and now - last < USE_INTERVAL.total_seconds():
            return
        if len(self._used) >= MEMO_SIZE:
            self._used.clear()
        self._used[grant_id] = now
        spawn(self._touch(grant_id), "oauth grant use stamp")

    async def _touch(self, grant_id: str) -> None:
        try:
            await self._ctx.store.run(
                rows.touch_grant, grant_id, self._ctx.clock.now(), USE_INTERVAL
            )
        except StoreError:
            log.warning("could not stamp a grant's last use", extra={"event": "oauth_grant_use"})
