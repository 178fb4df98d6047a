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
After a delete, a disable or a URL rotation the proxy's resolver forgets the connection at once
on this instance (others within its 1-second memo).

`connect_api_routes(ctx, services)` lists every route of this area (services, connections,
claims) for the composition root.
"""

from __future__ import annotations

from typing import Any

from tornado.routing import URLSpec

from bindify_appliance import audit
from bindify_appliance.api.base import operation
from bindify_appliance.api.claims import ClaimHandler
from bindify_appliance.api.pagination import (
    PAGE_PARAMS,
    list_schema,
    page_json,
    parse_limit,
    requested_page,
    slice_json,
)
from bindify_appliance.api.schema import ID, TIMESTAMP, Named, boolean, nullable, obj, string
from bindify_appliance.api.services import (
    POLICY,
    ConnectApiHandler,
    ServiceHandler,
    ServicesHandler,
)
from bindify_appliance.billing import bring_up_to_date
from bindify_appliance.clock import iso
from bindify_appliance.connections.create import normalize_label, rotate_credentials
from bindify_appliance.connections.disabling import set_connection_disabled
from bindify_appliance.connections.policy import store_connection_policy
from bindify_appliance.connections.secrets import parse_presented_credentials
from bindify_appliance.context import AppContext
from bindify_appliance.errors import HTTPFacingError
from bindify_appliance.proxy.policy import parse_policy
from bindify_appliance.routes import route
from bindify_appliance.services.apikeys import connect_with_key
from bindify_appliance.services.connect import (
    ConnectServices,
    public_connection,
    result_json,
    start_authorization,
)
from bindify_appliance.services.reconnect import reconnect
from bindify_appliance.store import connections as rows
from bindify_appliance.store.events import list_events
from bindify_appliance.store.models import CONNECTION_STATUSES, KEY_STORAGE_MODES, Connection
from bindify_appliance.store.overview import ConnectionOverview, list_all_connections

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

CONNECTION = Named(
    "Connection",
    obj(
        {
            "id": ID,
            "service": string(),
            "label": nullable(string()),
            "status": string(enum=CONNECTION_STATUSES),
            "key_storage_mode": string(enum=KEY_STORAGE_MODES),
            "auth_type": string(enum=("oauth", "api_key", "none")),
            "created_at": TIMESTAMP,
            "last_used_at": nullable(TIMESTAMP),
            "last_refreshed_at": nullable(TIMESTAMP),
            "background_refresh": {
                "type": "boolean",
                "description": "true only for managed OAuth connections: the appliance refreshes"
                " their tokens in the background; others refresh on their next request",
            },
            "policy": nullable(POLICY),
        },
        required=(
            "id",
            "service",
            "label",
            "status",
            "key_storage_mode",
            "auth_type",
            "created_at",
            "last_used_at",
            "last_refreshed_at",
            "background_refresh",
            "policy",
        ),
    ),
)
CREATED = Named(
    "ConnectionSecrets",
    obj(
        {
            "connection": CONNECTION,
            "secret_url": string(description="shown only in this answer"),
            "api_key": string(description="bnd_live_…; shown only in this answer"),
        },
        required=("connection", "secret_url", "api_key"),
    ),
)
_MODE = string(enum=KEY_STORAGE_MODES, description="zero_knowledge (default) or managed")
_CREATE = obj(
    {
        "service": string(min_length=1, max_length=32),
        "api_key": string(min_length=1, max_length=4096),
        "fields": {"type": "object", "description": "field id → value (auth modes)"},
        "auth_mode": string(max_length=64),
        "application": string(max_length=64),
        "skip_application_validation": boolean(),
        "key_storage_mode": _MODE,
        "label": string(description="1-100 characters after trimming"),
        "replace": string(max_length=64, description="id of your connection to replace"),
    },
    required=("service",),
)
_AUTHORIZE = obj(
    {
        "key_storage_mode": _MODE,
        "label": string(description="1-100 characters after trimming"),
        "replace": string(max_length=64),
    }
)
_URL = obj({"url": string(description="the upstream authorization URL")}, required=("url",))
_ONE = obj({"connection": CONNECTION}, required=("connection",))
_PATCH = obj(
    {
        "label": string(description="1-100 characters after trimming"),
        "disabled": boolean(),
        "policy": nullable(POLICY),
    }
)
_ADMIN_PATCH = obj({"disabled": boolean()}, required=("disabled",))
_OVERVIEW = Named(
    "ConnectionOverview",
    obj(
        {
            "id": ID,
            "owner": obj({"id": ID, "email": string(fmt="email")}, required=("id", "email")),
            "service": string(),
            "label": nullable(string()),
            "status": string(enum=CONNECTION_STATUSES),
            "auth_type": string(enum=("oauth", "api_key", "none")),
            "key_storage_mode": string(enum=KEY_STORAGE_MODES),
            "disabled_by": nullable(string(enum=("admin", "owner"))),
            "created_at": TIMESTAMP,
            "last_used_at": nullable(TIMESTAMP),
        },
        required=(
            "id",
            "owner",
            "service",
            "label",
            "status",
            "auth_type",
            "key_storage_mode",
            "disabled_by",
            "created_at",
            "last_used_at",
        ),
    ),
)
_OWNER_PARAM = {
    "name": "user_id",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "description": "only this member's connections"},
}


def overview_json(c: ConnectionOverview) -> dict[str, Any]:
    """One row of the administrators' overview: metadata only, never a secret."""
    return {
        "id": c.id,
        "owner": {"id": c.user_id, "email": c.owner_email},
        "service": c.service,
        "label": c.label,
        "status": c.status,
        "auth_type": c.auth_type,
        "key_storage_mode": c.key_storage_mode,
        "disabled_by": c.disabled_by,
        "created_at": iso(c.created_at),
        "last_used_at": iso(c.last_used_at) if c.last_used_at else None,
    }


