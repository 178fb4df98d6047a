"""The reconnect step shared by the API and the connection page (DESIGN §15).

`reconnect(services, user_id=…, connection_id=…, current=…, body=…)` for a connection the
caller owns, by its auth type:
- `oauth` → `Reconnect(url=…)`: the upstream authorization URL; the callback
  (`services/connect.complete_authorization`) stores the new tokens in the same row;
- `api_key` → the new key (`api_key` or `fields`, optional `auth_mode`/`application`) is
  checked upstream exactly as when connecting (`services/apikeys.checked_key`), then stored
  in place → `Reconnect(connection=…)`;
- `none` → nothing to send; the row is rewritten in place, which clears a needs-reconnect flag
  (the member's consent to a service that moved) → `Reconnect(connection=…)`.

The caller's right to reconnect (`connections/reconnect.check_current`: a zero-knowledge
connection needs its current credentials) is checked before any network call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bindify_appliance.connections.reconnect import check_current, reconnect_in_place
from bindify_appliance.crypto.credentials import Credentials
from bindify_appliance.errors import Conflict, InvalidRequest, NotFound
from bindify_appliance.services.apikeys import checked_key
from bindify_appliance.services.connect import ConnectServices, start_authorization
from bindify_appliance.store import connections as rows
from bindify_appliance.store.models import Connection

__all__ = ["Reconnect", "reconnect"]


@dataclass(frozen=True)
class Reconnect:
    """Either where to send the browser (OAuth) or the reconnected row."""

    url: str | None = None
    connection: Connection | None = None


async def reconnect(
    services: ConnectServices,
    *,
    user_id: str,
    connection_id: str,
    current: Credentials | None,
    body: Mapping[str, Any],
) -> Reconnect:
    """See the module docstring. Raises HTTPFacingError (400/404/409/422/429/502)."""
    ctx = services.ctx
    row = await ctx.store.run(rows.get_connection, connection_id, user_id)
    if row is None:
        raise NotFound("connection not found")
    check_current(row, current, ctx.keys.keyring)
    service = await services.registry.get(row.service)
    if service is None or not service.supports(row.auth_type):
        raise Conflict(
            "this connection's service no longer offers its way of connecting; "
            "connect again instead"
        )
    if row.auth_type == "oauth":
        extra = sorted(set(body) - {"credentials"})
        if extra:
            raise InvalidRequest(
                f"{service.name} reconnects by signing in again: {extra[0]} is not taken",
                field=extra[0],
            )
        url = await start_authorization(
            services, user_id=user_id, service_id=row.service, reconnect=row, current=current
        )
        return Reconnect(url=url)
    payload: dict[str, Any] = {}
    auth_mode = application = None
    if row.auth_type == "api_key":
        payload, auth_mode, application = await checked_key(services, service, user_id, body)
    fresh = await reconnect_in_place(
        ctx,
        row.id,
        user_id=user_id,
        payload=payload,
        current=current,
        auth_mode=auth_mode,
        application=application,
    )
    services.forget(row.id)
    return Reconnect(connection=fresh)
