"""The accounts tables: users, the installer's setup token and lock, browser sessions, personal
API tokens, invites and single sign-on identities.

Invariants: bearer secrets (sessions, setup tokens, personal tokens, invites) are stored only as
SHA-256 hashes; e-mail addresses only lower-case; `role` is one of `models.ROLES`. Every model
is re-exported by `store/models.py`, which lists them in `ALL_MODELS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peewee import ForeignKeyField, IntegerField, TextField

from bindify_appliance.store.fields import (
    BaseModel,
    LowercaseTextField,
    UtcTimestampField,
    new_id,
)

__all__ = ["Invite", "OidcIdentity", "PersonalToken", "Session", "SetupState", "SetupToken", "User"]


class User(BaseModel):
    id = TextField(primary_key=True, default=new_id)
    email = LowercaseTextField(unique=True)
    password_hash = TextField(null=True)
    role = TextField()  # ROLES
    disabled_at = UtcTimestampField(null=True)
    failed_logins = IntegerField(default=0)
    locked_until = UtcTimestampField(null=True)
    created_at = UtcTimestampField()
    updated_at = UtcTimestampField()
    # Billing (DESIGN §11): until when the member is entitled; NULL = not billed.
    billing_until = UtcTimestampField(null=True)

    class Meta:
        table_name = "users"


class SetupToken(BaseModel):
    """One-time setup URLs; only the sha256 hex of the token is stored."""

    token_hash = TextField(primary_key=True)
    expires_at = UtcTimestampField()
    used_at = UtcTimestampField(null=True)
    created_at = UtcTimestampField()

    class Meta:
        table_name = "setup_tokens"


class SetupState(BaseModel):
    """The installer lock: a single row with id `models.SETUP_STATE_ID`.

    Inserted in the same transaction as the first admin, so a second concurrent setup fails on
    the primary key (both engines).
    """

    id = IntegerField(primary_key=True)
    completed_at = UtcTimestampField()
    admin = ForeignKeyField(User, column_name="admin_id", null=True, on_delete="SET NULL")
    if TYPE_CHECKING:  # peewee's raw-id accessor, declared for type checkers
        admin_id: str | None

    class Meta:
        table_name = "setup_state"


class Session(BaseModel):
    """Browser sessions; the id is the sha256 hex of the session token."""

    id = TextField(primary_key=True)
    user = ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
    if TYPE_CHECKING:
        user_id: str
    created_at = UtcTimestampField()
    expires_at = UtcTimestampField(index=True)
    last_seen_at = UtcTimestampField()
    ip = TextField(null=True)
    user_agent = TextField(null=True)

    class Meta:
        table_name = "sessions"


class PersonalToken(BaseModel):
    id = TextField(primary_key=True, default=new_id)
    user = ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
    if TYPE_CHECKING:
        user_id: str
    name = TextField()
    token_hash = TextField(unique=True)
    created_at = UtcTimestampField()
    last_used_at = UtcTimestampField(null=True)
    revoked_at = UtcTimestampField(null=True)

    class Meta:
        table_name = "personal_tokens"


class Invite(BaseModel):
    id = TextField(primary_key=True, default=new_id)
    email = LowercaseTextField()
    role = TextField()  # ROLES
    token_hash = TextField(unique=True)
    # The raw id reads as `created_by_id` (peewee's accessor); the column is `created_by`.
    created_by = ForeignKeyField(User, column_name="created_by", null=True, on_delete="SET NULL")
    if TYPE_CHECKING:
        created_by_id: str | None
    created_at = UtcTimestampField()
    expires_at = UtcTimestampField()
    used_at = UtcTimestampField(null=True)

    class Meta:
        table_name = "invites"


class OidcIdentity(BaseModel):
    """A single sign-on identity (migration 0002); unique by (issuer, subject), never by email.

    A user may hold several (one per provider or subject); deleting the user deletes them.
    """

    id = TextField(primary_key=True, default=new_id)
    user = ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
    if TYPE_CHECKING:
        user_id: str
    issuer = TextField()
    subject = TextField()
    email = TextField(null=True)
    created_at = UtcTimestampField()
    last_login_at = UtcTimestampField(null=True)

    class Meta:
        table_name = "oidc_identities"
        indexes = ((("issuer", "subject"), True),)
