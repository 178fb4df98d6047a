"""Connection rows: creation, lookup, use stamps, and the compare-and-swap token write.

Status changes (needs-reconnect, the service-moved flag, disable/enable) live in
`store/connection_state.py`, the proxy's read model (`ConnectionAuth`) in
`store/connection_auth.py`; both are re-exported here: callers use one `connections` module.

Every function here is a synchronous unit of work for `Store.run`/`Store.call`.

Invariants:
- Token blobs change only through `swap_tokens` (refresh, key rotation) or
  `replace_credentials` (rotate-url), both of which succeed only when the row's
  `token_generation` still equals what the writer read, and bump it (DESIGN §8). A refresh, a
  key rotation and a URL rotation racing on one row therefore never overwrite each other: the
  loser sees False, re-reads and decides again.
- Nothing here ever sees secret1, secret2 or a plaintext upstream secret: rows carry secret1's
  lookup hash, secret2's verifier (managed only) and the sealed blob.
- `status` is derived, in the same UPDATE that changes a flag, from `disabled_at` and
  `needs_reconnect_at`: disabled wins over needs_reconnect, which wins over active.
- `last_used_at` is written at most once per connection per `USE_STAMP_INTERVAL` (a conditional
  UPDATE), so busy connections cost no write per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import peewee

from bindify_appliance.errors import ConflictError, NotFoundError
from bindify_appliance.store.connection_auth import (
    ConnectionAuth,
    get_auth_by_id,
    get_auth_by_secret1_hash,
)
from bindify_appliance.store.connection_state import (
    ADMIN_DISABLED_MESSAGE,
    SERVICE_MOVED_REASON,
    clear_needs_reconnect,
    flag_service_moved,
    set_disabled,
    set_needs_reconnect,
    state_event,
)
from bindify_appliance.store.events import record_event
from bindify_appliance.store.grant_epoch import grants_ended
from bindify_appliance.store.models import (
    AUTH_TYPES,
    KEY_STORAGE_MODES,
    Connection,
    OAuthGrant,
)

__all__ = [
    "ADMIN_DISABLED_MESSAGE",
    "SERVICE_MOVED_REASON",
    "USE_STAMP_INTERVAL",
    "ConnectionAuth",
    "NewConnection",
    "clear_needs_reconnect",
    "count_for_service",
    "count_using_service",
    "delete_connection",
    "flag_service_moved",
    "get_auth_by_id",
    "get_auth_by_secret1_hash",
    "get_connection",
    "insert_connection",
    "list_for_user",
    "mark_used",
    "note_proxy_use",
    "replace_credentials",
    "set_disabled",
    "set_label",
    "set_needs_reconnect",
    "set_policy",
    "swap_tokens",
]

USE_STAMP_INTERVAL: Final = timedelta(minutes=1)


def swap_tokens(
    connection_id: str,
    *,
    expected_generation: int,
    encrypted_tokens: str,
    key_fingerprint: str,
    now: datetime,
    token_expires_at: datetime | None = None,
    set_expiry: bool = False,
    refreshed: bool = False,
) -> bool:
    """Replace the sealed tokens if nobody else has since; True when this write won.

    `set_expiry` writes `token_expires_at` (a refresh); a re-encryption leaves it alone.
    `refreshed` also stamps `last_refreshed_at` and clears the refresh-in-flight marker.
    """
    updates: dict[object, object] = {
        Connection.encrypted_tokens: encrypted_tokens,
        Connection.key_fingerprint: key_fingerprint,
        Connection.token_generation: Connection.token_generation + 1,
        Connection.updated_at: now,
    }
    if set_expiry:
        updates[Connection.token_expires_at] = token_expires_at
    if refreshed:
        updates[Connection.last_refreshed_at] = now
        updates[Connection.refresh_started_at] = None
    changed = (
        Connection.update(updates)
        .where(
            (Connection.id == connection_id) & (Connection.token_generation == expected_generation)
        )
        .execute()
    )
    return bool(changed == 1)


# -- status expressions ---------------------------------------------------------------------
# SQL evaluates every SET expression against the row as it was before the UPDATE, so each of
# these sees the old value of the other flag.


# -- creating and reading -------------------------------------------------------------------


@dataclass(frozen=True)
class NewConnection:
    """Everything stored for a new connection (the blob sealed to `id` already)."""

    id: str
    user_id: str
    service: str
    auth_type: str
    key_storage_mode: str
    secret1_hash: str
    encrypted_tokens: str = field(repr=False)
    secret2_verifier: str | None = field(default=None, repr=False)
    key_fingerprint: str = ""
    label: str | None = None
    auth_mode: str | None = None
    application: str | None = None
    token_expires_at: datetime | None = None
    last_refreshed_at: datetime | None = None


def insert_connection(
    new: NewConnection,
    *,
    now: datetime,
    default_label: str | None = None,
    replace_id: str | None = None,
) -> Connection:
    """Insert a connection (and its `connection_created` event) in one transaction.

    `label` None takes `"{default_label} {n}"`, n = the owner's connections of that service + 1.
    `replace_id` deletes that connection of the same owner in the same transaction (re-auth)
    and records `reauth/success` on the new one.

    Raises:
        NotFoundError: `replace_id` is not a connection of this user (nothing written).
        ConflictError: the secret1 hash or id collides (never in practice: 256 random bits).
    """
    if new.auth_type not in AUTH_TYPES or new.key_storage_mode not in KEY_STORAGE_MODES:
        raise ValueError("unknown auth type or key storage mode")
    if new.key_storage_mode == "managed" and not (new.secret2_verifier and new.key_fingerprint):
        raise ValueError("a managed connection needs a secret2 verifier and a key fingerprint")
    db = Connection._meta.database
    with db.atomic():
        if replace_id is not None:
            deleted = (
                Connection.delete()
                .where((Connection.id == replace_id) & (Connection.user == new.user_id))
                .execute()
            )
            if deleted != 1:
                raise NotFoundError("the connection to replace does not exist")
        label = new.label
        if label is None and default_label:
            count = count_for_service(new.user_id, new.service)
            label = f"{default_label} {count + 1}"
        try:
            row = Connection.create(
                id=new.id,
                user=new.user_id,
                service=new.service,
                label=label,
                status="active",
                auth_type=new.auth_type,
                auth_mode=new.auth_mode,
                application=new.application,
                key_storage_mode=new.key_storage_mode,
                secret1_hash=new.secret1_hash,
                secret2_verifier=new.secret2_verifier,
                encrypted_tokens=new.encrypted_tokens,
                key_fingerprint=new.key_fingerprint,
                token_generation=0,
                token_expires_at=new.token_expires_at,
                last_refreshed_at=new.last_refreshed_at,
                created_at=now,
                updated_at=now,
            )
        except peewee.IntegrityError:
            raise ConflictError("connection id or credential collision; retry") from None
        record_event(
            new.id,
            user_id=new.user_id,
            event_type="connection_created",
            category=new.auth_type,
            detail=f"service:{new.service}, mode:{new.key_storage_mode}",
            now=now,
        )
        if replace_id is not None:
            record_event(
                new.id,
                user_id=new.user_id,
                event_type="reauth",
                category="success",
                detail=f"Replaced connection {replace_id}",
                now=now,
            )
        return row


def get_connection(connection_id: str, user_id: str | None = None) -> Connection | None:
    """The row by id (only if owned by `user_id`, when given)."""
    where = Connection.id == connection_id
    if user_id is not None:
        where &= Connection.user == user_id
    return Connection.get_or_none(where)


def list_for_user(user_id: str, *, service: str | None = None) -> list[Connection]:
    """A user's connections, oldest first."""
    where = Connection.user == user_id
    if service is not None:
        where &= Connection.service == service
    return list(Connection.select().where(where).order_by(Connection.created_at, Connection.id))


