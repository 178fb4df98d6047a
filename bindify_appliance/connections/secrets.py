"""A connection's sealed upstream secret: its shape, sealing, opening and re-sealing.

The payload is a small JSON object: OAuth `{"access_token", "refresh_token", "expires_at"}`
(expiry in unix seconds, or null), API key `{"api_key"}`, auth none `{}`. It is always sealed —
even the empty one — with row = connection id and field = `encrypted_tokens`, so:
- a blob copied to another row or column fails to open;
- for zero-knowledge connections the GCM tag authenticates secret2 (the key comes from it): a
  wrong second half never opens the blob, whatever the auth type;
- managed blobs are sealed under the active master key's per-connection key, whose fingerprint is
  stored beside them.

Invariants:
- No function here logs, and no exception message carries a payload value or a credential.
- Secrets that will become header values are refused if they contain control characters
  (CR/LF would split headers upstream).
"""

from __future__ import annotations

import hmac
import math
import re
from collections.abc import Mapping
from typing import Any, Final, Protocol

from bindify_appliance.crypto.credentials import (
    Credentials,
    parse_api_key,
    parse_credentials,
    secret1_lookup_hash,
    verify_secret2,
)
from bindify_appliance.crypto.keyring import Keyring, open_managed, seal_managed
from bindify_appliance.crypto.sealing import (
    dump_payload,
    load_payload,
    open_json,
    seal_json,
    zero_knowledge_key,
)
from bindify_appliance.errors import (
    CredentialFormatError,
    DecryptError,
    InvalidRequest,
)

__all__ = [
    "PAYLOAD_FIELD",
    "SealedRow",
    "check_payload",
    "credentials_match",
    "open_payload",
    "parse_presented_credentials",
    "payload_secret",
    "reseal_payload",
    "seal_payload",
]

PAYLOAD_FIELD: Final = "encrypted_tokens"
MAX_SECRET: Final = 16_384
_SCALARS = (str, int, float, bool, type(None))
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class SealedRow(Protocol):
    """What opening needs from a row (`Connection` or `ConnectionAuth`)."""

    @property
    def id(self) -> str: ...
    @property
    def key_storage_mode(self) -> str: ...
    @property
    def encrypted_tokens(self) -> str | None: ...
    @property
    def key_fingerprint(self) -> str: ...


class _RowWithHashes(SealedRow, Protocol):
    @property
    def secret1_hash(self) -> str: ...
    @property
    def secret2_verifier(self) -> str | None: ...


def _header_safe(value: str) -> bool:
    # A regex scan: this runs on every proxied request, where a per-character loop showed up.
    return 0 < len(value) <= MAX_SECRET and _CONTROL.search(value) is None


