"""Reconnecting a connection in place: a new upstream credential, the same id, URL and key.

`POST /api/v1/connections/{id}/reconnect` and the `/connections/{id}/reconnect` page end here
(DESIGN §15). Unlike `replace` (a new connection), the row keeps its id, its secret1 hash and
secret2 verifier — so every client's secret URL and `bnd_` key keep working — and its events;
only the sealed upstream credential changes, with a `connection/reconnected` event and a
`connection.reconnect` audit entry (every path — API, page, OAuth callback — ends here).

- `check_current(row, current, keyring)` — who may reconnect: a zero-knowledge connection must
  present its current credentials (only secret2 can seal the new credential so that the URL
  still opens it), checked against the row's hash and by opening the stored blob; a managed one
  need not, but credentials it is given must be its own.
- `reconnect_in_place(...)` — seals the new payload for the row (zero-knowledge: under the
  presented secret2; managed: the active master key) and writes it with
  `store.refresh.commit_reconnect`, the compare-and-swap on the token generation that refresh
  and key rotation use, so a concurrent refresh never overwrites the new tokens; a lost swap is
  re-read and retried.

Invariants: every refusal is an `HTTPFacingError` raised before anything is written; no message
carries a credential.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from bindify_appliance import audit
from bindify_appliance.connections.secrets import (
    check_payload,
    credentials_match,
    open_payload,
    seal_payload,
)
from bindify_appliance.context import AppContext
from bindify_appliance.crypto.credentials import Credentials
from bindify_appliance.crypto.keyring import Keyring
from bindify_appliance.errors import (
    Conflict,
    DecryptError,
    InvalidRequest,
    KeyringError,
    NotFound,
)
from bindify_appliance.store import connections as rows
from bindify_appliance.store.models import Connection
from bindify_appliance.store.refresh import commit_reconnect

__all__ = ["ZK_NEEDS_CREDENTIALS", "check_current", "reconnect_in_place"]

_ATTEMPTS: Final = 5
ZK_NEEDS_CREDENTIALS: Final = (
    "zero-knowledge connections must send their current credentials "
    '({"credentials": "…"} or {"api_key": "bnd_…"}) to reconnect: only they can lock the new '
    "credential so that the same URL opens it"
)


def check_current(row: Connection, current: Credentials | None, keyring: Keyring) -> None:
    """Refuse a reconnect the caller cannot make (see the module docstring)."""
    if current is None:
        if row.key_storage_mode == "zero_knowledge":
            raise Conflict(ZK_NEEDS_CREDENTIALS)
        return
    if not credentials_match(row, current):
        raise InvalidRequest(
            "these credentials do not belong to this connection", field="credentials"
        )
    if row.key_storage_mode == "zero_knowledge":
        try:
            open_payload(row, current, keyring)
        except (DecryptError, KeyringError):
            raise InvalidRequest(
                "these credentials do not unlock this connection", field="credentials"
            ) from None


def _expiry(payload: Mapping[str, Any]) -> datetime | None:
    expires = payload.get("expires_at")
    if expires is None:
        return None
    try:
        return datetime.fromtimestamp(float(expires), UTC)
    except (OverflowError, OSError, ValueError):
        return None


async def reconnect_in_place(
    ctx: AppContext,
    connection_id: str,
    *,
    user_id: str,
    payload: Mapping[str, Any],
    current: Credentials | None,
    auth_mode: str | None = None,
    application: str | None = None,
) -> Connection:
    """Store `payload` as the connection's new upstream credential; the updated row.

    Raises HTTPFacingError: 404 not the caller's; 409 zero-knowledge without credentials or the
    row kept changing; 400 credentials not this connection's or a bad payload.
    """
    keyring = ctx.keys.keyring
    for _attempt in range(_ATTEMPTS):
        row = await ctx.store.run(rows.get_connection, connection_id, user_id)
        if row is None:
            raise NotFound("connection not found")
        check_current(row, current, keyring)
        clean = check_payload(row.auth_type, payload)
        blob, fingerprint = seal_payload(
            row.id,
            row.key_storage_mode,
            clean,
            creds=current if row.key_storage_mode == "zero_knowledge" else None,
            keyring=keyring,
        )
        oauth = row.auth_type == "oauth"
        write = functools.partial(
            commit_reconnect,
            row.id,
            expected_generation=row.token_generation,
            encrypted_tokens=blob,
            key_fingerprint=fingerprint,
            token_expires_at=_expiry(clean) if oauth else None,
            # A managed OAuth connection was just issued its tokens: no immediate refresh.
            refreshed=oauth and row.key_storage_mode == "managed",
            auth_mode=auth_mode if row.auth_type == "api_key" else row.auth_mode,
            application=application if row.auth_type == "api_key" else row.application,
            now=ctx.clock.now(),
        )
        if await ctx.store.run(write):
            fresh = await ctx.store.run(rows.get_connection, connection_id, None)
            await audit.record(
                ctx,
                audit.user(user_id),
                "connection.reconnect",
                audit.Target("connection", row.id),
                detail={"auth_type": row.auth_type, "mode": row.key_storage_mode},
            )
            return fresh or row
        # A refresh or a key rotation wrote first: re-read and seal again for the new row.
    raise Conflict("the connection changed while reconnecting; try again")