def count_for_service(user_id: str, service: str) -> int:
    return int(
        Connection.select()
        .where((Connection.user == user_id) & (Connection.service == service))
        .count()
    )


def count_using_service(service: str) -> int:
    """Every member's connections to `service` (the admin's "this many need reconnecting")."""
    return int(Connection.select().where(Connection.service == service).count())


def set_label(connection_id: str, label: str, now: datetime) -> bool:
    """Store an already-validated label; True if the connection exists."""
    changed = (
        Connection.update({Connection.label: label, Connection.updated_at: now})
        .where(Connection.id == connection_id)
        .execute()
    )
    return bool(changed)


def set_policy(connection_id: str, policy_json: str | None, now: datetime) -> bool:
    """Store an already-validated tool policy (None clears it); True if the connection exists."""
    changed = (
        Connection.update({Connection.policy_json: policy_json, Connection.updated_at: now})
        .where(Connection.id == connection_id)
        .execute()
    )
    return bool(changed)


def replace_credentials(
    connection_id: str,
    *,
    expected_generation: int,
    secret1_hash: str,
    secret2_verifier: str | None,
    encrypted_tokens: str,
    key_fingerprint: str,
    now: datetime,
) -> bool:
    """Give the connection new credentials (rotate-url); True when this write won the CAS.

    The old secret1 hash is gone when this commits, so the old URL and key stop resolving (the
    proxy's memo forgets within a second), and the connection's OAuth grants are deleted.
    """
    db = Connection._meta.database
    with db.atomic():
        changed = (
            Connection.update(
                {
                    Connection.secret1_hash: secret1_hash,
                    Connection.secret2_verifier: secret2_verifier,
                    Connection.encrypted_tokens: encrypted_tokens,
                    Connection.key_fingerprint: key_fingerprint,
                    Connection.token_generation: Connection.token_generation + 1,
                    Connection.updated_at: now,
                }
            )
            .where(
                (Connection.id == connection_id)
                & (Connection.token_generation == expected_generation)
            )
            .execute()
        )
        if changed == 1:
            state_event(connection_id, "url_rotated", now)
            # MCP clients' grants held the old URL's opener: they end with it (DESIGN §10).
            OAuthGrant.delete().where(OAuthGrant.connection == connection_id).execute()
    if changed == 1:
        grants_ended()
    return bool(changed == 1)


