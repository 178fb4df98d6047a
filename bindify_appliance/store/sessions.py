"""Browser sessions and personal API tokens: units of work for `Store.run`.

Both are bearer secrets that only ever reach this module as SHA-256 hashes.

Invariants:
- A session or token authenticates only while its user exists and is not disabled, checked on
  every request in the same query that finds the row: disabling a user ends access at once.
- A revoked token (`revoked_at` set) never authenticates again; revocation is one UPDATE, so it
  takes effect on the very next request on every instance.
- `last_seen_at` / `last_used_at` are refreshed at most once per `touch_every`, so reading a
  principal costs a write only occasionally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bindify_appliance.errors import ConflictError
from bindify_appliance.store.models import PersonalToken, Session, User, database_proxy
from bindify_appliance.store.paging import keyset_after

__all__ = [
    "Principal",
    "TokenRecord",
    "delete_session",
    "insert_session",
    "insert_token",
    "list_tokens",
    "list_user_sessions",
    "revoke_token",
    "session_principal",
    "token_principal",
]


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the user and how they authenticated."""

    user_id: str
    email: str
    role: str
    auth: str  # "session" | "token"
    credential_id: str  # the session id (hash) or the personal token's id
    # False for an account without a local password (provisioned by single sign-on): the
    # page navigation then offers no "Password". Read from the row the session lookup loads.
    has_password: bool = True

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None


# -- sessions -------------------------------------------------------------------------------


def insert_session(
    session_hash: str,
    user_id: str,
    now: datetime,
    expires_at: datetime,
    ip: str | None,
    user_agent: str | None,
    replaces: str | None,
) -> None:
    """Record a new session; the one it `replaces` (the pre-login cookie) is deleted.

    Raises:
        ConflictError: the user vanished or is disabled meanwhile.
    """
    with database_proxy.atomic():
        if replaces:
            Session.delete().where(Session.id == replaces).execute()
        user = User.get_or_none(User.id == user_id)
        if user is None or user.disabled_at is not None:
            raise ConflictError("the account is not available")
        Session.create(
            id=session_hash,
            user=user_id,
            created_at=now,
            expires_at=expires_at,
            last_seen_at=now,
            ip=ip,
            user_agent=(user_agent or "")[:256] or None,
        )


def session_principal(
    session_hash: str, now: datetime, idle: timedelta, touch_every: timedelta
) -> Principal | None:
    """The principal of a live session, or None (unknown, expired, idle too long, disabled)."""
    row = (
        Session.select(Session, User)
        .join(User)
        .where((Session.id == session_hash) & User.disabled_at.is_null())
        .first()
    )
    if row is None:
        return None
    if row.expires_at <= now or row.last_seen_at + idle <= now:
        Session.delete().where(Session.id == session_hash).execute()
        return None
    if row.last_seen_at + touch_every <= now:
        Session.update(last_seen_at=now).where(Session.id == session_hash).execute()
    user = row.user
    return Principal(
        user_id=str(user.id),
        email=user.email,
        role=user.role,
        auth="session",
        credential_id=session_hash,
        has_password=user.password_hash is not None,
    )


def delete_session(session_hash: str) -> bool:
    return bool(Session.delete().where(Session.id == session_hash).execute())


def list_user_sessions(user_id: str, now: datetime) -> list[Session]:
    """The user's unexpired sessions, most recently seen first."""
    return list(
        Session.select()
        .where((Session.user == user_id) & (Session.expires_at > now))
        .order_by(Session.last_seen_at.desc(), Session.id)
    )


# -- personal tokens ------------------------------------------------------------------------


def token_principal(token_hash: str, now: datetime, touch_every: timedelta) -> Principal | None:
    row = (
        PersonalToken.select(PersonalToken, User)
        .join(User)
        .where(
            (PersonalToken.token_hash == token_hash)
            & PersonalToken.revoked_at.is_null()
            & User.disabled_at.is_null()
        )
        .first()
    )
    if row is None:
        return None
    if row.last_used_at is None or row.last_used_at + touch_every <= now:
        PersonalToken.update(last_used_at=now).where(PersonalToken.id == row.id).execute()
    user = row.user
    return Principal(
        user_id=str(user.id), email=user.email, role=user.role, auth="token", credential_id=row.id
    )


def list_tokens(user_id: str, after: Sequence[str] | None, limit: int) -> list[TokenRecord]:
    query = (
        PersonalToken.select()
        .where((PersonalToken.user == user_id) & PersonalToken.revoked_at.is_null())
        .order_by(PersonalToken.created_at, PersonalToken.id)
        .limit(limit)
    )
    if after:
        query = query.where(keyset_after((PersonalToken.created_at, PersonalToken.id), after))
    return [
        TokenRecord(
            id=row.id, name=row.name, created_at=row.created_at, last_used_at=row.last_used_at
        )
        for row in query
    ]


def insert_token(
    user_id: str, name: str, token_hash: str, now: datetime, max_active: int
) -> TokenRecord:
    """Create a personal token for an enabled user.

    Raises:
        ConflictError: the user already holds `max_active` tokens, or is gone or disabled.
    """
    with database_proxy.atomic():
        user = User.get_or_none(User.id == user_id)
        if user is None or user.disabled_at is not None:
            raise ConflictError("the account is not available")
        active = (
            PersonalToken.select()
            .where((PersonalToken.user == user_id) & PersonalToken.revoked_at.is_null())
            .count()
        )
        if active >= max_active:
            raise ConflictError(f"at most {max_active} active tokens per user; revoke one first")
        row = PersonalToken.create(user=user_id, name=name, token_hash=token_hash, created_at=now)
    return TokenRecord(id=row.id, name=row.name, created_at=now, last_used_at=None)


def revoke_token(user_id: str, token_id: str, now: datetime) -> bool:
    """Revoke one of the user's own tokens; False when no such live token is theirs."""
    changed = (
        PersonalToken.update(revoked_at=now)
        .where(
            (PersonalToken.id == token_id)
            & (PersonalToken.user == user_id)
            & PersonalToken.revoked_at.is_null()
        )
        .execute()
    )
    return bool(changed)
