"""Sealing: key derivation (HKDF-SHA256) and AES-256-GCM blobs bound to their row and field.

Key derivation follows reference/hosted-bindify.md §3.2 and §3.3 exactly, so the same inputs
give the same keys as the hosted worker (vectors in its Appendix B):
- zero-knowledge key: IKM = UTF-8 of the 43-char base64url *string* of secret2, salt
  `bindify-token-encryption`, empty info, 32 bytes;
- managed key: IKM = UTF-8 of the master key string, salt = UTF-8 of the connection id, info
  `bindify-managed-token-encryption`, 32 bytes.

Blob text form (ours, not the hosted one): `v1:` + base64url without padding of
IV(12 random bytes) ‖ ciphertext ‖ tag(16). The associated data is
`bindify-seal-v1\\0` ‖ len(row) ‖ row ‖ len(field) ‖ field (lengths as 4-byte big-endian counts of
UTF-8 bytes), so a blob copied to another row or field, or relabelled with another version, fails.

Invariants:
- `open_sealed` raises `DecryptError` and nothing else for every problem with the blob or the key
  material (bad version, bad base64, too short, wrong key, tampering, wrong row/field). Its messages
  name the kind of failure only: never the blob, the key or any partial plaintext.
- Caller bugs (a key that is not 32 bytes, an empty row or field) are `ValueError`, in both
  directions, because they are not properties of stored data.
- A fresh random IV per seal; keys here are per connection, so IV collisions need ~2^48 seals of one
  connection's data.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bindify_appliance.crypto.credentials import (
    b64url_decode_canonical,
    b64url_encode,
    b64url_invalid_chars,
)
from bindify_appliance.errors import CredentialFormatError, DecryptError

__all__ = [
    "BLOB_VERSION",
    "dump_payload",
    "load_payload",
    "managed_key",
    "open_json",
    "open_sealed",
    "seal",
    "seal_json",
    "zero_knowledge_key",
]

KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
BLOB_VERSION = "v1"
_PREFIX = BLOB_VERSION + ":"
_AAD_LABEL = b"bindify-seal-v1\x00"

_ZK_SALT = b"bindify-token-encryption"
_MANAGED_INFO = b"bindify-managed-token-encryption"
_SECRET2_LENGTH = 43

_AUTH_FAILED = "sealed blob failed authentication (wrong key, wrong row or field, or tampered)"


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    # An HKDF object is single-use, so each derivation builds its own.
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info).derive(ikm)


def zero_knowledge_key(secret2_b64: str) -> bytes:
    """The AES key a zero-knowledge connection's blob is sealed under, from secret2's text form.

    Takes the 43-char string (not the raw bytes) because that is what the hosted worker hashed;
    anything else is refused so a caller passing the wrong string cannot seal under a stray key.
    """
    if (
        not isinstance(secret2_b64, str)
        or len(secret2_b64) != _SECRET2_LENGTH
        or not secret2_b64.isascii()
        or b64url_invalid_chars(secret2_b64.encode("ascii"))
    ):
        raise CredentialFormatError(f"secret2 must be {_SECRET2_LENGTH} base64url characters")
    return _hkdf(secret2_b64.encode("ascii"), _ZK_SALT, b"")


def managed_key(master_key: str, connection_id: str) -> bytes:
    """The AES key for one managed connection: HKDF(master key text, salt = connection id)."""
    if not master_key:
        raise ValueError("master key must be a non-empty string")
    if not connection_id:
        raise ValueError("connection id must be a non-empty string")
    return _hkdf(master_key.encode("utf-8"), connection_id.encode("utf-8"), _MANAGED_INFO)


def _aad(row: str, field: str) -> bytes:
    if not row or not field:
        raise ValueError("row and field must be non-empty strings")
    row_b, field_b = row.encode("utf-8"), field.encode("utf-8")
    return b"".join(
        (
            _AAD_LABEL,
            len(row_b).to_bytes(4, "big"),
            row_b,
            len(field_b).to_bytes(4, "big"),
            field_b,
        )
    )


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError(f"key must be {KEY_BYTES} bytes")


def seal(key: bytes, plaintext: bytes, *, row: str, field: str) -> str:
    """Encrypt `plaintext` under `key`, bound to (row, field); returns the `v1:` text form."""
    _check_key(key)
    iv = secrets.token_bytes(IV_BYTES)
    sealed = AESGCM(key).encrypt(iv, plaintext, _aad(row, field))
    return _PREFIX + b64url_encode(iv + sealed)


def _decode_blob(blob: object) -> bytes:
    if not isinstance(blob, str) or not blob.startswith(_PREFIX):
        raise DecryptError("sealed blob has a missing or unsupported version")
    body = blob[len(_PREFIX) :]
    if not body.isascii():
        raise DecryptError("sealed blob is not valid base64url")
    raw = body.encode("ascii")
    if b64url_invalid_chars(raw):
        raise DecryptError("sealed blob is not valid base64url")
    # One spelling per blob: an impossible length or non-zero spare bits are refused.
    decoded = b64url_decode_canonical(raw)
    if decoded is None:
        raise DecryptError("sealed blob is not canonical base64url")
    if len(decoded) < IV_BYTES + TAG_BYTES:
        raise DecryptError("sealed blob is too short")
    return decoded


def open_sealed(key: bytes, blob: str, *, row: str, field: str) -> bytes:
    """Decrypt a `seal` blob; `DecryptError` on any failure, never partial plaintext."""
    _check_key(key)
    aad = _aad(row, field)
    decoded = _decode_blob(blob)
    try:
        return AESGCM(key).decrypt(decoded[:IV_BYTES], decoded[IV_BYTES:], aad)
    except InvalidTag:
        raise DecryptError(_AUTH_FAILED) from None


def dump_payload(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a dict payload (tokens, api keys, registrations)."""
    return json.dumps(dict(payload), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def load_payload(plaintext: bytes) -> dict[str, Any]:
    """Inverse of `dump_payload`; a plaintext that is not a JSON object is a `DecryptError`."""
    try:
        value = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        # The json error message could quote part of the plaintext: drop it.
        raise DecryptError("sealed payload is not valid JSON") from None
    if not isinstance(value, dict):
        raise DecryptError("sealed payload is not a JSON object")
    return value


def seal_json(key: bytes, payload: Mapping[str, Any], *, row: str, field: str) -> str:
    """`seal` of a dict payload such as `{"access_token", "refresh_token", "expires_at"}`."""
    return seal(key, dump_payload(payload), row=row, field=field)


def open_json(key: bytes, blob: str, *, row: str, field: str) -> dict[str, Any]:
    """`open_sealed` then JSON-decode; `DecryptError` if either fails."""
    return load_payload(open_sealed(key, blob, row=row, field=field))
