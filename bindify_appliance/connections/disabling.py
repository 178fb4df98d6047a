"""Disabling or re-enabling a connection from a request: the one step the API and pages share.

`set_connection_disabled(handler, services, connection_id, disabled, actor_id=…, role=…)` writes
the change (`store.connections.set_disabled`: the owner cannot undo an administrator's
disable, 403 and nothing changes), makes this instance's proxy forget the connection at once,
and records `connection.disable` / `connection.enable` in the audit trail with who acted
(`by`: `admin` or `owner`). Ownership is the caller's to check before.
"""

from __future__ import annotations

from typing import Any

from bindify_appliance import audit
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.store import connections as rows

__all__ = ["set_connection_disabled"]


async def set_connection_disabled(
    handler: Any,
    services: ConnectServices,
    connection_id: str,
    disabled: bool,
    *,
    actor_id: str,
    role: str,
) -> None:
    ctx = services.ctx
    now = ctx.clock.now()
    await ctx.store.run(
        lambda: rows.set_disabled(connection_id, disabled, now, actor_id=actor_id, actor_role=role)
    )
    services.forget(connection_id)
    await audit.by_request(
        handler,
        "connection.disable" if disabled else "connection.enable",
        audit.Target("connection", connection_id),
        detail={"by": role},
    )
