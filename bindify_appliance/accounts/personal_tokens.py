"""Personal API tokens (`bndpat_…`): create (shown once), list, revoke, authenticate.

Only the SHA-256 of a token is stored. Revocation is a single UPDATE and every request looks the
token up again, so a revoked token fails on the very next request, on every instance.
`last_used_at` is kept to the minute (one write per minute at most per token).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from bindify_appliance.accounts.tokens import hash_token, is_personal_token, new_personal_token
from bindify_appliance.clock import Clock
from bindify_appliance.errors import InvalidRequest
from bindify_appliance.store import Store
from bindify_appliance.store import sessions as sessions_store
from bindify_appliance.store.sessions import Principal, TokenRecord

__all__ = [
    "MAX_ACTIVE_TOKENS",
    "authenticate_token",
    "create_token",
    "list_tokens",
    "revoke_token",
]

MAX_ACTIVE_TOKENS = 50
MAX_NAME_LENGTH = 100
_TOUCH_EVERY = timedelta(minutes=1)


async def authenticate_token(store: Store, clock: Clock, token: str) -> Principal | None:
    """The principal of a live personal token, or None (malformed, unknown, revoked, disabled)."""
    if not is_personal_token(token):
        return None
    return await store.run(
        sessions_store.token_principal, hash_token(token), clock.now(), _TOUCH_EVERY
    )


def check_name(name: str) -> str:
    value = name.strip()
    if not 1 <= len(value) <= MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be 1 to {MAX_NAME_LENGTH} characters", field="name")
    return value


async def create_token(
    store: Store, clock: Clock, user_id: str, name: str
) -> tuple[TokenRecord, str]:
    """A new token for `user_id`; the token text is returned once and never stored."""
    label = check_name(name)
    token = new_personal_token()
    record = await store.run(
        sessions_store.insert_token,
        user_id,
        label,
        hash_token(token),
        clock.now(),
        MAX_ACTIVE_TOKENS,
    )
    return record, token


async def list_tokens(
    store: Store, user_id: str, after: Sequence[str] | None, limit: int
) -> list[TokenRecord]:
    return await store.run(sessions_store.list_tokens, user_id, after, limit)


async def revoke_token(store: Store, clock: Clock, user_id: str, token_id: str) -> bool:
    """Revoke one of the caller's own tokens; False if they hold no such live token."""
    return await store.run(sessions_store.revoke_token, user_id, token_id, clock.now())
