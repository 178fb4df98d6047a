"""First-run setup: the one-time URL that lets the first administrator in.

While no administrator exists, every start issues a fresh token (30 minutes, single use, only
its hash stored) and the server prints `{base_url}/setup?token=…` straight to stderr.
`bindify admin reset-setup` issues one on demand (it creates an additional admin; it deletes
nothing).

Completing setup (`complete_setup`) consumes the token, creates the administrator (the first one
also takes the installer lock) and retires every other outstanding setup token, all in one
transaction; the setup page answers 404 for any token that is not currently valid.
"""

from __future__ import annotations

from datetime import timedelta

from bindify_appliance.accounts.passwords import check_password_policy, hash_password_async
from bindify_appliance.accounts.tokens import hash_token, new_token
from bindify_appliance.accounts.users import normalize_email
from bindify_appliance.clock import Clock
from bindify_appliance.config import Settings
from bindify_appliance.errors import NotFoundError
from bindify_appliance.store import Store, users
from bindify_appliance.store import accounts as accounts_store

__all__ = [
    "SETUP_TOKEN_TTL",
    "complete_setup",
    "issue_setup_token",
    "issue_setup_token_if_needed",
    "setup_token_valid",
]

_MAX_TOKEN_LENGTH = 64

SETUP_TOKEN_TTL = timedelta(minutes=30)


def issue_setup_token(settings: Settings, clock: Clock) -> str:
    """Create a setup token and return the setup URL (unit of work)."""
    token = new_token()
    users.create_setup_token(hash_token(token), clock.now(), SETUP_TOKEN_TTL)
    return f"{settings.base_url}/setup?token={token}"


def issue_setup_token_if_needed(settings: Settings, clock: Clock) -> str | None:
    """The setup URL when no active administrator exists, else None (unit of work)."""
    if users.active_admin_count() > 0:
        return None
    return issue_setup_token(settings, clock)


async def setup_token_valid(store: Store, clock: Clock, token: str) -> bool:
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        return False
    return await store.run(users.setup_token_valid, hash_token(token), clock.now())


async def complete_setup(store: Store, clock: Clock, token: str, email: str, password: str) -> str:
    """Create an administrator with a valid setup token; returns the new user's id.

    Raises:
        HTTPFacingError: invalid email or password (400, with `field`); nothing consumed.
        NotFoundError: the token is not valid (unknown, used, expired).
        ConflictError: the email is taken; the token stays usable.
    """
    address = normalize_email(email)
    check_password_policy(password)
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        raise NotFoundError("setup link is invalid or used")
    password_hash = await hash_password_async(password)
    return await store.run(
        accounts_store.complete_setup, hash_token(token), address, password_hash, clock.now()
    )
