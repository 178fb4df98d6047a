"""Connection rows: creation, lookup, status, and the compare-and-swap token write.

Every function here is a synchronous unit of work for `Store.run`/`Store.call`.

Invariant (DESIGN §8): token blobs change only through `swap_tokens`, which succeeds only when
the row's `token_generation` still equals what the writer read, and bumps it. A refresh and a
key rotation racing on one row therefore never overwrite each other: the loser sees False,
re-reads and decides again.
"""

from __future__ import annotations

from datetime import datetime

from bindify_appliance.store.models import Connection

__all__ = ["swap_tokens"]


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
