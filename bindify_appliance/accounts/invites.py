"""Invite acceptance: a one-time link (7 days) lets an invited user choose a password.

Invites are created together with the invited user (`accounts.users.create_user` without a
password). Accepting one sets the password, marks every invite of that address used, and signs
the user in; a used, expired or unknown link — or one whose user was deleted or disabled —
is simply not found.
"""

from __future__ import annotations

from bindify_appliance.accounts.passwords import check_password_policy, hash_password_async
from bindify_appliance.accounts.tokens import hash_token
from bindify_appliance.clock import Clock
from bindify_appliance.errors import NotFoundError
from bindify_appliance.store import Store
from bindify_appliance.store import accounts as accounts_store

__all__ = ["accept_invite", "invite_email"]

_MAX_TOKEN_LENGTH = 64


async def invite_email(store: Store, clock: Clock, token: str) -> str | None:
    """The invited address when the link is valid, else None."""
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        return None
    return await store.run(accounts_store.invite_email, hash_token(token), clock.now())


async def accept_invite(store: Store, clock: Clock, token: str, password: str) -> str:
    """Set the invited user's password; returns their id.

    Raises:
        HTTPFacingError: the password breaks the policy (400, field "password"); link kept.
        NotFoundError: the link is not valid.
    """
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        raise NotFoundError("invite link is invalid or used")
    check_password_policy(password)
    password_hash = await hash_password_async(password)
    return await store.run(
        accounts_store.accept_invite, hash_token(token), password_hash, clock.now()
    )
