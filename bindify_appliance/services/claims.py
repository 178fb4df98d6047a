"""One-time records in the KV store: connection claims (5 min) and OAuth state (10 min).

A claim hands a new connection's secrets (secret URL, API key) to its owner exactly once, after
the OAuth callback (DESIGN §5). OAuth `state` carries the PKCE verifier and what to create at
the callback. Both are bearer tokens in a URL, so both are stored the same careful way:

- the KV key is `{prefix}{sha256(token)}`: the store never holds the token itself, so a KV
  dump (Redis `KEYS`, a backup) cannot be turned into a URL that works;
- the value is sealed (AES-256-GCM) under a key derived from the token (HKDF, info = the
  purpose) and bound to the key digest, so the secrets are unreadable without the token;
- reading is get-and-delete (atomic on both KV backends): the first reader consumes it.
  `take_claim` first peeks to check the owner, so another user gets 403 and consumes nothing.

Invariants:
- Tokens are 43 base64url characters (32 random bytes); anything else is "not found" before
  the KV is touched.
- Nothing here logs, and no message contains a token or a record's content.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bindify_appliance.crypto.sealing import open_sealed, seal
from bindify_appliance.errors import DecryptError, Forbidden, NotFound
from bindify_appliance.kv import MEMBER, Budget, KVStore

__all__ = [
    "CLAIM_PREFIX",
    "CLAIM_TTL",
    "claim_key",
    "create_claim",
    "is_token",
    "new_token",
    "peek_sealed",
    "put_sealed",
    "take_claim",
    "take_sealed",
]

CLAIM_TTL: Final = 300.0
CLAIM_PREFIX: Final = "claim:"
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_SALT: Final = b"bindify-kv-one-time-record"


def new_token() -> str:
    """A fresh one-time token: 32 random bytes, base64url (43 characters)."""
    return secrets.token_urlsafe(32)


def is_token(text: object) -> bool:
    return isinstance(text, str) and _TOKEN_RE.fullmatch(text) is not None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _key(token: str, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=_SALT, info=purpose.encode("ascii")
    ).derive(token.encode("ascii"))


def claim_key(token: str, prefix: str = CLAIM_PREFIX) -> str:
    """The KV key a record of `token` lives under (for tests asserting nothing is left)."""
    return prefix + _digest(token)


async def put_sealed(
    kv: KVStore,
    prefix: str,
    token: str,
    record: Mapping[str, Any],
    ttl: float,
    *,
    budget: Budget = MEMBER,
) -> None:
    """Store `record` sealed under `token` for `ttl` seconds, in `budget` (see `kv.base`).

    Raises KVFullError (nothing stored) when that budget is full: never evicts another record.
    """
    digest = _digest(token)
    plaintext = json.dumps(dict(record), separators=(",", ":")).encode("utf-8")
    await kv.set(
        prefix + digest,
        seal(_key(token, prefix), plaintext, row=digest, field=prefix),
        ttl,
        budget=budget,
    )


def _open(token: str, prefix: str, blob: str | None) -> dict[str, Any] | None:
    if blob is None:
        return None
    digest = _digest(token)
    try:
        value = json.loads(open_sealed(_key(token, prefix), blob, row=digest, field=prefix))
    except (DecryptError, ValueError, UnicodeDecodeError):
        return None  # damaged or forged: as good as absent
    return value if isinstance(value, dict) else None


async def peek_sealed(kv: KVStore, prefix: str, token: str) -> dict[str, Any] | None:
    """The record without consuming it; None when unknown, expired, used or not a token."""
    if not is_token(token):
        return None
    return _open(token, prefix, await kv.get(prefix + _digest(token)))


async def take_sealed(kv: KVStore, prefix: str, token: str) -> dict[str, Any] | None:
    """The record, consumed (get-and-delete); None when unknown, expired, used or not a token."""
    if not is_token(token):
        return None
    return _open(token, prefix, await kv.get_and_delete(prefix + _digest(token)))


async def create_claim(
    kv: KVStore, *, user_id: str, result: Mapping[str, Any], ttl: float = CLAIM_TTL
) -> str:
    """Keep `result` ({connection, secret_url, api_key}) for `user_id`; returns the claim token."""
    token = new_token()
    # A claim is written for a signed-in member: the member budget, which a flood of
    # anonymous requests cannot fill (DESIGN §9).
    record = {"user_id": user_id, "result": dict(result)}
    await put_sealed(kv, CLAIM_PREFIX, token, record, ttl, budget=MEMBER)
    return token


_GONE = "this claim is unknown, expired or already used (secrets are shown only once)"


async def take_claim(kv: KVStore, token: str, user_id: str) -> dict[str, Any]:
    """The claimed result for its owner, consumed.

    Raises:
        HTTPFacingError: 404 unknown/expired/used; 403 for another user (not consumed).
    """
    peeked = await peek_sealed(kv, CLAIM_PREFIX, token)
    if peeked is None:
        raise NotFound(_GONE)
    if not hmac.compare_digest(str(peeked.get("user_id", "")).encode(), user_id.encode()):
        raise Forbidden("this claim belongs to another user")
    taken = await take_sealed(kv, CLAIM_PREFIX, token)
    if taken is None or taken.get("user_id") != user_id:  # a concurrent reader won
        raise NotFound(_GONE)
    result = taken.get("result")
    if not isinstance(result, dict):
        raise NotFound(_GONE)
    return result
