"""Token formats, their stored hashes, and the opener sealed under a key derived from a token.

`bndat_` access tokens and `bndrt_` refresh tokens are the prefix and 43 base64url characters
(32 random bytes). They are stored only as domain-separated SHA-256 hashes: 256 random bits need
no salt or stretching, and a deterministic hash is what makes the column an index.

The opener (what opens a zero-knowledge connection: its 86-character credentials) is sealed
per token with AES-256-GCM under HKDF(token, salt, info = kind), bound to the token's hash, so
the database and the master keys together still open nothing without the token itself.

Invariants: no function here logs; no message contains a token or an opener.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bindify_appliance.crypto.sealing import open_sealed, seal
from bindify_appliance.errors import DecryptError

__all__ = [
    "ACCESS_PREFIX",
    "REFRESH_PREFIX",
    "bearer_value",
    "is_access_token",
    "new_token",
    "open_opener",
    "seal_opener",
    "token_hash",
    "token_kind",
]

ACCESS_PREFIX: Final = "bndat_"
REFRESH_PREFIX: Final = "bndrt_"
CLIENT_SECRET_PREFIX: Final = "bndcs_"  # noqa: S105 - a prefix, not a secret
_TOKEN_RE: Final = re.compile(r"bnd(at|rt|cs)_[A-Za-z0-9_-]{43}")
_HASH_PREFIX: Final = b"bindify-appliance/oauth-token/v1\x00"
_SALT: Final = b"bindify-oauth-token-opener"
_FIELD: Final = "opener_sealed"


def new_token(prefix: str) -> str:
    """A fresh token: `prefix` + 32 random bytes in base64url."""
    return prefix + secrets.token_urlsafe(32)


def token_kind(token: object) -> str | None:
    """ "access", "refresh" or "client_secret" for a well-formed token, else None."""
    if not isinstance(token, str):
        return None
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        return None
    return {"at": "access", "rt": "refresh", "cs": "client_secret"}[match.group(1)]


def is_access_token(authorization: str) -> bool:
    """True when an `Authorization` value is `Bearer bndat_…` (any case of the scheme)."""
    scheme, _, rest = authorization.partition(" ")
    return scheme.lower() == "bearer" and rest.lstrip(" \t").startswith(ACCESS_PREFIX)


def bearer_value(authorization: str) -> str:
    """The token of a `Bearer` `Authorization` value (whitespace after the scheme dropped)."""
    return authorization.partition(" ")[2].lstrip(" \t")


def token_hash(token: str) -> str:
    """Hex SHA-256 of the token under its own prefix: the only form stored."""
    return hashlib.sha256(_HASH_PREFIX + token.encode("ascii", "replace")).hexdigest()


def _key(token: str) -> bytes:
    info = token[:6].encode("ascii")  # the kind's prefix: keys of the two kinds never meet
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(
        token.encode("ascii")
    )


def seal_opener(token: str, opener: bytes | None) -> str | None:
    """`opener` sealed under `token`; None stays None (a managed connection needs none)."""
    if opener is None:
        return None
    return seal(_key(token), opener, row=token_hash(token), field=_FIELD)


def open_opener(token: str, sealed: str | None) -> bytes | None:
    """The opener sealed under `token`; None when none was sealed.

    Raises:
        DecryptError: the blob does not open under this token.
    """
    if sealed is None:
        return None
    try:
        return open_sealed(_key(token), sealed, row=token_hash(token), field=_FIELD)
    except ValueError:
        raise DecryptError("opener does not open") from None
