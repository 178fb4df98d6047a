"""Users as the admin API and sign-in see them: units of work for `Store.run`.

Covers listing and changing users (with the last-admin rule), first-run setup, invites,
the per-account lockout counters and single sign-on identities. Sessions and personal tokens
live in `store/sessions.py`.

Invariants:
- The last active administrator can never be demoted, disabled or deleted: each such change
  runs in one transaction that first locks the active administrators' rows (PostgreSQL
  `FOR UPDATE`; SQLite transactions are `BEGIN IMMEDIATE`, so writers are serialised anyway)
  and counts the others. Two concurrent demotions therefore cannot both succeed.
- Disabling a user deletes their sessions and revokes their personal tokens in the same
  transaction; `users.disabled_at` stays the one authoritative flag the proxy reads.
- Setup and invite tokens are consumed by conditional UPDATEs, so each works exactly once.
- Only hashes of tokens reach this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import peewee

from bindify_appliance.errors import ConflictError, LastAdminError, NotFoundError
from bindify_appliance.store import users as users_store
from bindify_appliance.store.models import (
    Invite,
    JobRun,
    OAuthGrant,
    OidcIdentity,
    PersonalToken,
    Session,
    SetupToken,
    User,
    database_proxy,
)
from bindify_appliance.store.paging import keyset_after

__all__ = [
    "JobRecord",
    "LoginState",
    "OidcIdentity",  # re-exported: the model lives in store/models.py with every other model
    "SignInMethods",
    "UserRecord",
    "accept_invite",
    "complete_setup",
    "create_invited_user",
    "create_user_with_password",
    "delete_user",
    "get_user",
    "invite_email",
    "list_jobs",
    "list_users",
    "login_state",
    "record_login_failure",
    "record_login_success",
    "resolve_oidc_identity",
    "sign_in_methods",
    "update_user",
]


@dataclass(frozen=True)
class UserRecord:
    """A user as the API shows it; never carries the password hash."""

    id: str
    email: str
    role: str
    status: str  # "active" | "invited" | "disabled"
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LoginState:
    user_id: str
    password_hash: str | None
    locked_until: datetime | None
    disabled: bool


@dataclass(frozen=True)
class SignInMethods:
    """How a user signs in: with a local password, and/or single sign-on through these issuers.

    A user provisioned by single sign-on has no local password (`users.password_hash` NULL) and
    at least one identity; the account page offers no password change to such a user.
    """

    has_password: bool
    sso_issuers: tuple[str, ...]


@dataclass(frozen=True)
class JobRecord:
    name: str
    last_started_at: datetime
    last_finished_at: datetime | None
    duration_ms: int | None
    outcome: str
    detail: str | None


# -- reading --------------------------------------------------------------------------------


def _records(rows: Sequence[User]) -> list[UserRecord]:
    ids = [row.id for row in rows]
    with_identity: set[str] = set()
    if ids:
        query = OidcIdentity.select(OidcIdentity.user).where(OidcIdentity.user.in_(ids)).tuples()
        with_identity = {str(row[0]) for row in cast(Any, query)}
    out = []
    for row in rows:
        if row.disabled_at is not None:
            status = "disabled"
        elif row.password_hash is None and row.id not in with_identity:
            status = "invited"
        else:
            status = "active"
        out.append(
            UserRecord(
                id=row.id,
                email=row.email,
                role=row.role,
                status=status,
                disabled_at=row.disabled_at,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
        )
    return out


def get_user(user_id: str) -> UserRecord:
    row = User.get_or_none(User.id == user_id)
    if row is None:
        raise NotFoundError("no such user")
    return _records([row])[0]


def list_users(after: Sequence[str] | None, limit: int) -> list[UserRecord]:
    """Users ordered by (created_at, id), starting after the cursor values, `limit` of them."""
    query = User.select().order_by(User.created_at, User.id).limit(limit)
    if after:
        query = query.where(keyset_after((User.created_at, User.id), after))
    return _records(list(query))


def list_jobs(after: Sequence[str] | None, limit: int) -> list[JobRecord]:
    query = JobRun.select().order_by(JobRun.name).limit(limit)
    if after:
        query = query.where(keyset_after((JobRun.name,), after))
    return [
        JobRecord(
            name=row.name,
            last_started_at=row.last_started_at,
            last_finished_at=row.last_finished_at,
            duration_ms=row.duration_ms,
            outcome=row.outcome,
            detail=row.detail,
        )
        for row in query
    ]


# -- creating -------------------------------------------------------------------------------


def create_user_with_password(
    email: str, password_hash: str, role: str, now: datetime
) -> UserRecord:
    """An active user (admin API with a password). Raises ConflictError on a taken email."""
    user = users_store.create_user(email, password_hash, role, now)
    return _records([user])[0]


def create_invited_user(
    email: str,
    role: str,
    invite_hash: str,
    created_by: str | None,
    now: datetime,
    ttl: timedelta,
) -> UserRecord:
    """A user without a password plus a one-time invite, in one transaction."""
    with database_proxy.atomic():
        user = users_store.create_user(email, None, role, now)
        Invite.create(
            email=user.email,
            role=role,
            token_hash=invite_hash,
            created_by=created_by,
            created_at=now,
            expires_at=now + ttl,
        )
    return _records([user])[0]


def complete_setup(token_hash: str, email: str, password_hash: str, now: datetime) -> str:
    """Consume a setup token and create an administrator, all in one transaction.

    The first administrator also takes the installer lock (`users.create_user`). Every other
    outstanding setup token is retired, so a URL printed at an earlier start cannot create a
    second administrator later; `admin reset-setup` issues a new one when wanted.

    Raises:
        NotFoundError: the token is unknown, used or expired (nothing changed).
        ConflictError: the email is taken (nothing changed; the token stays usable).
    """
    with database_proxy.atomic():
        if not users_store.consume_setup_token(token_hash, now):
            raise NotFoundError("setup link is invalid or used")
        user = users_store.create_user(email, password_hash, "admin", now)
        SetupToken.update(used_at=now).where(SetupToken.used_at.is_null()).execute()
    return str(user.id)


def invite_email(token_hash: str, now: datetime) -> str | None:
    """The invited address when the invite is valid (unused, unexpired, user still there)."""
    invite = Invite.get_or_none(
        (Invite.token_hash == token_hash) & Invite.used_at.is_null() & (Invite.expires_at > now)
    )
    if invite is None:
        return None
    user = User.get_or_none(User.email == invite.email)
    if user is None or user.disabled_at is not None:
        return None
    return str(invite.email)


def accept_invite(token_hash: str, password_hash: str, now: datetime) -> str:
    """Use the invite once: set the user's password, retire their invites; returns the user id.

    Raises:
        NotFoundError: the invite is invalid, used or expired, or its user is gone or disabled.
    """
    with database_proxy.atomic():
        email = invite_email(token_hash, now)
        if email is None:
            raise NotFoundError("invite link is invalid or used")
        used = (
            Invite.update(used_at=now)
            .where((Invite.token_hash == token_hash) & Invite.used_at.is_null())
            .execute()
        )
        if used != 1:
            raise NotFoundError("invite link is invalid or used")
        user = User.get(User.email == email)
        User.update(
            password_hash=password_hash, failed_logins=0, locked_until=None, updated_at=now
        ).where(User.id == user.id).execute()
        Invite.update(used_at=now).where(
            (Invite.email == email) & Invite.used_at.is_null()
        ).execute()
    return str(user.id)


# -- changing, with the last-admin rule ------------------------------------------------------


def _lock_active_admins() -> list[str]:
    """Ids of the active administrators, row-locked until the transaction ends (PostgreSQL)."""
    query = User.select(User.id).where((User.role == "admin") & User.disabled_at.is_null())
    if isinstance(database_proxy.obj, peewee.PostgresqlDatabase):
        query = query.for_update()
    return [str(row.id) for row in query]


def _check_last_admin(user: User, removes_admin: bool) -> None:
    if not removes_admin or user.role != "admin" or user.disabled_at is not None:
        return
    others = [uid for uid in _lock_active_admins() if uid != user.id]
    if not others:
        raise LastAdminError("this is the last active administrator")


def _end_access(user_id: str, now: datetime) -> None:
    Session.delete().where(Session.user == user_id).execute()
    OAuthGrant.delete().where(OAuthGrant.user == user_id).execute()  # MCP clients' grants
    PersonalToken.update(revoked_at=now).where(
        (PersonalToken.user == user_id) & PersonalToken.revoked_at.is_null()
    ).execute()


def update_user(user_id: str, role: str | None, disabled: bool | None, now: datetime) -> UserRecord:
    """Change role and/or disabled state in one transaction.

    Disabling ends the user's sessions, personal tokens and MCP clients' grants at once (they
    stay ended after re-enabling).

    Raises:
        NotFoundError: no such user.
        LastAdminError: the change would leave no active administrator.
    """
    with database_proxy.atomic():
        user = User.get_or_none(User.id == user_id)
        if user is None:
            raise NotFoundError("no such user")
        demotes = role is not None and role != "admin"
        _check_last_admin(user, demotes or disabled is True)
        changes: dict[peewee.Field, object] = {}
        if role is not None and role != user.role:
            changes[User.role] = role
        if disabled is True and user.disabled_at is None:
            changes[User.disabled_at] = now
            _end_access(user.id, now)
        elif disabled is False and user.disabled_at is not None:
            changes[User.disabled_at] = None
        if changes:
            changes[User.updated_at] = now
            User.update(changes).where(User.id == user.id).execute()
        refreshed = User.get(User.id == user.id)
    return _records([refreshed])[0]


def delete_user(user_id: str) -> None:
    """Delete the user and (by cascade) their sessions, tokens, identities and connections.

    Raises:
        NotFoundError: no such user.
        LastAdminError: this is the last active administrator.
    """
    with database_proxy.atomic():
        user = User.get_or_none(User.id == user_id)
        if user is None:
            raise NotFoundError("no such user")
        _check_last_admin(user, True)
        Invite.delete().where(Invite.email == user.email).execute()
        User.delete().where(User.id == user.id).execute()


# -- password sign-in ------------------------------------------------------------------------


def login_state(email: str) -> LoginState | None:
    user = User.get_or_none(User.email == email)
    if user is None:
        return None
    return LoginState(
        user_id=str(user.id),
        password_hash=user.password_hash,
        locked_until=user.locked_until,
        disabled=user.disabled_at is not None,
    )


def sign_in_methods(user_id: str) -> SignInMethods | None:
    """The user's ways of signing in (None: no such user). Issuers oldest identity first."""
    user = User.select(User.password_hash).where(User.id == user_id).first()
    if user is None:
        return None
    issuers = (
        OidcIdentity.select(OidcIdentity.issuer)
        .where(OidcIdentity.user == user_id)
        .order_by(OidcIdentity.created_at, OidcIdentity.id)
        .tuples()
    )
    return SignInMethods(
        has_password=user.password_hash is not None,
        sso_issuers=tuple(str(row[0]) for row in cast(Any, issuers)),
    )


