"""Connection rows: creation, lookup, status, use stamps, and the compare-and-swap token write.

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

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import peewee

from bindify_appliance.errors import ConflictError, HTTPFacingError, NotFoundError
from bindify_appliance.store.compiled import compiled_sql, converted
from bindify_appliance.store.db import run_sql
from bindify_appliance.store.events import record_event
from bindify_appliance.store.models import (
    AUTH_TYPES,
    DISABLED_BY,
    KEY_STORAGE_MODES,
    Connection,
    User,
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
# The needs-reconnect reason when a service's endpoints changed (DESIGN §9). Only the member's
# reconnect clears it: a token refresh that commits afterwards keeps it (store/refresh.py).
SERVICE_MOVED_REASON: Final = "the service's address changed"
ADMIN_DISABLED_MESSAGE: Final = (
    "This connection was disabled by an administrator; only an administrator can re-enable it."
)


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


def _status_if_not_disabled(otherwise: str) -> Any:
    return peewee.Case(None, [(Connection.disabled_at.is_null(False), "disabled")], otherwise)


def _status_if_enabled() -> Any:
    return peewee.Case(
        None, [(Connection.needs_reconnect_at.is_null(False), "needs_reconnect")], "active"
    )


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


@dataclass(frozen=True)
class ConnectionAuth:
    """What the proxy needs to authorise one request: the row joined with its owner's state.

    Immutable, so the resolver can keep it in its short memo; holds no plaintext secret.
    """

    id: str
    user_id: str
    service: str
    status: str
    auth_type: str
    auth_mode: str | None
    application: str | None
    key_storage_mode: str
    secret2_verifier: str | None = field(repr=False)
    encrypted_tokens: str | None = field(repr=False)
    key_fingerprint: str
    token_generation: int
    token_expires_at: datetime | None
    needs_reconnect_at: datetime | None
    needs_reconnect_reason: str | None
    disabled_at: datetime | None
    user_disabled: bool
    policy_json: str | None = None  # the member's tool policy (proxy/policy.py), NULL = none

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None or self.user_disabled or self.status == "disabled"

    @property
    def needs_reconnect(self) -> bool:
        return self.needs_reconnect_at is not None or self.status == "needs_reconnect"


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


# The proxy reads this row on every resolution-memo miss (a request after a quiet second): its
# SQL is compiled once per dialect (store/compiled.py) and run directly.
_AUTH_FIELDS: Final[tuple[peewee.Field, ...]] = (
    Connection.id,
    Connection.user,
    Connection.service,
    Connection.status,
    Connection.auth_type,
    Connection.auth_mode,
    Connection.application,
    Connection.key_storage_mode,
    Connection.secret2_verifier,
    Connection.encrypted_tokens,
    Connection.key_fingerprint,
    Connection.token_generation,
    Connection.token_expires_at,
    Connection.needs_reconnect_at,
    Connection.needs_reconnect_reason,
    Connection.disabled_at,
    User.disabled_at,
    Connection.policy_json,
)


def get_auth_by_secret1_hash(secret1_hash: str) -> ConnectionAuth | None:
    """The connection whose secret1 hashes to `secret1_hash`, with its owner's disabled state.

    One indexed query (unique secret1_hash, joined to the user's primary key).
    """
    db = Connection._meta.database
    sql = compiled_sql(
        "connection_auth",
        db,
        lambda: (
            Connection.select(*_AUTH_FIELDS)
            .join(User, on=(Connection.user == User.id))
            .where(Connection.secret1_hash == "")
        ),
    )
    raw = run_sql(db, sql, (secret1_hash,)).fetchone()
    if raw is None:
        return None
    values = converted(_AUTH_FIELDS, raw)
    (
        id_,
        user_id,
        service,
        status,
        auth_type,
        auth_mode,
        application,
        key_storage_mode,
        secret2_verifier,
        encrypted_tokens,
        key_fingerprint,
        token_generation,
        token_expires_at,
        needs_reconnect_at,
        needs_reconnect_reason,
        disabled_at,
        user_disabled_at,
        policy_json,
    ) = values
    return ConnectionAuth(
        id=id_,
        user_id=user_id,
        service=service,
        status=status,
        auth_type=auth_type,
        auth_mode=auth_mode,
        application=application,
        key_storage_mode=key_storage_mode,
        secret2_verifier=secret2_verifier,
        encrypted_tokens=encrypted_tokens,
        key_fingerprint=key_fingerprint,
        token_generation=token_generation,
        token_expires_at=token_expires_at,
        needs_reconnect_at=needs_reconnect_at,
        needs_reconnect_reason=needs_reconnect_reason,
        disabled_at=disabled_at,
        user_disabled=user_disabled_at is not None,
        policy_json=policy_json,
    )


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


# -- state changes --------------------------------------------------------------------------


def _state_event(row_id: str, category: str, now: datetime, detail: str | None = None) -> None:
    owner = Connection.select(Connection.user).where(Connection.id == row_id).first()
    record_event(
        row_id,
        user_id=owner.user_id if owner else None,
        event_type="connection",
        category=category,
        detail=detail,
        now=now,
    )


def set_needs_reconnect(connection_id: str, reason: str, now: datetime) -> bool:
    """Flag the connection for reconnecting (keeps `disabled` if it is); True if it exists.

    `reason` is our own short text ("upstream rejected the key"), shown to the member.
    """
    db = Connection._meta.database
    with db.atomic():
        # Many in-flight requests can fail together: only the first flag makes an event.
        already = (
            Connection.select()
            .where((Connection.id == connection_id) & Connection.needs_reconnect_at.is_null(False))
            .exists()
        )
        changed = (
            Connection.update(
                {
                    Connection.needs_reconnect_at: now,
                    Connection.needs_reconnect_reason: reason[:200],
                    Connection.status: _status_if_not_disabled("needs_reconnect"),
                    Connection.updated_at: now,
                }
            )
            .where(Connection.id == connection_id)
            .execute()
        )
        if changed and not already:
            _state_event(connection_id, "needs_reconnect", now, reason[:200])
    return bool(changed)


def flag_service_moved(service_id: str, auth_types: Iterable[str], now: datetime) -> int:
    """Flag every connection of `service_id` with one of `auth_types` for reconnecting.

    Call inside the transaction that changes where the service's credentials go, so no
    instance ever reads the new address beside a connection that is still active. Each flagged
    connection gets a `connection/needs_reconnect` event with `SERVICE_MOVED_REASON`, also one
    already flagged for another reason (the reason is replaced). Returns how many were flagged.
    """
    kinds = sorted(set(auth_types))
    if not kinds:
        return 0
    db = Connection._meta.database
    with db.atomic():
        targets = list(
            Connection.select(Connection.id, Connection.user)
            .where((Connection.service == service_id) & Connection.auth_type.in_(kinds))
            .order_by(Connection.id)
        )
        if not targets:
            return 0
        (
            Connection.update(
                {
                    Connection.needs_reconnect_at: now,
                    Connection.needs_reconnect_reason: SERVICE_MOVED_REASON,
                    Connection.status: _status_if_not_disabled("needs_reconnect"),
                    Connection.updated_at: now,
                }
            )
            .where(Connection.id.in_([t.id for t in targets]))
            .execute()
        )
        for target in targets:
            record_event(
                target.id,
                user_id=target.user_id,
                event_type="connection",
                category="needs_reconnect",
                detail=SERVICE_MOVED_REASON,
                now=now,
            )
    return len(targets)


def clear_needs_reconnect(connection_id: str, now: datetime) -> bool:
    """Clear the reconnect flag (after a successful refresh or a new key); True if it was set."""
    changed = (
        Connection.update(
            {
                Connection.needs_reconnect_at: None,
                Connection.needs_reconnect_reason: None,
                Connection.status: _status_if_not_disabled("active"),
                Connection.updated_at: now,
            }
        )
        .where((Connection.id == connection_id) & Connection.needs_reconnect_at.is_null(False))
        .execute()
    )
    return bool(changed)


def set_disabled(
    connection_id: str,
    disabled: bool,
    now: datetime,
    *,
    actor_id: str | None = None,
    actor_role: str = "owner",
) -> bool:
    """Disable or re-enable a connection; True if that changed anything.

    `actor_role` is `admin` (an administrator acting on it) or `owner`; a disable remembers
    it, and the owner cannot undo an administrator's disable: `HTTPFacingError` 403
    `forbidden`, nothing
    changed (checked in the UPDATE itself, so a concurrent admin disable cannot slip by).
    The `connection/disabled|enabled` event names the actor ("by admin {id}").
    """
    if actor_role not in DISABLED_BY:
        raise ValueError("actor_role must be 'admin' or 'owner'")
    db = Connection._meta.database
    with db.atomic():
        if disabled:
            updates = {
                Connection.disabled_at: now,
                Connection.disabled_by: actor_role,
                Connection.status: "disabled",
                Connection.updated_at: now,
            }
            where = Connection.disabled_at.is_null()
        else:
            updates = {
                Connection.disabled_at: None,
                Connection.disabled_by: None,
                Connection.status: _status_if_enabled(),
                Connection.updated_at: now,
            }
            where = Connection.disabled_at.is_null(False)
            if actor_role != "admin":
                where &= Connection.disabled_by.is_null() | (Connection.disabled_by != "admin")
        changed = (
            Connection.update(updates).where((Connection.id == connection_id) & where).execute()
        )
        if not changed and not disabled and actor_role != "admin":
            admin_disabled = (
                Connection.select()
                .where((Connection.id == connection_id) & (Connection.disabled_by == "admin"))
                .exists()
            )
            if admin_disabled:
                raise HTTPFacingError(ADMIN_DISABLED_MESSAGE, status=403, code="forbidden")
        if changed:
            detail = f"by {actor_role} {actor_id}" if actor_id else None
            _state_event(connection_id, "disabled" if disabled else "enabled", now, detail)
    return bool(changed)


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
    proxy's memo forgets within a second).
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
            _state_event(connection_id, "url_rotated", now)
    return bool(changed == 1)


def delete_connection(connection_id: str, user_id: str | None = None) -> bool:
    """Delete the connection (its events cascade); True if a row went."""
    where = Connection.id == connection_id
    if user_id is not None:
        where &= Connection.user == user_id
    return bool(Connection.delete().where(where).execute())


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
