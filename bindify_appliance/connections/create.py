"""Creating a connection, and giving it new credentials (rotate-url).

Creation generates fresh credentials (secret1 ‖ secret2), stores only what cannot grant access on
its own — secret1's lookup hash, for managed connections secret2's verifier, and the payload
sealed to the connection's id — and hands the secrets back exactly once, in `CreatedConnection`
(secret URL and `bnd_live_` API key). Zero-knowledge (the default) seals with a key derived from
secret2, so only a request carrying the URL can open it; managed seals with the active master
key (fingerprint recorded), so background jobs can refresh it.

Rotation replaces the credentials in one compare-and-swap write: the old URL stops resolving as
soon as it commits (the proxy's memo forgets it within a second). A zero-knowledge connection
can only be rotated with its current credentials, because only they unlock the payload to
re-seal it.

Invariants:
- Labels are 1-100 characters after trimming, everywhere (`normalize_label`, hosted quirk Q11).
- `key_storage_mode` is exactly `zero_knowledge` (default) or `managed`; anything else is 400.
- Every refusal is an `HTTPFacingError` raised before anything is written.
- `CreatedConnection`'s repr shows no secret.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from bindify_appliance import audit
from bindify_appliance.billing import check_allowance
from bindify_appliance.connections.secrets import (
    check_payload,
    credentials_match,
    open_payload,
    seal_payload,
)
from bindify_appliance.context import AppContext
from bindify_appliance.crypto.credentials import (
    Credentials,
    format_api_key,
    generate_credentials,
    secret1_lookup_hash,
    secret2_verifier,
    secret_url,
)
from bindify_appliance.errors import (
    Conflict,
    DecryptError,
    InvalidRequest,
    NotFound,
    NotFoundError,
)
from bindify_appliance.store import connections as rows
from bindify_appliance.store.models import KEY_STORAGE_MODES, Connection, new_id

if TYPE_CHECKING:
    from bindify_appliance.services.definitions import ServiceDefinition
    from bindify_appliance.services.registry import ServiceRegistry

__all__ = [
    "MAX_LABEL",
    "CreatedConnection",
    "check_key_storage_mode",
    "connection_secret_url",
    "create_connection",
    "normalize_label",
    "rotate_credentials",
]

MAX_LABEL: Final = 100
DEFAULT_MODE: Final = "zero_knowledge"
_ROTATE_ATTEMPTS: Final = 3


@dataclass(frozen=True, repr=False)
class CreatedConnection:
    """The new row and the secrets shown once (never stored, never logged)."""

    connection: Connection
    credentials: Credentials
    secret_url: str
    api_key: str

    def __repr__(self) -> str:
        return f"CreatedConnection(connection_id={self.connection.id!r}, secrets=<hidden>)"


def normalize_label(value: object) -> str:
    """A label trimmed to 1-100 characters without control characters; 400 otherwise."""
    if not isinstance(value, str):
        raise InvalidRequest("label must be a string", field="label")
    label = value.strip()
    if not 1 <= len(label) <= MAX_LABEL:
        raise InvalidRequest(
            f"label must be 1-{MAX_LABEL} characters after trimming", field="label"
        )
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in label):
        raise InvalidRequest("label must not contain control characters", field="label")
    return label


def check_key_storage_mode(value: object) -> str:
    """`zero_knowledge` (also for None) or `managed`; anything else is 400."""
    if value is None:
        return DEFAULT_MODE
    if not isinstance(value, str) or value not in KEY_STORAGE_MODES:
        raise InvalidRequest(
            "key_storage_mode must be 'zero_knowledge' or 'managed'", field="key_storage_mode"
        )
    return value


def connection_secret_url(base_url: str, service: ServiceDefinition, creds: Credentials) -> str:
    """The secret URL: `/mcp/{service}/{credentials}`, plus `/sse` for legacy-SSE services."""
    url = secret_url(base_url, service.id, creds)
    return url + "/sse" if service.transport == "sse" else url


def _check_mode_and_application(
    service: ServiceDefinition, auth_type: str, auth_mode: object, application: object
) -> tuple[str | None, str | None]:
    api = service.api_key if auth_type == "api_key" else None
    if auth_mode is not None:
        if api is None or not api.auth_modes:
            raise InvalidRequest("this service has no auth modes", field="auth_mode")
        if not isinstance(auth_mode, str) or api.mode(auth_mode) is None:
            raise InvalidRequest("unknown auth_mode for this service", field="auth_mode")
    if application is not None:
        if api is None or not api.applications:
            raise InvalidRequest("this service has no applications", field="application")
        if not isinstance(application, str) or application not in {a.id for a in api.applications}:
            raise InvalidRequest("unknown application for this service", field="application")
    return auth_mode, application


def _expiry(payload: Mapping[str, Any]) -> datetime | None:
    expires = payload.get("expires_at")
    if expires is None:
        return None
    try:
        return datetime.fromtimestamp(float(expires), UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidRequest("expires_at is out of range", field="expires_at") from None


async def create_connection(
    ctx: AppContext,
    *,
    user_id: str,
    service: ServiceDefinition,
    auth_type: str,
    payload: Mapping[str, Any] | None = None,
    key_storage_mode: object = None,
    label: object = None,
    auth_mode: object = None,
    application: object = None,
    replace: str | None = None,
) -> CreatedConnection:
    """Create a connection for `user_id` and return it with its secrets (shown once).

    Raises:
        HTTPFacingError: 400 for a bad mode, label, auth type, auth mode, application or
            payload (field named); 404 when `replace` is not one of the user's connections.
    """
    mode = check_key_storage_mode(key_storage_mode)
    if not service.supports(auth_type):
        raise InvalidRequest("this service does not support that auth type", field="auth_type")
    checked_label = None if label is None else normalize_label(label)
    checked_mode, checked_app = _check_mode_and_application(
        service, auth_type, auth_mode, application
    )
    clean = check_payload(auth_type, payload)
    expires = _expiry(clean) if auth_type == "oauth" else None
    if replace is None:  # replacing never needs a free slot (DESIGN §11)
        await check_allowance(ctx, user_id)

    now = ctx.clock.now()
    connection_id = new_id()
    creds = generate_credentials()
    blob, fingerprint = seal_payload(
        connection_id, mode, clean, creds=creds, keyring=ctx.keys.keyring
    )
    new = rows.NewConnection(
        id=connection_id,
        user_id=user_id,
        service=service.id,
        auth_type=auth_type,
        key_storage_mode=mode,
        secret1_hash=secret1_lookup_hash(creds),
        secret2_verifier=secret2_verifier(creds) if mode == "managed" else None,
        encrypted_tokens=blob,
        key_fingerprint=fingerprint,
        label=checked_label,
        auth_mode=checked_mode,
        application=checked_app,
        token_expires_at=expires,
        # A managed OAuth connection was just issued its tokens: no immediate background refresh.
        last_refreshed_at=now if auth_type == "oauth" and mode == "managed" else None,
    )
    try:
        insert = functools.partial(
            rows.insert_connection, new, now=now, default_label=service.name, replace_id=replace
        )
        row = await ctx.store.run(insert)
        await audit.record(
            ctx,
            audit.user(user_id),
            "connection.create",
            audit.Target("connection", row.id),
            detail={"service": service.id, "mode": mode, "replaced": replace},
        )
    except NotFoundError:
        raise NotFound("the connection to replace was not found", field="replace") from None
    return CreatedConnection(
        connection=row,
        credentials=creds,
        secret_url=connection_secret_url(ctx.settings.base_url, service, creds),
        api_key=format_api_key(creds),
    )


async def rotate_credentials(
    ctx: AppContext,
    registry: ServiceRegistry,
    connection_id: str,
    *,
    user_id: str | None,
    current: Credentials | None = None,
) -> CreatedConnection:
    """Give a connection new credentials; the old URL and API key stop working at once.

    `current` (the credentials in use) is required for zero-knowledge connections and, when
    given for a managed one, must match too.

    Raises:
        HTTPFacingError: 404 unknown connection (or not `user_id`'s); 409 `conflict` when a
            zero-knowledge connection is rotated without credentials, or the row kept changing;
            400 (field `credentials`) when the given credentials are not this connection's.
    """
    keyring = ctx.keys.keyring
    for _attempt in range(_ROTATE_ATTEMPTS):
        row = await ctx.store.run(rows.get_connection, connection_id, user_id)
        if row is None:
            raise NotFound("connection not found")
        if current is not None and not credentials_match(row, current):
            raise InvalidRequest(
                "these credentials do not belong to this connection", field="credentials"
            )
        new_creds = generate_credentials()
        if row.key_storage_mode == "zero_knowledge":
            if current is None:
                raise Conflict(
                    "zero-knowledge connections must send their current credentials "
                    '({"credentials": "…"} or {"api_key": "bnd_…"}) to get a new URL'
                )
            try:
                payload = open_payload(row, current, keyring)
            except DecryptError:
                raise InvalidRequest(
                    "these credentials do not unlock this connection", field="credentials"
                ) from None
            blob, fingerprint = seal_payload(
                row.id, "zero_knowledge", payload, creds=new_creds, keyring=keyring
            )
            verifier: str | None = None
        else:
            # The managed blob is bound to the row and the master key, not to the credentials.
            if not row.encrypted_tokens:
                raise Conflict("connection has no stored credential")
            blob, fingerprint = row.encrypted_tokens, row.key_fingerprint
            verifier = secret2_verifier(new_creds)
        write = functools.partial(
            rows.replace_credentials,
            row.id,
            expected_generation=row.token_generation,
            secret1_hash=secret1_lookup_hash(new_creds),
            secret2_verifier=verifier,
            encrypted_tokens=blob,
            key_fingerprint=fingerprint,
            now=ctx.clock.now(),
        )
        won = await ctx.store.run(write)
        if not won:
            continue  # a refresh or key rotation wrote first: re-read and try again
        fresh = await ctx.store.run(rows.get_connection, connection_id, None)
        service = await registry.get(row.service)
        base = ctx.settings.base_url
        url = (
            connection_secret_url(base, service, new_creds)
            if service is not None
            else secret_url(base, row.service, new_creds)
        )
        return CreatedConnection(
            connection=fresh or row,
            credentials=new_creds,
            secret_url=url,
            api_key=format_api_key(new_creds),
        )
    raise Conflict("the connection changed while rotating its URL; try again")