_ROTATE = obj(
    {
        "credentials": string(description="the current 86-character credentials"),
        "api_key": string(description="or the current bnd_… key"),
    }
)
_RECONNECT = obj(
    {
        "credentials": string(
            description="the current 86-character credentials (required for zero-knowledge)"
        ),
        "api_key": string(min_length=1, max_length=4096, description="the new upstream key"),
        "fields": {"type": "object", "description": "field id → value (auth modes)"},
        "auth_mode": string(max_length=64),
        "application": string(max_length=64),
        "skip_application_validation": boolean(),
    }
)
_RECONNECTED = obj(
    {
        "url": string(description="OAuth: the upstream authorization URL to visit"),
        "connection": CONNECTION,
    }
)
_EVENT = Named(
    "ConnectionEvent",
    obj(
        {
            "id": {"type": "integer"},
            "event_type": string(),
            "category": string(),
            "detail": nullable(string()),
            "upstream_status": nullable({"type": "integer"}),
            "created_at": TIMESTAMP,
        },
        required=("id", "event_type", "category", "detail", "upstream_status", "created_at"),
    ),
)


def _not_found() -> HTTPFacingError:
    return HTTPFacingError("connection not found", status=404, code="not_found")


class _Owned(ConnectApiHandler):
    async def connection(self, connection_id: str) -> Connection:
        """The connection if the caller owns it; else 404 (administrators included)."""
        row = await self.ctx.store.run(rows.get_connection, connection_id, None)
        if row is not None and row.user_id == self.user.user_id:
            return row
        raise _not_found()

    async def set_disabled(self, row: Connection, disabled: bool, role: str) -> None:
        await set_connection_disabled(
            self, self.services, row.id, disabled, actor_id=self.user.user_id, role=role
        )

    async def answer(self, connection_id: str) -> None:
        fresh = await self.ctx.store.run(rows.get_connection, connection_id, None)
        if fresh is None:
            raise _not_found()
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
        body=_CREATE,
        status=201,
        response=CREATED,
        errors=(404, 422, 429, 502),
    )
    async def post(self) -> None:
        created = await connect_with_key(self.services, user_id=self.user.user_id, body=self.body)
        if self.body.get("replace"):
            self.services.forget(str(self.body["replace"]))
        self.write_json(result_json(created), 201)


