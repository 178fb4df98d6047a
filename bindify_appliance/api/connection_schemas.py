"""The shapes of the connections API (OpenAPI schemas) and the administrators' overview row."""

from __future__ import annotations

from typing import Any

from bindify_appliance.api.schema import ID, TIMESTAMP, Named, boolean, nullable, obj, string
from bindify_appliance.api.services import POLICY
from bindify_appliance.clock import iso
from bindify_appliance.store.models import CONNECTION_STATUSES, KEY_STORAGE_MODES
from bindify_appliance.store.overview import ConnectionOverview

__all__ = [
    "ADMIN_PATCH",
    "AUTHORIZE",
    "CONNECTION",
    "CREATE",
    "CREATED",
    "EVENT",
    "ONE",
    "OVERVIEW",
    "OWNER_PARAM",
    "PATCH",
    "RECONNECT",
    "RECONNECTED",
    "ROTATE",
    "URL",
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
MODE = string(enum=KEY_STORAGE_MODES, description="zero_knowledge (default) or managed")
CREATE = obj(
    {
        "service": string(min_length=1, max_length=32),
        "api_key": string(min_length=1, max_length=4096),
        "fields": {"type": "object", "description": "field id → value (auth modes)"},
        "auth_mode": string(max_length=64),
        "application": string(max_length=64),
        "skip_application_validation": boolean(),
        "key_storage_mode": MODE,
        "label": string(description="1-100 characters after trimming"),
        "replace": string(max_length=64, description="id of your connection to replace"),
    },
    required=("service",),
)
AUTHORIZE = obj(
    {
        "key_storage_mode": MODE,
        "label": string(description="1-100 characters after trimming"),
        "replace": string(max_length=64),
    }
)
URL = obj({"url": string(description="the upstream authorization URL")}, required=("url",))
ONE = obj({"connection": CONNECTION}, required=("connection",))
PATCH = obj(
    {
        "label": string(description="1-100 characters after trimming"),
        "disabled": boolean(),
        "policy": nullable(POLICY),
    }
)
ADMIN_PATCH = obj({"disabled": boolean()}, required=("disabled",))
OVERVIEW = Named(
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
OWNER_PARAM = {
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


ROTATE = obj(
    {
        "credentials": string(description="the current 86-character credentials"),
        "api_key": string(description="or the current bnd_… key"),
    }
)
RECONNECT = obj(
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
RECONNECTED = obj(
    {
        "url": string(description="OAuth: the upstream authorization URL to visit"),
        "connection": CONNECTION,
    }
)
EVENT = Named(
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
