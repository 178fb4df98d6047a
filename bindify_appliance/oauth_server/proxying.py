"""How the proxy gets its `BearerResolver`: only while the OAuth server is on, and only over a
resolver that can reach a connection by id (`ConnectionResolver`)."""

from __future__ import annotations

from bindify_appliance.context import AppContext
from bindify_appliance.oauth_server.bearer import BearerResolver, ConnectionTargets
from bindify_appliance.oauth_server.settings import oauth_server_enabled

__all__ = ["bearer_resolver"]


def bearer_resolver(ctx: AppContext, resolver: object) -> BearerResolver | None:
    if not oauth_server_enabled(ctx.settings) or not hasattr(resolver, "resolve_connection"):
        return None
    targets: ConnectionTargets = resolver  # type: ignore[assignment]
    return BearerResolver(ctx, targets)
