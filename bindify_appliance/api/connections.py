"""Connections: create, authorize, list, read, change, delete, rotate the URL, events.

- `POST /api/v1/connections` — API key, fields or auth `none` → 201 `{connection, secret_url,
  api_key}` (the only time the secrets are shown);
- `POST /api/v1/connections/{service}/authorize` → `{url}`; the browser comes back to
  `/oauth/callback` (web/oauth_callback.py), which hands the secrets over through a claim;
- `GET /api/v1/connections` (the caller's own), `GET/PATCH/DELETE /api/v1/connections/{id}`,
  `POST /api/v1/connections/{id}/rotate-url`, `GET /api/v1/connections/{id}/events`,
  `POST /api/v1/connections/{id}/reconnect` (in place: same id, URL and key; DESIGN §15).

Ownership: everyone sees and changes only their own connections through these routes — another
member's id is "not found" (no existence oracle), for administrators too, whatever the body.
Administrators list every member's connections as metadata (`GET /api/v1/admin/connections`:
owner, service, label, status, last use; never a secret) and disable or re-enable any
connection through `PATCH
/api/v1/admin/connections/{id}` `{"disabled": bool}` (DESIGN §15), which answers the
connection's metadata, never a secret. The owner cannot re-enable a connection an administrator
disabled (403 `forbidden`, nothing changes); events name who acted ("by admin {user id}").
Every change goes through `usecases.connections` (the store write, the proxy's cache and the
audit entry together), as the pages do.

`connect_api_routes(ctx, services)` lists every route of this area (services, connections,
claims) for the composition root.
"""

from __future__ import annotations

from typing import Any

from tornado.routing import URLSpec

from bindify_appliance.api.base import operation
from bindify_appliance.api.claims import ClaimHandler
from bindify_appliance.api.connection_schemas import (
    ADMIN_PATCH,
    AUTHORIZE,
    CONNECTION,
    CREATE,
    CREATED,
    EVENT,
    ONE,
    OVERVIEW,
    OWNER_PARAM,
    PATCH,
    RECONNECT,
    RECONNECTED,
    ROTATE,
    URL,
    overview_json,
)
from bindify_appliance.api.pagination import (
    PAGE_PARAMS,
    list_schema,
    page_json,
    parse_limit,
    requested_page,
    slice_json,
)
from bindify_appliance.api.services import ConnectApiHandler, ServiceHandler, ServicesHandler
from bindify_appliance.billing import bring_up_to_date
from bindify_appliance.connections.create import normalize_label
from bindify_appliance.connections.secrets import parse_presented_credentials
from bindify_appliance.connections.shapes import public_connection, result_json
from bindify_appliance.context import AppContext
from bindify_appliance.proxy.policy import parse_policy
from bindify_appliance.routes import route
from bindify_appliance.services.apikeys import connect_with_key
from bindify_appliance.services.connect import ConnectServices, start_authorization
from bindify_appliance.services.reconnect import reconnect
from bindify_appliance.store import connections as rows
from bindify_appliance.store.events import list_events
from bindify_appliance.store.models import Connection
from bindify_appliance.store.overview import list_all_connections
from bindify_appliance.usecases import connections as ops
from bindify_appliance.usecases.acting import Acting, from_request

__all__ = [
    "CONNECTION",
    "CREATED",
    "AdminConnectionHandler",
    "AdminConnectionsHandler",
    "AuthorizeHandler",
    "ConnectionEventsHandler",
    "ConnectionHandler",
    "ConnectionsHandler",
    "ReconnectHandler",
    "RotateUrlHandler",
    "connect_api_routes",
    "overview_json",
]


class _Owned(ConnectApiHandler):
    @property
    def acting(self) -> Acting:
        return from_request(self)

    async def connection(self, connection_id: str) -> Connection:
        """The connection if the caller owns it; else 404 (administrators included)."""
        return await ops.owned_connection(self.services, self.acting, connection_id)

    async def answer(self, connection_id: str) -> None:
        fresh = await ops.any_connection(self.services, connection_id)
        self.write_json({"connection": public_connection(fresh)})