class AuthorizeHandler(_Owned):
    @operation(
        "Start connecting by OAuth: the upstream authorization URL to visit",
        access="user",
        tag="connections",
        body=_AUTHORIZE,
        response=_URL,
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
    @operation("One of your connections", access="user", tag="connections", response=_ONE)
    async def get(self, id: str) -> None:
        await bring_up_to_date(self.ctx, self.user.user_id)  # billing's suspensions (§11)
        row = await self.connection(id)
        self.write_json({"connection": public_connection(row)})

    @operation(
        "Rename, disable or re-enable one of your connections, or set its tool policy",
        access="user",
        tag="connections",
        body=_PATCH,
        response=_ONE,
        errors=(403,),
        description="A connection an administrator disabled stays disabled until an "
        "administrator re-enables it (403 forbidden, nothing changes).",
    )
    async def patch(self, id: str) -> None:
        row = await self.connection(id)
        label = normalize_label(self.body["label"]) if "label" in self.body else None
        # Checked before anything changes; it can only narrow the service's policy (DESIGN §13).
        policy = parse_policy(self.body["policy"]) if "policy" in self.body else None
        enabling = self.body.get("disabled") is False
        if enabling and row.disabled_by == "admin" and not self.user.is_admin:
            # Refused before anything (the label included) changes.
            raise HTTPFacingError(rows.ADMIN_DISABLED_MESSAGE, status=403, code="forbidden")
        if label is not None:
            await self.ctx.store.run(rows.set_label, row.id, label, self.ctx.clock.now())
            await audit.by_request(self, "connection.rename", audit.Target("connection", row.id))
        if "policy" in self.body:
            await store_connection_policy(self.services, row.id, policy)
            await audit.by_request(self, "connection.policy", audit.Target("connection", row.id))
        if "disabled" in self.body:
            role = "admin" if self.user.is_admin else "owner"
            await self.set_disabled(row, bool(self.body["disabled"]), role)
        await self.answer(row.id)

    @operation("Delete one of your connections", access="user", tag="connections", status=204)
    async def delete(self, id: str) -> None:
        row = await self.connection(id)
        await self.ctx.store.run(rows.delete_connection, row.id, self.user.user_id)
        await audit.by_request(self, "connection.delete", audit.Target("connection", row.id))
        self.services.forget(row.id)
        self.write_no_content()


class AdminConnectionsHandler(_Owned):
    @operation(
        "Every member's connections, as metadata (administrators)",
        access="admin",
        tag="connections",
        query=(*PAGE_PARAMS, _OWNER_PARAM),
        response=list_schema(_OVERVIEW),
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
        body=_ADMIN_PATCH,
        response=_ONE,
        description="The answer is the connection's metadata, never a secret. An owner cannot "
        "re-enable a connection disabled here.",
    )
    async def patch(self, id: str) -> None:
        row = await self.ctx.store.run(rows.get_connection, id, None)
        if row is None:
            raise _not_found()
        await self.set_disabled(row, bool(self.body["disabled"]), "admin")
        await self.answer(row.id)


class RotateUrlHandler(_Owned):
    @operation(
        "New secret URL and API key; the old ones stop at once",
        access="user",
        tag="connections",
        body=_ROTATE,
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
        rotated = await rotate_credentials(
            self.ctx, self.services.registry, row.id, user_id=self.user.user_id, current=current
        )
        self.services.forget(row.id)
        await audit.by_request(self, "connection.rotate", audit.Target("connection", row.id))
        self.write_json(result_json(rotated))


class ReconnectHandler(_Owned):
    @operation(
        "Reconnect in place: same id, secret URL, API key and history",
        access="user",
        tag="connections",
        body=_RECONNECT,
        response=_RECONNECTED,
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
        response=list_schema(_EVENT),
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
