"""The collaborators of the connect and connection-management code, built once per process.

`ConnectServices` bundles the service registry, the SSRF-guarded outbound client, the
registrar for dynamic registrations and the proxy's credential resolver, whose `forget(id)`
makes this instance drop a changed connection at once (others within 1 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bindify_appliance.context import AppContext
from bindify_appliance.errors import InvalidRequest, NotFound
from bindify_appliance.outbound import OutboundClient
from bindify_appliance.services.dcr import Registrar
from bindify_appliance.services.registry import ServiceRegistry
from bindify_appliance.store import connections as rows

__all__ = ["ConnectServices", "Forgetter", "check_replace"]


class Forgetter(Protocol):
    """What the connect handlers need of the proxy's resolver."""

    def forget(self, connection_id: str) -> None: ...


@dataclass
class ConnectServices:
    """The collaborators of the connect and connection-management handlers."""

    ctx: AppContext
    registry: ServiceRegistry
    outbound: OutboundClient
    registrar: Registrar
    resolver: Forgetter | None = field(default=None)

    @classmethod
    def build(
        cls,
        ctx: AppContext,
        *,
        registry: ServiceRegistry | None = None,
        outbound: OutboundClient | None = None,
        resolver: Forgetter | None = None,
    ) -> ConnectServices:
        registry = registry or ServiceRegistry(ctx.settings, ctx.store, ctx.clock)
        outbound = outbound or OutboundClient(allow_private=ctx.settings.allow_private_upstreams)
        return cls(ctx, registry, outbound, Registrar(ctx, outbound), resolver)

    def forget(self, connection_id: str) -> None:
        """Make this instance's proxy drop the connection now (others within 1 s)."""
        if self.resolver is not None:
            self.resolver.forget(connection_id)

    async def close(self) -> None:
        await self.outbound.close()


async def check_replace(ctx: AppContext, user_id: str, replace: object) -> str | None:
    """`replace` must name one of the caller's connections (404 otherwise)."""
    if replace is None:
        return None
    if not isinstance(replace, str) or not replace or len(replace) > 64:
        raise InvalidRequest("replace must be a connection id", field="replace")
    row = await ctx.store.run(rows.get_connection, replace, user_id)
    if row is None:
        raise NotFound("the connection to replace was not found", field="replace")
    return replace
