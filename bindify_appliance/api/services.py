"""Services: `GET/POST /api/v1/services`, `PATCH/DELETE /api/v1/services/{id}` (DESIGN §5).

Everyone signed in reads the catalogue (built-ins first, then admin-added services by id);
only administrators add, change or delete services. A service reads back as `{id, name,
builtin, transport, mcp_url, auth, oauth_configured, api_key}` and never shows a client secret
(only whether one is set and where from: `auth.oauth.client_secret_source`). A PATCH of a
built-in accepts only its OAuth app credentials; deleting a service with connections is 409.

The AUTH object's rules (one of none / api_key header / api_key query / oauth) live in
`services/validation.py` and are checked there, so the schemas below only say "an object".
"""

from __future__ import annotations

from typing import Any

from bindify_appliance import audit
from bindify_appliance.api.base import ApiHandler, operation
from bindify_appliance.api.pagination import (
    PAGE_PARAMS,
    list_schema,
    requested_page,
    slice_json,
)
from bindify_appliance.api.schema import Named, array, boolean, nullable, obj, string
from bindify_appliance.http.services import WithConnectServices
from bindify_appliance.proxy.policy import MAX_GLOB, MAX_GLOBS
from bindify_appliance.services.definitions import ServiceDefinition
from bindify_appliance.store import dcr as dcr_rows

__all__ = [
    "POLICY",
    "SERVICE",
    "ConnectApiHandler",
    "ServiceHandler",
    "ServicesHandler",
    "create_service",
    "delete_service",
    "service_json",
    "update_action",
    "update_service",
]

_AUTH_DOC = (
    'AUTH: {"type": "none"}, {"type": "api_key", "header": H, "prefix"?: P}, '
    '{"type": "api_key", "query": Q}, or {"type": "oauth"} optionally with authorization_url, '
    "token_url, registration_url, client_id, client_secret, scopes, resource, "
    "extra_authorize_params"
)
_GLOBS = array(string(min_length=1, max_length=MAX_GLOB), max_items=MAX_GLOBS)
POLICY = Named(
    "ToolPolicy",
    {
        **obj(
            {
                "tools": obj(
                    {
                        "allow": {**_GLOBS, "description": "globs; empty = every tool"},
                        "deny": {**_GLOBS, "description": "globs; deny wins over allow"},
                    }
                ),
                "read_only": boolean(),
            }
        ),
        "description": "DESIGN §13: a PATCH replaces the whole object, null clears it. A "
        "connection's policy only narrows its service's: allow lists intersect, deny lists add "
        "up, read_only if either says so (tools whose upstream annotations.readOnlyHint is true).",
    },
)
SERVICE = Named(
    "Service",
    obj(
        {
            "id": string(),
            "name": string(),
            "builtin": boolean(),
            "transport": string(enum=("streamable-http", "sse")),
            "mcp_url": string(),
            "auth": {"type": "object", "description": "how credentials reach it; no secrets"},
            "oauth_configured": boolean(),
            "api_key": nullable({"type": "object", "description": "instructions, fields, modes"}),
            "policy": nullable(POLICY),
        },
        required=(
            "id",
            "name",
            "builtin",
            "transport",
            "mcp_url",
            "auth",
            "oauth_configured",
            "api_key",
            "policy",
        ),
    ),
)
_FIELDS: dict[str, Any] = {
    "id": string(min_length=2, max_length=32, description="slug ^[a-z][a-z0-9-]{1,31}$"),
    "name": string(min_length=1, max_length=100),
    "mcp_url": string(min_length=1, max_length=2048),
    "auth": {"type": "object", "description": _AUTH_DOC},
    "transport": string(enum=("streamable-http", "sse")),
}
_CREATE = obj(_FIELDS, required=("id", "name", "mcp_url", "auth"))
_PATCH = obj({**_FIELDS, "policy": nullable(POLICY)})
_ONE = obj({"service": SERVICE}, required=("service",))


def service_json(service: ServiceDefinition) -> dict[str, Any]:
    return service.public()


class ConnectApiHandler(WithConnectServices, ApiHandler):
    """An API handler with the connect collaborators at hand."""


class ServicesHandler(ConnectApiHandler):
    @operation(
        "The service catalogue",
        access="user",
        tag="services",
        query=PAGE_PARAMS,
        response=list_schema(SERVICE),
    )
    async def get(self) -> None:
        after, limit = requested_page(self, (str,))
        listed = await self.services.registry.list()
        self.write_json(slice_json(listed, after, limit, lambda s: s.id, service_json))

    @operation(
        "Add a remote MCP server (admin)",
        access="admin",
        tag="services",
        body=_CREATE,
        status=201,
        response=_ONE,
        errors=(409,),
        description=_AUTH_DOC,
    )
    async def post(self) -> None:
        created = await create_service(self, self.body)
        self.write_json({"service": service_json(created)}, 201)


async def create_service(handler: WithConnectServices, body: object) -> ServiceDefinition:
    """Add a service and audit it (the API's POST and the services page's form); the registry
    checks the body (HTTPFacingError 400, ConflictError for a taken id) before writing."""
    created = await handler.services.registry.create(body, keyring=handler.ctx.keys.keyring)
    await audit.by_request(handler, "service.create", audit.Target("service", created.id))
    return created


def update_action(body: dict[str, Any]) -> str:
    """`oauth_app.set` when the change sets OAuth app credentials, else `service.update`."""
    auth = body.get("auth")
    keys = [*body, *(auth if isinstance(auth, dict) else ())]  # the credentials sit in `auth`
    return "oauth_app.set" if any("client" in key for key in keys) else "service.update"


async def update_service(
    handler: WithConnectServices, service_id: str, body: dict[str, Any]
) -> ServiceDefinition:
    """Apply an admin's change to a service and audit it: the API's PATCH and the UI's forms.

    The registry validates the whole body before writing anything and flags every connection
    `needs_reconnect` when an endpoint moves (DESIGN §9), so a refused body changes nothing.
    """
    updated = await handler.services.registry.update(
        service_id, body, keyring=handler.ctx.keys.keyring
    )
    await audit.by_request(
        handler,
        update_action(body),
        audit.Target("service", service_id),
        detail={"fields": sorted(body)[:20]},
    )
    return updated


async def delete_service(handler: WithConnectServices, service_id: str) -> None:
    """Delete an admin-added service (`ConflictError` while connections use it) and audit it."""
    await handler.services.registry.delete(service_id)
    await audit.by_request(handler, "service.delete", audit.Target("service", service_id))
    # Its client registrations are bound to a service that no longer exists.
    await handler.ctx.store.run(dcr_rows.delete_registrations, service_id)


class ServiceHandler(ConnectApiHandler):
    @operation(
        "Change a service (admin; built-ins: OAuth app credentials and policy only)",
        access="admin",
        tag="services",
        body=_PATCH,
        response=_ONE,
    )
    async def patch(self, id: str) -> None:
        updated = await update_service(self, id, self.body)
        self.write_json({"service": service_json(updated)})

    @operation(
        "Delete an admin-added service (409 while connections use it)",
        access="admin",
        tag="services",
        status=204,
        errors=(400, 409),
    )
    async def delete(self, id: str) -> None:
        await delete_service(self, id)
        self.write_no_content()
