"""Units of work for the OAuth authorization server (DESIGN §10), run through `Store.run`.

Invariants:
- Tokens are looked up by hash only; nothing here sees a token, code or opener in clear.
- Every read names the issuer: a row made under another base URL is never found, and
  `purge` deletes it.
- Refresh rotation is a compare-and-swap on `used_at`: of two requests presenting one refresh
  token, exactly one rotates it; the other (or any later reuse) ends the whole grant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import peewee

from bindify_appliance.store.models import Connection, OAuthClientRecord, OAuthGrant, OAuthToken

__all__ = [
    "AccessRow",
    "NewToken",
    "RefreshOutcome",
    "count_unused_clients",
    "delete_grant",
    "delete_grants",
    "delete_token",
    "find_access",
    "get_client",
    "get_grant",
    "insert_client",
    "insert_grant",
    "list_grants",
    "purge",
    "rotate_refresh",
    "token_grant",
    "touch_grant",
]


@dataclass(frozen=True)
class NewToken:
    token_hash: str
    kind: str  # access | refresh
    opener_sealed: str | None
    expires_at: datetime


@dataclass(frozen=True)
class AccessRow:
    """An access token joined with its grant: what the proxy needs."""

    grant_id: str
    connection_id: str
    service: str
    opener_sealed: str | None
    expires_at: datetime
    grant_expires_at: datetime


@dataclass(frozen=True)
class RefreshOutcome:
    """`grant` set when this request won the rotation; `reused` when the token was spent."""

    grant: OAuthGrant | None
    opener_sealed: str | None
    reused: bool


# -- clients -----------------------------------------------------------------------------------


def insert_client(row: dict[str, object]) -> OAuthClientRecord:
    """Insert a registration; with a fingerprint another row already has, that row instead."""
    db = OAuthClientRecord._meta.database
    try:
        with db.atomic():
            return OAuthClientRecord.create(**row)
    except peewee.IntegrityError:
        existing = None
        if row.get("fingerprint"):
            existing = OAuthClientRecord.get_or_none(
                OAuthClientRecord.fingerprint == row["fingerprint"]
            )
        if existing is None:
            raise
        return existing


def find_by_fingerprint(fingerprint: str) -> OAuthClientRecord | None:
    return OAuthClientRecord.get_or_none(OAuthClientRecord.fingerprint == fingerprint)


def get_client(client_id: str, issuer: str) -> OAuthClientRecord | None:
    return OAuthClientRecord.get_or_none(
        (OAuthClientRecord.id == client_id) & (OAuthClientRecord.issuer == issuer)
    )


def count_unused_clients() -> int:
    return int(OAuthClientRecord.select().where(OAuthClientRecord.used_at.is_null()).count())


# -- grants and tokens -------------------------------------------------------------------------


def _insert_tokens(grant_id: str, tokens: tuple[NewToken, ...]) -> None:
    for token in tokens:
        OAuthToken.create(
            token_hash=token.token_hash,
            grant=grant_id,
            kind=token.kind,
            opener_sealed=token.opener_sealed,
            expires_at=token.expires_at,
        )


def insert_grant(grant: dict[str, object], tokens: tuple[NewToken, ...], now: datetime) -> bool:
    """Create the grant and its first tokens; False when the connection is gone meanwhile (or
    is not the grant's user's connection to the grant's service)."""
    db = OAuthGrant._meta.database
    with db.atomic():
        owned = Connection.select().where(
            (Connection.id == grant["connection"])
            & (Connection.user == grant["user"])
            & (Connection.service == grant["service"])
        )
        if not owned.exists():
            return False
        row = OAuthGrant.create(**grant)
        _insert_tokens(row.id, tokens)
        OAuthClientRecord.update({OAuthClientRecord.used_at: now}).where(
            (OAuthClientRecord.id == grant["client_id"]) & OAuthClientRecord.used_at.is_null()
        ).execute()
    return True


def rotate_refresh(
    token_hash: str, issuer: str, now: datetime, fresh: tuple[NewToken, ...]
) -> RefreshOutcome:
    """Spend the refresh token `token_hash` and store `fresh` for its grant.

    A token already spent ends its grant (`reused`); an unknown, expired or other-issuer token
    changes nothing. The caller checked nothing yet: client binding is checked on the result
    (and `delete_grant` undoes a rotation it refuses).
    """
    db = OAuthToken._meta.database
    with db.atomic():
        row = (
            OAuthToken.select(OAuthToken, OAuthGrant)
            .join(OAuthGrant)
            .where((OAuthToken.token_hash == token_hash) & (OAuthToken.kind == "refresh"))
            .first()
        )
        if row is None or row.grant.issuer != issuer:
            return RefreshOutcome(None, None, False)
        grant = row.grant
        won = (
            OAuthToken.update({OAuthToken.used_at: now})
            .where((OAuthToken.token_hash == token_hash) & OAuthToken.used_at.is_null())
            .execute()
        )
        if won != 1:
            OAuthGrant.delete().where(OAuthGrant.id == grant.id).execute()
            return RefreshOutcome(None, None, True)
        if row.expires_at <= now or grant.expires_at <= now:
            return RefreshOutcome(None, None, False)
        _insert_tokens(grant.id, fresh)
    return RefreshOutcome(grant, row.opener_sealed, False)


def find_access(token_hash: str, issuer: str) -> AccessRow | None:
    row = (
        OAuthToken.select(OAuthToken, OAuthGrant)
        .join(OAuthGrant)
        .where((OAuthToken.token_hash == token_hash) & (OAuthToken.kind == "access"))
        .first()
    )
    if row is None or row.grant.issuer != issuer:
        return None
    grant = row.grant
    return AccessRow(
        grant_id=grant.id,
        connection_id=grant.connection_id,
        service=grant.service,
        opener_sealed=row.opener_sealed,
        expires_at=row.expires_at,
        grant_expires_at=grant.expires_at,
    )


def token_grant(token_hash: str, issuer: str) -> tuple[OAuthGrant, OAuthToken] | None:
    """A token of either kind (spent ones too) with its grant, under `issuer`."""
    row = (
        OAuthToken.select(OAuthToken, OAuthGrant)
        .join(OAuthGrant)
        .where(OAuthToken.token_hash == token_hash)
        .first()
    )
    if row is None or row.grant.issuer != issuer:
        return None
    return row.grant, row


def get_grant(grant_id: str) -> OAuthGrant | None:
    return OAuthGrant.get_or_none(OAuthGrant.id == grant_id)


def delete_token(token_hash: str) -> bool:
    return bool(OAuthToken.delete().where(OAuthToken.token_hash == token_hash).execute())


def touch_grant(grant_id: str, now: datetime, interval: timedelta) -> bool:
    """Stamp `last_used_at` unless stamped within `interval`."""
    cutoff = now - interval
    return bool(
        OAuthGrant.update({OAuthGrant.last_used_at: now})
        .where(
            (OAuthGrant.id == grant_id)
            & (OAuthGrant.last_used_at.is_null() | (OAuthGrant.last_used_at <= cutoff))
        )
        .execute()
    )


def list_grants(connection_id: str, issuer: str, now: datetime) -> list[OAuthGrant]:
    return list(
        OAuthGrant.select()
        .where(
            (OAuthGrant.connection == connection_id)
            & (OAuthGrant.issuer == issuer)
            & (OAuthGrant.expires_at > now)
        )
        .order_by(OAuthGrant.created_at.desc(), OAuthGrant.id)
    )


def delete_grant(grant_id: str, connection_id: str | None = None) -> bool:
    where = OAuthGrant.id == grant_id
    if connection_id is not None:
        where &= OAuthGrant.connection == connection_id
    return bool(OAuthGrant.delete().where(where).execute())


def delete_grants(*, connection_id: str | None = None, user_id: str | None = None) -> int:
    """End every grant of a connection or of a user (their tokens cascade)."""
    if connection_id is not None:
        where = OAuthGrant.connection == connection_id
    elif user_id is not None:
        where = OAuthGrant.user == user_id
    else:
        raise ValueError("name a connection or a user")
    return int(OAuthGrant.delete().where(where).execute())


def purge(issuer: str, now: datetime, unused_before: datetime) -> tuple[int, int, int]:
    """Delete expired tokens and grants, registrations never used since `unused_before`, and
    everything of another issuer; (tokens, grants, clients) deleted."""
    grants = (
        OAuthGrant.delete()
        .where((OAuthGrant.issuer != issuer) | (OAuthGrant.expires_at <= now))
        .execute()
    )
    tokens = OAuthToken.delete().where(OAuthToken.expires_at <= now).execute()
    clients = (
        OAuthClientRecord.delete()
        .where(
            (OAuthClientRecord.issuer != issuer)
            | (
                OAuthClientRecord.used_at.is_null()
                & (OAuthClientRecord.created_at <= unused_before)
            )
        )
        .execute()
    )
    return int(tokens), int(grants), int(clients)
