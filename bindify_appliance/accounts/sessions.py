"""Browser sessions: a random token in a signed cookie, a server-side record keyed by its hash.

Policy:
- A session lasts at most `SESSION_LIFETIME` and ends after `SESSION_IDLE` without a request.
- Signing in always creates a new session id and deletes the one the browser held before
  (session fixation: an id planted before sign-in is worthless after it).
- Signing out, disabling the user and `admin reset-password` delete the server-side record, so
  the cookie stops working at once on every instance, whatever its signature says.
"""

from __future__ import annotations

from datetime import timedelta

from bindify_appliance.accounts.tokens import hash_token, new_token
from bindify_appliance.clock import Clock
from bindify_appliance.store import Store
from bindify_appliance.store import sessions as sessions_store
from bindify_appliance.store.sessions import Principal

__all__ = [
    "SESSION_COOKIE",
    "SESSION_IDLE",
    "SESSION_LIFETIME",
    "end_session",
    "resolve_session",
    "start_session",
]

SESSION_COOKIE = "bindify_session"  # logs.SCRUBBED_COOKIE_NAMES redacts it
SESSION_LIFETIME = timedelta(days=7)
SESSION_IDLE = timedelta(days=2)
_TOUCH_EVERY = timedelta(minutes=5)
_MAX_TOKEN_LENGTH = 64


async def start_session(
    store: Store,
    clock: Clock,
    user_id: str,
    *,
    ip: str | None,
    user_agent: str | None,
    replaces: str | None,
) -> str:
    """Record a new session for `user_id` and return its token (for the cookie).

    `replaces` is the session token the browser presented before signing in, if any.
    Raises ConflictError when the user is gone or disabled.
    """
    token = new_token()
    now = clock.now()
    old = hash_token(replaces) if replaces and len(replaces) <= _MAX_TOKEN_LENGTH else None
    await store.run(
        sessions_store.insert_session,
        hash_token(token),
        user_id,
        now,
        now + SESSION_LIFETIME,
        ip,
        user_agent,
        old,
    )
    return token


async def resolve_session(store: Store, clock: Clock, token: str | None) -> Principal | None:
    """The signed-in principal for a session token, or None."""
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        return None
    return await store.run(
        sessions_store.session_principal,
        hash_token(token),
        clock.now(),
        SESSION_IDLE,
        _TOUCH_EVERY,
    )


async def end_session(store: Store, token: str | None) -> None:
    if token and len(token) <= _MAX_TOKEN_LENGTH:
        await store.run(sessions_store.delete_session, hash_token(token))
