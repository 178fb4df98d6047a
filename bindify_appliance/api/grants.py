"""`/api/v1/connections/{id}/grants`: the MCP clients holding a grant to one of your connections
("Connected apps", DESIGN §10) — list them, end one, or end them all.

Only the connection's owner sees or ends its grants (another member, administrators included,
gets 404, as for the connection itself).
"""

from __future__ import annotations

from typing import Any

from tornado.routing import URLSpec

from bindify_appliance import audit
from bindify_appliance.api.base import operation
from bindify_appliance.api.pagination import list_schema
from bindify_appliance.api.schema import ID, TIMESTAMP, Named, nullable, obj, string
from bindify_appliance.api.services import ConnectApiHandler
from bindify_appliance.clock import iso
from bindify_appliance.context import AppContext
from bindify_appliance.errors import NotFound
from bindify_appliance.oauth_server.grants import (
    GrantView,
    list_grants,
    revoke_connection_grants,
    revoke_grant,
)
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.usecases.acting import from_request
from bindify_appliance.usecases.connections import owned_connection

__all__ = ["grant_api_routes"]

GRANT = Named(
    "OAuthGrant",
    obj(
        {
            "id": ID,
            "client_id": string(),
            "client_name": string(),
            "created_at": TIMESTAMP,
            "last_used_at": nullable(TIMESTAMP),
        },
        required=("id", "client_id", "client_name", "created_at", "last_used_at"),
    ),
)


def grant_json(grant: GrantView) -> dict[str, Any]:
    return {
        "id": grant.id,
        "client_id": grant.client_id,
        "client_name": grant.client_name,
        "created_at": iso(grant.created_at),
        "last_used_at": iso(grant.last_used_at) if grant.last_used_at else None,
    }


class _OwnedGrants(ConnectApiHandler):
    async def owned(self, connection_id: str) -> str:
        row = await owned_connection(
            self.services, from_request(self), connection_id, message="connection not found"
        )
        return row.id

    async def ended(self, connection_id: str, grant_id: str | None, count: int) -> None:
        detail: dict[str, Any] = {"reason": "member", "count": count}
        if grant_id is not None:
            detail["grant"] = grant_id
        await audit.by_request(
            self, "oauth.revoke", audit.Target("connection", connection_id), detail=detail
        )


class GrantsHandler(_OwnedGrants):
    @operation(
        "The MCP clients holding a grant to one of your connections, newest first",
        access="user",
        tag="connections",
        response=list_schema(GRANT),
    )
    async def get(self, id: str) -> None:
        connection_id = await self.owned(id)
        grants = await list_grants(self.ctx, connection_id)
        self.write_json({"items": [grant_json(g) for g in grants], "next_cursor": None})

    @operation(
        "End every MCP client's grant to one of your connections",
        access="user",
        tag="connections",
        status=204,
    )
    async def delete(self, id: str) -> None:
        connection_id = await self.owned(id)
        count = await revoke_connection_grants(self.ctx, connection_id)
        if count:
            await self.ended(connection_id, None, count)
        self.write_no_content()


class GrantHandler(_OwnedGrants):
    @operation(
        "End one MCP client's grant to one of your connections",
        access="user",
        tag="connections",
        status=204,
    )
    async def delete(self, id: str, grant_id: str) -> None:
        connection_id = await self.owned(id)
        if not await revoke_grant(self.ctx, connection_id, grant_id):
            raise NotFound("grant not found")
        await self.ended(connection_id, grant_id, 1)
        self.write_no_content()


def grant_api_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    kw: dict[str, Any] = {"services": services}
    return [
        route("/api/v1/connections/{id}/grants", GrantsHandler, ctx, **kw),
        route("/api/v1/connections/{id}/grants/{grant_id}", GrantHandler, ctx, **kw),
    ]
