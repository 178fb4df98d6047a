"""The proxy's read model of a connection: `ConnectionAuth` and the two queries that load it.

Every function here is a synchronous unit of work for `Store.run`. The row is the connection
joined with its owner's state; it holds no plaintext secret (secret2's verifier and the sealed
blob only), so the resolver may memoise it briefly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import peewee

from bindify_appliance.store.compiled import compiled_sql, converted
from bindify_appliance.store.db import run_sql
from bindify_appliance.store.models import Connection, User

__all__ = ["ConnectionAuth", "get_auth_by_id", "get_auth_by_secret1_hash"]


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
    billing_suspended: bool = False  # suspended by billing (DESIGN §11)
    # The owner's entitlement end in epoch seconds (a float compares in nanoseconds on the
    # proxy path); None = not billed.
    billing_until: float | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None or self.user_disabled or self.status == "disabled"

    @property
    def needs_reconnect(self) -> bool:
        return self.needs_reconnect_at is not None or self.status == "needs_reconnect"

    def billing_refused(self, now: float) -> bool:
        """Billing's answer at `now` (epoch seconds; asked only when billing is on): suspended,
        or past the owner's entitlement."""
        return self.billing_suspended or (
            self.billing_until is not None and now >= self.billing_until
        )


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
    Connection.billing_suspended_at,
    User.billing_until,
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
    return _auth_from(converted(_AUTH_FIELDS, raw))


def _auth_from(values: Sequence[Any]) -> ConnectionAuth:
    """One `_AUTH_FIELDS` row as a `ConnectionAuth` (the owner's timestamps become flags and
    epoch seconds, as the proxy path compares them)."""
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
        billing_suspended_at,
        billing_until,
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
        billing_suspended=billing_suspended_at is not None,
        billing_until=billing_until.timestamp() if billing_until is not None else None,
    )


def get_auth_by_id(connection_id: str) -> ConnectionAuth | None:
    """The connection `connection_id` with its owner's disabled state (for OAuth grants,
    which name their connection instead of presenting its credentials)."""
    raw = (
        Connection.select(*_AUTH_FIELDS)
        .join(User, on=(Connection.user == User.id))
        .where(Connection.id == connection_id)
        .tuples()
        .first()
    )
    if raw is None:
        return None
    return _auth_from(raw)
