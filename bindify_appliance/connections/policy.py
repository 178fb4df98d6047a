"""Storing a member's tool policy on their connection (DESIGN §13): the one write path.

The API (`PATCH /api/v1/connections/{id}`) and the connection page both come here, so the
write and the proxy's cache invalidation cannot drift apart.

Invariants:
- The policy is already validated (`proxy.policy.parse_policy`); None clears it.
- This instance's resolver forgets the connection at once, so the next request resolves the
  new merged policy here; other instances pick it up within the resolution memo's second.
- Ownership is the caller's check: this writes by connection id.
"""

from __future__ import annotations

from bindify_appliance.proxy.policy import ToolPolicy, dump_policy
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.store import connections as rows

__all__ = ["store_connection_policy"]


async def store_connection_policy(
    services: ConnectServices, connection_id: str, policy: ToolPolicy | None
) -> None:
    """Replace the connection's policy (None clears it) and drop its resolution here."""
    ctx = services.ctx
    await ctx.store.run(rows.set_policy, connection_id, dump_policy(policy), ctx.clock.now())
    services.forget(connection_id)