def record_login_failure(
    user_id: str, now: datetime, lock_for: Callable[[int], timedelta | None]
) -> datetime | None:
    """Count a failed attempt atomically; returns the new lock deadline (None: not locked).

    `lock_for(failures)` is the backoff policy (accounts/login.py).
    """
    with database_proxy.atomic():
        User.update(failed_logins=User.failed_logins + 1).where(User.id == user_id).execute()
        user = User.get_or_none(User.id == user_id)
        if user is None:
            return None
        duration = lock_for(int(user.failed_logins))
        if duration is None:
            return None
        until = now + duration
        User.update(locked_until=until).where(User.id == user_id).execute()
    return until


def record_login_success(user_id: str) -> None:
    User.update(failed_logins=0, locked_until=None).where(
        (User.id == user_id) & ((User.failed_logins != 0) | User.locked_until.is_null(False))
    ).execute()


# -- single sign-on identities ---------------------------------------------------------------


def _identity_user(issuer: str, subject: str, now: datetime) -> User | None:
    found = (
        OidcIdentity.select(OidcIdentity.id, OidcIdentity.user)
        .where((OidcIdentity.issuer == issuer) & (OidcIdentity.subject == subject))
        .tuples()
        .first()
    )
    if found is None:
        return None
    identity_id, user_id = found
    OidcIdentity.update(last_login_at=now).where(OidcIdentity.id == identity_id).execute()
    return User.get_or_none(User.id == user_id)