def check_payload(auth_type: str, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate and normalise a payload for `auth_type`; `HTTPFacingError` 400 if it is wrong."""
    if auth_type == "none":
        if payload:
            raise InvalidRequest("this service takes no credential", field="api_key")
        return {}
    if not isinstance(payload, Mapping):
        raise InvalidRequest(
            "a credential is required", field="api_key" if auth_type == "api_key" else "payload"
        )
    if auth_type == "api_key":
        extra = set(payload) - {"api_key"}
        key = payload.get("api_key")
        if extra or not isinstance(key, str) or not _header_safe(key.strip()):
            raise InvalidRequest(
                "api_key must be a non-empty string without control characters", field="api_key"
            )
        return {"api_key": key.strip()}
    if auth_type != "oauth":
        raise InvalidRequest(
            "auth_type must be one of 'oauth', 'api_key', 'none'", field="auth_type"
        )
    token = payload.get("access_token")
    if not isinstance(token, str) or not _header_safe(token):
        raise InvalidRequest("access_token must be a non-empty string", field="access_token")
    refresh = payload.get("refresh_token") or ""
    if not isinstance(refresh, str) or (refresh and not _header_safe(refresh)):
        raise InvalidRequest("refresh_token must be a string", field="refresh_token")
    expires = payload.get("expires_at")
    if expires is not None and (
        isinstance(expires, bool)
        or not isinstance(expires, int | float)
        or not math.isfinite(expires)
        or expires <= 0
    ):
        raise InvalidRequest("expires_at must be unix seconds or null", field="expires_at")
    out: dict[str, Any] = dict(payload)
    for name, value in out.items():
        if not isinstance(name, str) or not isinstance(value, _SCALARS):
            raise InvalidRequest(
                "token fields must be strings, numbers, booleans or null", field="payload"
            )
    out.update(access_token=token, refresh_token=refresh, expires_at=expires)
    return out


def payload_secret(auth_type: str, payload: Mapping[str, Any]) -> str | None:
    """The value injected upstream (access token or API key); None for auth none.

    `DecryptError` when an opened payload does not have the shape its auth type needs.
    """
    if auth_type == "none":
        return None
    name = "access_token" if auth_type == "oauth" else "api_key"
    value = payload.get(name)
    if not isinstance(value, str) or not _header_safe(value):
        raise DecryptError(f"sealed payload has no usable {name}")
    return value


def seal_payload(
    connection_id: str,
    key_storage_mode: str,
    payload: Mapping[str, Any],
    *,
    creds: Credentials | None,
    keyring: Keyring,
) -> tuple[str, str]:
    """Seal `payload` for a connection; returns (blob, key fingerprint — "" for zero-knowledge)."""
    if key_storage_mode == "zero_knowledge":
        if creds is None:
            raise ValueError("zero-knowledge sealing needs the connection's credentials")
        key = zero_knowledge_key(creds.secret2_b64)
        return seal_json(key, payload, row=connection_id, field=PAYLOAD_FIELD), ""
    if key_storage_mode == "managed":
        return seal_managed(keyring, connection_id, dump_payload(payload), field=PAYLOAD_FIELD)
    raise ValueError("unknown key storage mode")


def open_payload(row: SealedRow, creds: Credentials | None, keyring: Keyring) -> dict[str, Any]:
    """Open a connection's payload.

    Zero-knowledge rows need `creds` (their secret2 is the key); managed rows open with the
    master key named by the stored fingerprint (`creds` unused).

    Raises:
        DecryptError: wrong secret2, wrong row/field, damaged blob, or no blob.
        KeyringError: the managed blob's master key is not in the keyring.
    """
    blob = row.encrypted_tokens
    if not blob:
        raise DecryptError("connection has no sealed payload")
    if row.key_storage_mode == "zero_knowledge":
        if creds is None:
            raise DecryptError("zero-knowledge payload needs the connection's credentials")
        key = zero_knowledge_key(creds.secret2_b64)
        return open_json(key, blob, row=row.id, field=PAYLOAD_FIELD)
    if row.key_storage_mode == "managed":
        plaintext = open_managed(keyring, row.key_fingerprint, row.id, blob, field=PAYLOAD_FIELD)
        return load_payload(plaintext)
    raise DecryptError("connection has an unknown key storage mode")


def reseal_payload(
    row: SealedRow,
    payload: Mapping[str, Any],
    creds: Credentials | None,
    keyring: Keyring,
) -> tuple[str, str]:
    """Seal a new payload for an existing row in its own mode (managed: the active key now).

    For refresh and key rotation; write the result with `store.connections.swap_tokens`.
    """
    return seal_payload(row.id, row.key_storage_mode, payload, creds=creds, keyring=keyring)


def credentials_match(row: _RowWithHashes, creds: Credentials) -> bool:
    """True when `creds` are this row's: secret1 hash, and secret2 (verifier or blob tag)."""
    if not hmac.compare_digest(secret1_lookup_hash(creds), row.secret1_hash):
        return False
    if row.key_storage_mode == "managed":
        return bool(row.secret2_verifier) and verify_secret2(creds, row.secret2_verifier or "")
    blob = row.encrypted_tokens
    if not blob:
        return False
    try:
        open_json(zero_knowledge_key(creds.secret2_b64), blob, row=row.id, field=PAYLOAD_FIELD)
    except DecryptError:
        return False
    return True


def parse_presented_credentials(credentials: object = None, api_key: object = None) -> Credentials:
    """Credentials sent in a body as `{"credentials": "<86>"}` or `{"api_key": "bnd_…"}`."""
    if (credentials is None) == (api_key is None):
        raise InvalidRequest("send exactly one of credentials or api_key", field="credentials")
    try:
        if credentials is not None:
            if not isinstance(credentials, str):
                raise CredentialFormatError("credentials must be text")
            return parse_credentials(credentials)
        if not isinstance(api_key, str):
            raise CredentialFormatError("API key must be text")
        return parse_api_key(api_key)[1]
    except CredentialFormatError as exc:
        # The parser's messages never contain the input.
        field = "credentials" if credentials is not None else "api_key"
        raise InvalidRequest(str(exc), field=field) from None
