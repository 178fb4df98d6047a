"""User, setup-token and personal-token rows: units of work for `Store.run`/`Store.call`.

Invariants:
- Only hashes of tokens are stored (`accounts.tokens.hash_token`).
- The first administrator and the installer lock (`setup_state`, id 1) are written in one
  transaction, so two concurrent setups cannot both succeed, on SQLite or PostgreSQL.
- A setup token is consumed by a conditional UPDATE (used_at IS NULL and not expired), so it
  works exactly once even when two requests race.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import peewee

from bindify_appliance.errors import ConflictError, NotFoundError
from bindify_appliance.store.models import (
    SETUP_STATE_ID,
    PersonalToken,
    Session,
    SetupState,
    SetupToken,
    User,
    database_proxy,
)

__all__ = [
    "active_admin_count",
    "consume_setup_token",
    "create_personal_token",
    "create_setup_token",
    "create_user",
    "find_user",
    "setup_completed",
    "update_password",
]


def find_user(email: str) -> User | None:
    return User.get_or_none(User.email == email.strip())


def active_admin_count() -> int:
    return int(User.select().where((User.role == "admin") & User.disabled_at.is_null()).count())


def setup_completed() -> bool:
    return SetupState.get_or_none(SetupState.id == SETUP_STATE_ID) is not None


def create_user(email: str, password_hash: str | None, role: str, now: datetime) -> User:
    """Insert a user; the first admin also takes the installer lock in the same transaction.

    Raises:
        ConflictError: the email is taken (or a concurrent setup won the lock).
    """
    with database_proxy.atomic():
        try:
            user = User.create(
                email=email.strip().lower(),
                password_hash=password_hash,
                role=role,
                created_at=now,
                updated_at=now,
            )
        except peewee.IntegrityError:
            raise ConflictError("a user with that email already exists") from None
        if role == "admin" and not setup_completed():
            try:
                SetupState.create(id=SETUP_STATE_ID, completed_at=now, admin=user.id)
            except peewee.IntegrityError:
                raise ConflictError("setup was completed by someone else") from None
    return user


def update_password(
    email: str, password_hash: str, now: datetime, *, end_tokens: bool = False
) -> User:
    """Set a new password, clear the lockout and end every session of the user.

    With `end_tokens` (an administrator's reset, DESIGN §3) the user's personal tokens are
    revoked in the same transaction: a token taken along with the old password dies with it.
    A user changing their own password keeps their tokens.
    """
    with database_proxy.atomic():
        user = find_user(email)
        if user is None:
            raise NotFoundError("no user with that email")
        User.update(
            password_hash=password_hash, failed_logins=0, locked_until=None, updated_at=now
        ).where(User.id == user.id).execute()
        Session.delete().where(Session.user == user.id).execute()
        if end_tokens:
            PersonalToken.update(revoked_at=now).where(
                (PersonalToken.user == user.id) & PersonalToken.revoked_at.is_null()
            ).execute()
    return user


def create_setup_token(token_hash: str, now: datetime, ttl: timedelta) -> None:
    SetupToken.create(token_hash=token_hash, created_at=now, expires_at=now + ttl)


def consume_setup_token(token_hash: str, now: datetime) -> bool:
    """Mark the token used if it is valid; True exactly once per token."""
    changed = (
        SetupToken.update(used_at=now)
        .where(
            (SetupToken.token_hash == token_hash)
            & SetupToken.used_at.is_null()
            & (SetupToken.expires_at > now)
        )
        .execute()
    )
    return bool(changed == 1)


def setup_token_valid(token_hash: str, now: datetime) -> bool:
    return (
        SetupToken.select()
        .where(
            (SetupToken.token_hash == token_hash)
            & SetupToken.used_at.is_null()
            & (SetupToken.expires_at > now)
        )
        .exists()
    )


def create_personal_token(user_id: str, name: str, token_hash: str, now: datetime) -> str:
    token = PersonalToken.create(user=user_id, name=name, token_hash=token_hash, created_at=now)
    return str(token.id)
