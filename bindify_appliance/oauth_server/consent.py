"""The consent step's server-side state: a pending authorization and what the page shows.

A checked authorize request is kept in the KV under a one-time request id (32 random bytes),
the same careful way as claims (`services.claims.put_sealed`): the KV key is a hash of the id and
the record is sealed under a key derived from it. The consent form carries only that id; the
client, redirect URI, PKCE challenge and resource are read back from the record, never from the
form. The record names its member: another member's id is "not found".

A zero-knowledge connection made during the authorization ("connect a new account first") is
remembered in the record, sealed like the rest, so the member need not paste the URL just shown
to them; the record is consumed when the member answers, or expires after `PENDING_TTL`.

Invariants: nothing here logs; no message carries a record's content or a credential.
"""

from __future__ import annotations

import hmac
from dataclasses import asdict, dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from bindify_appliance.context import AppContext
from bindify_appliance.crypto.credentials import Credentials, parse_credentials
from bindify_appliance.errors import CredentialFormatError
from bindify_appliance.kv import MEMBER
from bindify_appliance.oauth_server.authorize_request import AuthorizeParams
from bindify_appliance.services.claims import new_token, peek_sealed, put_sealed, take_sealed

__all__ = [
    "PENDING_PREFIX",
    "PENDING_TTL",
    "RETURN_COOKIE",
    "Pending",
    "form_action_source",
    "load_pending",
    "redirect_host",
    "remember_fresh",
    "save_pending",
    "take_pending",
]

PENDING_PREFIX: Final = "oauth-consent:"
PENDING_TTL: Final = 600.0
# Signed cookie naming the pending request while the member connects a new account.
RETURN_COOKIE: Final = "bindify_oauth_return"


@dataclass(frozen=True)
class Pending:
    """A pending authorization: the checked request and what the page names."""

    request_id: str
    user_id: str
    params: AuthorizeParams
    client_name: str
    unverified: bool
    fresh: dict[str, str]  # connection id → credentials text, for connections made meanwhile

    def fresh_credentials(self, connection_id: str) -> Credentials | None:
        text = self.fresh.get(connection_id)
        if not text:
            return None
        try:
            return parse_credentials(text)
        except CredentialFormatError:
            return None


def _record(pending: Pending) -> dict[str, Any]:
    return {
        "user_id": pending.user_id,
        "params": asdict(pending.params),
        "client_name": pending.client_name,
        "unverified": pending.unverified,
        "fresh": dict(pending.fresh),
    }


def _pending(request_id: str, record: dict[str, Any] | None, user_id: str) -> Pending | None:
    if record is None:
        return None
    owner = str(record.get("user_id", ""))
    if not hmac.compare_digest(owner.encode(), user_id.encode()):
        return None
    try:
        params = AuthorizeParams(**record["params"])
        fresh = {str(k): str(v) for k, v in dict(record.get("fresh") or {}).items()}
        return Pending(
            request_id=request_id,
            user_id=owner,
            params=params,
            client_name=str(record["client_name"]),
            unverified=bool(record["unverified"]),
            fresh=fresh,
        )
    except (KeyError, TypeError, ValueError):
        return None


async def save_pending(
    ctx: AppContext, *, user_id: str, params: AuthorizeParams, client_name: str, unverified: bool
) -> Pending:
    """Keep a checked request for its member; returns it with its new request id."""
    pending = Pending(new_token(), user_id, params, client_name, unverified, {})
    await put_sealed(
        ctx.kv, PENDING_PREFIX, pending.request_id, _record(pending), PENDING_TTL, budget=MEMBER
    )
    return pending


async def load_pending(ctx: AppContext, request_id: str, user_id: str) -> Pending | None:
    """The member's pending request (not consumed); None when unknown, expired or another's."""
    record = await peek_sealed(ctx.kv, PENDING_PREFIX, request_id)
    return _pending(request_id, record, user_id)


async def take_pending(ctx: AppContext, request_id: str, user_id: str) -> Pending | None:
    """The member's pending request, consumed; None when gone or another's (not consumed)."""
    if await load_pending(ctx, request_id, user_id) is None:
        return None
    record = await take_sealed(ctx.kv, PENDING_PREFIX, request_id)
    return _pending(request_id, record, user_id)


async def remember_fresh(
    ctx: AppContext, request_id: str, user_id: str, connection_id: str, credentials: str
) -> Pending | None:
    """Note a connection made during the authorization (its credentials, sealed)."""
    pending = await load_pending(ctx, request_id, user_id)
    if pending is None:
        return None
    fresh = {**pending.fresh, connection_id: credentials}
    updated = Pending(
        pending.request_id,
        pending.user_id,
        pending.params,
        pending.client_name,
        pending.unverified,
        fresh,
    )
    await put_sealed(
        ctx.kv, PENDING_PREFIX, request_id, _record(updated), PENDING_TTL, budget=MEMBER
    )
    return updated


def redirect_host(redirect_uri: str) -> str:
    """What the page names as the destination: the host, or the app's URI scheme."""
    parts = urlsplit(redirect_uri)
    if parts.scheme in ("http", "https"):
        host = parts.hostname or ""
        shown = f"{host}:{parts.port}" if parts.port else host
        if host in ("127.0.0.1", "::1", "localhost"):
            return f"{shown} (an application on your own computer)"
        return shown
    return f"{parts.scheme}: (an application on your device)"


def form_action_source(redirect_uri: str) -> str | None:
    """A CSP `form-action` source allowing the answer's redirect to the client (browsers apply
    `form-action` to redirects after a form); None when it cannot be written safely."""
    parts = urlsplit(redirect_uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        source = f"{scheme}://{netloc}"
    else:
        source = f"{scheme}:"
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789.-+:/[]")
    if not scheme or not set(source.lower()) <= allowed:
        return None
    return source