def delete_connection(connection_id: str, user_id: str | None = None) -> bool:
    """Delete the connection (its events cascade); True if a row went."""
    where = Connection.id == connection_id
    if user_id is not None:
        where &= Connection.user == user_id
    deleted = bool(Connection.delete().where(where).execute())
    if deleted:
        grants_ended()  # its OAuth grants went by cascade
    return deleted


# -- use stamps -----------------------------------------------------------------------------


def mark_used(connection_id: str, now: datetime) -> bool:
    """Stamp `last_used_at = now` unless it was stamped within the last minute; True if written."""
    cutoff = now - USE_STAMP_INTERVAL
    changed = (
        Connection.update({Connection.last_used_at: now})
        .where(
            (Connection.id == connection_id)
            & (Connection.last_used_at.is_null() | (Connection.last_used_at <= cutoff))
        )
        .execute()
    )
    return bool(changed)


def note_proxy_use(
    connection_id: str,
    *,
    user_id: str,
    category: str,
    detail: str,
    upstream_status: int | None,
    now: datetime,
) -> None:
    """After a relayed request: `mark_used` and a (deduplicated) `proxy_request` event.

    A connection deleted meanwhile is skipped quietly (the event would violate its foreign key).
    """
    db = Connection._meta.database
    with db.atomic():
        if not Connection.select().where(Connection.id == connection_id).exists():
            return
        mark_used(connection_id, now)
        record_event(
            connection_id,
            user_id=user_id,
            event_type="proxy_request",
            category=category,
            detail=detail[:200],
            upstream_status=upstream_status,
            now=now,
        )