class ConnectionsHandler(_Owned):
    @operation(
        "Your connections",
        access="user",
        tag="connections",
        query=PAGE_PARAMS,
        response=list_schema(CONNECTION),
    )
    async def get(self) -> None:
        after, limit = requested_page(self, (str,))
        await bring_up_to_date(self.ctx, self.user.user_id)  # billing's suspensions (§11)
        listed = await self.ctx.store.run(rows.list_for_user, self.user.user_id)
        self.write_json(slice_json(listed, after, limit, lambda c: c.id, public_connection))

    @operation(
        "Connect with an API key, fields, or no credential (auth none)",
        access="user",
        tag="connections",
        body=CREATE,
        status=201,
        response=CREATED,
        errors=(404, 422, 429, 502),
    )
    async def post(self) -> None:
        created = await connect_with_key(self.services, user_id=self.user.user_id, body=self.body)
        self.write_json(result_json(created), 201)


class AuthorizeHandler(_Owned):
    @operation(
        "Start connecting by OAuth: the upstream authorization URL to visit",
        access="user",
        tag="connections",
        body=AUTHORIZE,
        response=URL,
        errors=(409, 502),
    )
    async def post(self, service: str) -> None:
        url = await start_authorization(
            self.services,
            user_id=self.user.user_id,
            service_id=service,
            key_storage_mode=self.body.get("key_storage_mode"),
            label=self.body.get("label"),
            replace=self.body.get("replace"),
        )
        self.write_json({"url": url})


class ConnectionHandler(_Owned):
    @operation("One of your connections", access="user", tag="connections", response=ONE)
    async def get(self, id: str) -> None:
        await bring_up_to_date(self.ctx, self.user.user_id)  # billing's suspensions (§11)
        row = await self.connection(id)
        self.write_json({"connection": public_connection(row)})

    @operation(
        "Rename, disable or re-enable one of your connections, or set its tool policy",
        access="user",
        tag="connections",
        body=PATCH,
        response=ONE,
        errors=(403,),
        description="A connection an administrator disabled stays disabled until an "
        "administrator re-enables it (403 forbidden, nothing changes).",
    )
    async def patch(self, id: str) -> None:
        row = await self.connection(id)
        acting = self.acting
        # Every check before anything changes; a policy can only narrow the service's (§13).
        label = normalize_label(self.body["label"]) if "label" in self.body else None
        policy = parse_policy(self.body["policy"]) if "policy" in self.body else None
        ops.check_may_enable(acting, row, self.body.get("disabled"))
        if label is not None:
            await ops.rename_connection(self.services, acting, row.id, label)
        if "policy" in self.body:
            await ops.set_connection_policy(self.services, acting, row.id, policy)
        if "disabled" in self.body:
            await ops.set_connection_disabled(
                self.services, acting, row.id, bool(self.body["disabled"])
            )
        await self.answer(row.id)

    @operation("Delete one of your connections", access="user", tag="connections", status=204)
    async def delete(self, id: str) -> None:
        row = await self.connection(id)
        await ops.delete_connection(self.services, self.acting, row)
        self.write_no_content()


class AdminConnectionsHandler(_Owned):
    @operation(
        "Every member's connections, as metadata (administrators)",
        access="admin",
        tag="connections",
        query=(*PAGE_PARAMS, OWNER_PARAM),
        response=list_schema(OVERVIEW),
        description="Owner, service, label, status, last use: never a secret, never a payload.",
    )
    async def get(self) -> None:
        after, limit = requested_page(self, (str,))
        owner = (self.get_query_argument("user_id", None) or "")[:64] or None
        listed = await self.ctx.store.run(
            lambda: list_all_connections(after, limit + 1, user_id=owner)
        )
        self.write_json(page_json(listed, limit, lambda c: (c.id,), overview_json))


