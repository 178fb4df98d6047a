"""The administrators' overview of every member's connections: metadata only (DESIGN §15).

One unit of work for `Store.run`. It selects only metadata columns — never the sealed blob,
secret1's hash or secret2's verifier — so nothing secret can reach the overview even by mistake.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from bindify_appliance.store.models import Connection, User

__all__ = ["ConnectionOverview", "list_all_connections"]


@dataclass(frozen=True)
class ConnectionOverview:
    id: str
    user_id: str
    owner_email: str
    service: str
    label: str | None
    status: str
    auth_type: str
    key_storage_mode: str
    disabled_by: str | None
    created_at: datetime
    last_used_at: datetime | None


def list_all_connections(
    after: Sequence[str] | None, limit: int, *, user_id: str | None = None
) -> list[ConnectionOverview]:
    """Connections ordered by id after the cursor's id, `limit` of them (one owner if given)."""
    query = (
        Connection.select(
            Connection.id,
            Connection.user.alias("owner_id"),
            User.email.alias("owner_email"),
            Connection.service,
            Connection.label,
            Connection.status,
            Connection.auth_type,
            Connection.key_storage_mode,
            Connection.disabled_by,
            Connection.created_at,
            Connection.last_used_at,
        )
        .join(User, on=(Connection.user == User.id))
        .order_by(Connection.id)
        .limit(limit)
        .dicts()
    )
    if after:
        query = query.where(Connection.id > after[0])
    if user_id is not None:
        query = query.where(Connection.user == user_id)
    return [
        ConnectionOverview(
            id=row["id"],
            user_id=row["owner_id"],
            owner_email=row["owner_email"],
            service=row["service"],
            label=row["label"],
            status=row["status"],
            auth_type=row["auth_type"],
            key_storage_mode=row["key_storage_mode"],
            disabled_by=row["disabled_by"],
            created_at=row["created_at"],
            last_used_at=row["last_used_at"],
        )
        for row in cast("Iterable[dict[str, Any]]", query)
    ]