def resolve_oidc_identity(
    issuer: str,
    subject: str,
    verified_email: str | None,
    provision_role: str | None,
    now: datetime,
    link_allowed: bool = True,
) -> tuple[UserRecord, str] | None:
    """The user a verified ID token signs in as, and how: "existing", "linked", "provisioned",
    or "admin_not_linked".

    1. An identity (issuer, subject) already linked → its user.
    2. Else, with a verified email that a local user has → link the identity to that user, when
       `link_allowed` (the caller checked the domain policy) and the user is not an
       administrator. An administrator is never linked by email ("admin_not_linked", nothing
       written): taking over an admin must take more than an email a provider vouches for.
       A refused link returns None, nothing written.
    3. Else, when `provision_role` is given (the caller checked domain/group policy) and the
       email is verified → create the user (no password) with that role, and the identity.
    4. Else None: not allowed here.

    A concurrent first login of the same identity loses the unique (issuer, subject) race and
    re-reads the winner's link. The caller refuses disabled users.
    """
    for _attempt in range(2):
        try:
            with database_proxy.atomic():
                user = _identity_user(issuer, subject, now)
                if user is not None:
                    return _records([user])[0], "existing"
                if verified_email is None:
                    return None
                user = User.get_or_none(User.email == verified_email)
                how = "linked"
                if user is not None and user.role == "admin":
                    return _records([user])[0], "admin_not_linked"
                if user is not None and not link_allowed:
                    return None
                if user is None:
                    if provision_role is None:
                        return None
                    user = User.create(
                        email=verified_email,
                        password_hash=None,
                        role=provision_role,
                        created_at=now,
                        updated_at=now,
                    )
                    how = "provisioned"
                OidcIdentity.create(
                    user=user.id,
                    issuer=issuer,
                    subject=subject,
                    email=verified_email,
                    created_at=now,
                    last_login_at=now,
                )
                return _records([user])[0], how
        except peewee.IntegrityError:
            continue  # someone linked or created concurrently; the next pass reads it
    raise ConflictError("single sign-on identity changed concurrently; try again")