class AdminConnectionHandler(_Owned):
    @operation(
        "Disable or re-enable any member's connection (administrators)",
        access="admin",
        tag="connections",
        body=ADMIN_PATCH,
        response=ONE,
        description="The answer is the connection's metadata, never a secret. An owner cannot "
        "re-enable a connection disabled here.",
    )
    async def patch(self, id: str) -> None:
        row = await ops.any_connection(self.services, id)
        await ops.set_connection_disabled(
            self.services, self.acting, row.id, bool(self.body["disabled"])
        )
        await self.answer(row.id)


class RotateUrlHandler(_Owned):
    @operation(
        "New secret URL and API key; the old ones stop at once",
        access="user",
        tag="connections",
        body=ROTATE,
        response=CREATED,
        errors=(409,),
        description=(
            "Zero-knowledge connections must send their current credentials "
            '({"credentials": "…"} or {"api_key": "bnd_…"}); without them 409.'
        ),
    )
    async def post(self, id: str) -> None:
        row = await self.connection(id)
        current = None
        if "credentials" in self.body or "api_key" in self.body:
            current = parse_presented_credentials(
                self.body.get("credentials"), self.body.get("api_key")
            )
        rotated = await ops.rotate_connection(self.services, self.acting, row, current)
        self.write_json(result_json(rotated))


class ReconnectHandler(_Owned):
    @operation(
        "Reconnect in place: same id, secret URL, API key and history",
        access="user",
        tag="connections",
        body=RECONNECT,
        response=RECONNECTED,
        errors=(404, 409, 422, 429, 502),
        description=(
            "OAuth: {credentials?} → {url}; the callback gives this connection the new tokens. "
            "API key: {api_key | fields, credentials?} → {connection}. Zero-knowledge "
            "connections must send their current credentials (409 without them); managed ones "
            "need not. Records a `connection/reconnected` event."
        ),
    )
    async def post(self, id: str) -> None:
        row = await self.connection(id)
        current = None
        if "credentials" in self.body:
            current = parse_presented_credentials(self.body["credentials"], None)
        done = await reconnect(
            self.services,
            user_id=self.user.user_id,
            connection_id=row.id,
            current=current,
            body=self.body,
        )
        if done.url is not None:
            self.write_json({"url": done.url})
        else:
            assert done.connection is not None
            self.write_json({"connection": public_connection(done.connection)})


class ConnectionEventsHandler(_Owned):
    @operation(
        "A connection's events, newest first (metadata only)",
        access="user",
        tag="connections",
        query=PAGE_PARAMS,
        response=list_schema(EVENT),
    )
    async def get(self, id: str) -> None:
        row = await self.connection(id)
        limit = parse_limit(self.get_query_argument("limit", None))
        cursor = self.get_query_argument("cursor", None) or None
        found = await self.ctx.store.run(lambda: list_events(row.id, limit=limit, cursor=cursor))
        self.write_json(
            {"items": [e.public() for e in found.items], "next_cursor": found.next_cursor}
        )


def connect_api_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    """The services, connections and claims routes (specific paths before `{id}`)."""
    kw: dict[str, Any] = {"services": services}
    return [
        route("/api/v1/services", ServicesHandler, ctx, **kw),
        route("/api/v1/services/{id}", ServiceHandler, ctx, **kw),
        route("/api/v1/connections", ConnectionsHandler, ctx, **kw),
        route("/api/v1/connections/{service}/authorize", AuthorizeHandler, ctx, **kw),
        route("/api/v1/connections/{id}/rotate-url", RotateUrlHandler, ctx, **kw),
        route("/api/v1/connections/{id}/events", ConnectionEventsHandler, ctx, **kw),
        route("/api/v1/connections/{id}/reconnect", ReconnectHandler, ctx, **kw),
        route("/api/v1/connections/{id}", ConnectionHandler, ctx, **kw),
        route("/api/v1/claims/{token}", ClaimHandler, ctx, **kw),
        route("/api/v1/admin/connections", AdminConnectionsHandler, ctx, **kw),
        route("/api/v1/admin/connections/{id}", AdminConnectionHandler, ctx, **kw),
    ]
