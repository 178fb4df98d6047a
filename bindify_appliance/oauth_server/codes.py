"""Authorization codes: one-time, 60 seconds, in the KV (shared by every instance).

A code is a one-time KV record (`services/claims.py`): the KV key is a hash of the code and the
record is sealed under a key derived from the code, so the KV alone yields neither a usable code
nor the opener it carries. Taking it is get-and-delete, atomic on both backends, so of two
exchanges of one code exactly one gets it. A spent code leaves a marker naming the grant it
made (no secret), so a second exchange ends that grant (RFC 6749 §4.1.2).

Invariants: nothing here logs; no message contains a code, a verifier or an opener.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Final

from bindify_appliance.context import AppContext
from bindify_appliance.kv import MEMBER
from bindify_appliance.services.claims import new_token, put_sealed, take_sealed

__all__ = ["CODE_TTL", "CodeGrant", "issue_code", "mark_spent", "spent_grant", "take_code"]

CODE_TTL: Final = 60.0
_SPENT_TTL: Final = 600.0
_PREFIX: Final = "oauthcode:"
_SPENT: Final = "oauthcode-spent:"


@dataclass(frozen=True)
class CodeGrant:
    """What a code was issued for (`opener` is secret: never logged or shown)."""

    issuer: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    service: str
    resource: str | None
    connection_id: str
    user_id: str
    opener: bytes | None


async def issue_code(
    ctx: AppContext,
    *,
    client_id: str,
    redirect_uri: str,
    code_challenge: str,
    service: str,
    resource: str | None,
    connection_id: str,
    user_id: str,
    opener: bytes | None,
) -> str:
    """A fresh one-time code for this authorization.

    `opener` opens a zero-knowledge connection (the 86-character credentials of its secret URL
    or `bnd_` key, as ASCII bytes; the caller checked them against the connection); None for a
    managed connection. `code_challenge` is the S256 challenge (the caller refused `plain`).
    Raises KVError / KVFullError when the KV cannot take it.
    """
    code = new_token()
    record = {
        "iss": ctx.settings.base_url,
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": code_challenge,
        "service": service,
        "resource": resource,
        "connection_id": connection_id,
        "user_id": user_id,
        "opener": base64.b64encode(opener).decode("ascii") if opener is not None else None,
    }
    await put_sealed(ctx.kv, _PREFIX, code, record, CODE_TTL, budget=MEMBER)
    return code


async def take_code(ctx: AppContext, code: str) -> CodeGrant | None:
    """The code's record, consumed; None when unknown, expired, spent or damaged."""
    record = await take_sealed(ctx.kv, _PREFIX, code)
    if record is None:
        return None
    try:
        opener = record.get("opener")
        resource = record.get("resource")
        return CodeGrant(
            issuer=str(record["iss"]),
            client_id=str(record["client_id"]),
            redirect_uri=str(record["redirect_uri"]),
            code_challenge=str(record["code_challenge"]),
            service=str(record["service"]),
            resource=str(resource) if resource is not None else None,
            connection_id=str(record["connection_id"]),
            user_id=str(record["user_id"]),
            opener=base64.b64decode(opener) if isinstance(opener, str) else None,
        )
    except (KeyError, ValueError):
        return None


def _spent_key(code: str) -> str:
    return _SPENT + hashlib.sha256(code.encode("ascii", "replace")).hexdigest()


async def mark_spent(ctx: AppContext, code: str, grant_id: str) -> None:
    """Remember which grant `code` made, so that a second exchange can end it."""
    await ctx.kv.set(_spent_key(code), grant_id, _SPENT_TTL, budget=MEMBER)


async def spent_grant(ctx: AppContext, code: str) -> str | None:
    """The grant a spent `code` made (within 10 minutes), else None."""
    if not isinstance(code, str) or len(code) > 200:
        return None
    return await ctx.kv.get(_spent_key(code))
