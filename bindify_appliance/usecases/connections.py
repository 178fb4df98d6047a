"""What a member (or an administrator) does to an existing connection.

Invariants:
- `owned_connection` is the one ownership rule: another member's connection is "not found",
  for administrators too (no existence oracle). Administrators reach other members'
  connections only through `any_connection` (the admin routes, metadata and disable only).
- Every change that alters how the proxy resolves the connection (disable, delete, new
  credentials, policy) makes this instance's resolver forget it at once; other instances
  follow within the resolution memo's second. A label is not part of a resolution.
- An owner cannot re-enable a connection an administrator disabled: 403, nothing changes
  (`check_may_enable` before any other change; the store checks again inside its write).
- Each operation records its audit entry with the acting principal.
"""

from __future__ import annotations

from bindify_appliance import audit
from bindify_appliance.connections.create import (
    CreatedConnection,
    normalize_label,
    rotate_credentials,
)
from bindify_appliance.crypto.credentials import Credentials
from bindify_appliance.errors import Forbidden, NotFound
from bindify_appliance.proxy.policy import ToolPolicy, dump_policy
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.store import connections as rows
from bindify_appliance.store.models import Connection
from bindify_appliance.usecases.acting import Acting

__all__ = [
    "NOT_FOUND",
    "any_connection",
    "check_may_enable",
    "delete_connection",
    "owned_connection",
    "rename_connection",
    "rotate_connection",
    "set_connection_disabled",
    "set_connection_policy",
]

NOT_FOUND = "connection not found"


def _target(connection_id: str) -> audit.Target:
    return audit.Target("connection", connection_id)


async def owned_connection(
    services: ConnectServices, acting: Acting, connection_id: str, *, message: str = NOT_FOUND
) -> Connection:
    """The connection if `acting` owns it; else 404 `message` (administrators included)."""
    row = await services.ctx.store.run(rows.get_connection, connection_id[:64], None)
    if row is None or acting.user_id is None or row.user_id != acting.user_id:
        raise NotFound(message)
    return row


async def any_connection(
    services: ConnectServices, connection_id: str, *, message: str = NOT_FOUND
) -> Connection:
    """Any member's connection (administrators' routes only); else 404 `message`."""
    row = await services.ctx.store.run(rows.get_connection, connection_id[:64], None)
    if row is None:
        raise NotFound(message)
    return row


def check_may_enable(acting: Acting, row: Connection, disabled: bool | None) -> None:
    """403 when `acting` would re-enable a connection an administrator disabled."""
    if disabled is False and row.disabled_by == "admin" and not acting.is_admin:
        raise Forbidden(rows.ADMIN_DISABLED_MESSAGE)


async def rename_connection(
    services: ConnectServices, acting: Acting, connection_id: str, label: object
) -> str:
    """Set the label (1-100 characters after trimming, else 400); the label stored."""
    clean = normalize_label(label)
    ctx = services.ctx
    await ctx.store.run(rows.set_label, connection_id, clean, ctx.clock.now())
    await acting.record(ctx, "connection.rename", _target(connection_id))
    return clean


async def set_connection_disabled(
    services: ConnectServices, acting: Acting, connection_id: str, disabled: bool
) -> None:
    """Disable or re-enable; the event and the audit entry name who acted (`by`)."""
    ctx = services.ctx
    now = ctx.clock.now()
    role = acting.disable_role
    await ctx.store.run(
        lambda: rows.set_disabled(
            connection_id, disabled, now, actor_id=acting.user_id, actor_role=role
        )
    )
    services.forget(connection_id)
    await acting.record(
        ctx,
        "connection.disable" if disabled else "connection.enable",
        _target(connection_id),
        detail={"by": role},
    )


async def set_connection_policy(
    services: ConnectServices, acting: Acting, connection_id: str, policy: ToolPolicy | None
) -> None:
    """Replace the connection's tool policy (already validated; None clears it)."""
    ctx = services.ctx
    await ctx.store.run(rows.set_policy, connection_id, dump_policy(policy), ctx.clock.now())
    services.forget(connection_id)
    await acting.record(ctx, "connection.policy", _target(connection_id))


async def delete_connection(services: ConnectServices, acting: Acting, row: Connection) -> None:
    """Delete the connection (its owner's, found by `owned_connection`)."""
    ctx = services.ctx
    await ctx.store.run(rows.delete_connection, row.id, row.user_id)
    await acting.record(ctx, "connection.delete", _target(row.id))
    services.forget(row.id)


async def rotate_connection(
    services: ConnectServices, acting: Acting, row: Connection, current: Credentials | None
) -> CreatedConnection:
    """New secret URL and API key; the old ones stop at once (zero-knowledge: `current`)."""
    ctx = services.ctx
    rotated = await rotate_credentials(
        ctx, services.registry, row.id, user_id=row.user_id, current=current
    )
    services.forget(row.id)
    await acting.record(ctx, "connection.rotate", _target(row.id))
    return rotated
