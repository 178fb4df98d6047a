"""Changing a user's role, disabling, enabling and deleting a user: the one path for the admin
page, the admin API, `DELETE /api/v1/me` and `bindify admin remove-user`.

Invariants:
- The last active administrator is never demoted, disabled or deleted: the store refuses inside
  the same transaction as the change (`LastAdminError`, 409 `last_admin`); nothing changes, no
  cache is touched and no entry is recorded.
- Disabling ends the user's sessions, personal tokens and MCP clients' grants in that
  transaction (the grant epoch moves after the commit); deleting ends them by cascade.
- Disabling, enabling and deleting make this instance's proxy forget each of the user's
  connections at once (a connection's row carries its owner's disabled state); other instances
  follow within the resolution memo's second.
- A role change brings billing up to date at once when billing is on: a demoted administrator
  starts a trial, a promoted member stops being billed (the proxy reads `billing_until`).
- Each records one audit entry by the acting principal: `user.role`, `user.disable` or
  `user.enable` with `{"role": <the role after the change>}`; `user.delete` with no detail.
  Offboarding (`offboard_user`) records its own entries (`accounts/offboarding.py`).
"""

from __future__ import annotations

from bindify_appliance import audit
from bindify_appliance.accounts import users as user_service
from bindify_appliance.accounts.offboarding import Offboarding, offboard
from bindify_appliance.billing import bring_up_to_date
from bindify_appliance.services.connect_services import ConnectServices
from bindify_appliance.store import connections as rows
from bindify_appliance.store.accounts import UserRecord
from bindify_appliance.usecases.acting import Acting

__all__ = ["delete_user", "offboard_user", "update_user"]

_ACTIONS = {None: "user.role", True: "user.disable", False: "user.enable"}


def _target(user_id: str) -> audit.Target:
    return audit.Target("user", user_id)


async def _connection_ids(services: ConnectServices, user_id: str) -> list[str]:
    owned = await services.ctx.store.run(rows.list_for_user, user_id)
    return [row.id for row in owned]


async def update_user(
    services: ConnectServices,
    acting: Acting,
    user_id: str,
    *,
    role: str | None = None,
    disabled: bool | None = None,
) -> UserRecord:
    """Change the role and/or the disabled state in one transaction; the user after it.

    The entry is `user.disable`/`user.enable` when `disabled` is given, else `user.role`.
    Raises InvalidRequest (role), NotFoundError, LastAdminError: nothing changed.
    """
    ctx = services.ctx
    user = await user_service.update_user(
        ctx.store, ctx.clock, user_id, role=role, disabled=disabled
    )
    if disabled is not None:
        for connection_id in await _connection_ids(services, user_id):
            services.forget(connection_id)
    if role is not None:
        await bring_up_to_date(ctx, user_id)
    action = _ACTIONS[disabled]
    await acting.record(ctx, action, _target(user_id), detail={"role": user.role})
    return user


async def delete_user(services: ConnectServices, acting: Acting, user_id: str) -> None:
    """Delete the user with their sessions, tokens, identities and connections (cascade).

    Grants at the providers are not revoked (that is `offboard_user`).
    Raises NotFoundError, LastAdminError: nothing changed.
    """
    ctx = services.ctx
    owned = await _connection_ids(services, user_id)
    await user_service.delete_user(ctx.store, user_id)
    for connection_id in owned:
        services.forget(connection_id)
    await acting.record(ctx, "user.delete", _target(user_id))


async def offboard_user(
    services: ConnectServices, acting: Acting, user_id: str, *, confirm: bool = False
) -> Offboarding:
    """Offboard the user (`accounts/offboarding.py`) with `acting` in its audit entries."""
    return await offboard(services, user_id, confirm=confirm, who=acting.who, ip=acting.address)
