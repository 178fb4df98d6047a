"""A connection as the API and the pages show it: metadata only, and the one shape with secrets.

Invariant: only `result_json` ever carries the secret URL and API key, and only in the answer
that creates or rotates them.
"""

from __future__ import annotations

from typing import Any

from bindify_appliance.clock import iso
from bindify_appliance.connections.create import CreatedConnection
from bindify_appliance.proxy.policy import load_policy
from bindify_appliance.store.models import Connection

__all__ = ["public_connection", "result_json"]


def public_connection(row: Connection) -> dict[str, Any]:
    """A connection as the API shows it (DESIGN §5): never a secret."""
    return {
        "id": row.id,
        "service": row.service,
        "label": row.label,
        # Billing's suspension (DESIGN §11) reads back as a status of its own.
        "status": "suspended" if row.billing_suspended_at is not None else row.status,
        "key_storage_mode": row.key_storage_mode,
        "auth_type": row.auth_type,
        "created_at": iso(row.created_at),
        "last_used_at": iso(row.last_used_at) if row.last_used_at else None,
        "last_refreshed_at": iso(row.last_refreshed_at) if row.last_refreshed_at else None,
        # Only managed OAuth tokens are refreshed (or kept alive) by the background job: a
        # zero-knowledge connection's key lives only in its URL; it refreshes on its next request.
        "background_refresh": row.auth_type == "oauth" and row.key_storage_mode == "managed",
        # The member's own narrowing of the service's tool policy (DESIGN §13), null = none.
        "policy": _policy_json(row.policy_json),
    }


def _policy_json(stored: str | None) -> dict[str, Any] | None:
    policy = load_policy(stored)
    return policy.public() if policy is not None else None


def result_json(created: CreatedConnection) -> dict[str, Any]:
    """`{connection, secret_url, api_key}` — the only shape that ever carries the secrets."""
    return {
        "connection": public_connection(created.connection),
        "secret_url": created.secret_url,
        "api_key": created.api_key,
    }
