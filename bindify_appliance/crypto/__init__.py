"""Pure cryptography of the appliance: credentials, sealing and master keys.

No I/O happens here (no files, environment or database); callers hand in text and get values or
one of `CredentialFormatError`, `DecryptError`, `KeyringError` back. See the submodules:
`credentials` (secret URLs, API keys, stored hashes), `sealing` (HKDF keys, AES-256-GCM blobs
bound to row and field), `keyring` (master keys, fingerprints, managed sealing).
"""

from __future__ import annotations

from bindify_appliance.crypto.credentials import (
    API_KEY_ENVS,
    CREDENTIALS_LENGTH,
    Credentials,
    format_api_key,
    generate_credentials,
    parse_api_key,
    parse_credentials,
    secret1_lookup_hash,
    secret2_verifier,
    secret_url,
    verify_secret2,
)
from bindify_appliance.crypto.keyring import (
    Keyring,
    MasterKey,
    dump_keyring_json,
    fingerprint,
    generate_master_key,
    open_managed,
    parse_keyring_json,
    seal_managed,
)
from bindify_appliance.crypto.sealing import (
    dump_payload,
    load_payload,
    managed_key,
    open_json,
    open_sealed,
    seal,
    seal_json,
    zero_knowledge_key,
)
from bindify_appliance.errors import CredentialFormatError, DecryptError, KeyringError

__all__ = [
    "API_KEY_ENVS",
    "CREDENTIALS_LENGTH",
    "CredentialFormatError",
    "Credentials",
    "DecryptError",
    "Keyring",
    "KeyringError",
    "MasterKey",
    "dump_keyring_json",
    "dump_payload",
    "fingerprint",
    "format_api_key",
    "generate_credentials",
    "generate_master_key",
    "load_payload",
    "managed_key",
    "open_json",
    "open_managed",
    "open_sealed",
    "parse_api_key",
    "parse_credentials",
    "parse_keyring_json",
    "seal",
    "seal_json",
    "seal_managed",
    "secret1_lookup_hash",
    "secret2_verifier",
    "secret_url",
    "verify_secret2",
    "zero_knowledge_key",
]
