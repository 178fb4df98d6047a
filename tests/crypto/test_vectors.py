"""Appendix B of reference/hosted-bindify.md, exactly, plus the appliance's own pinned values.

The Appendix B values make the same inputs give the same keys as the hosted worker. The lookup-hash
and verifier values are ours; they are pinned because stored rows depend on them: changing the
construction would orphan every connection.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from bindify_appliance.crypto import (
    Credentials,
    fingerprint,
    managed_key,
    parse_credentials,
    secret1_lookup_hash,
    secret2_verifier,
    zero_knowledge_key,
)

VECTOR_CREDENTIALS = (
    "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQECAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg"
)
VECTOR_SECRET1 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"
VECTOR_SECRET2 = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI"


@pytest.mark.parametrize(
    ("master_key", "expected"),
    [
        ("a" * 64, "ffe054fe7ae0cb6d"),
        ("test-master-key-0123456789abcdef0123456789abcdef", "e74b8cad096e209f"),
        ("0" * 64, "60e05bd1b195af2f"),
    ],
)
def test_fingerprint_vectors(master_key: str, expected: str) -> None:
    assert fingerprint(master_key) == expected


def test_managed_key_vector() -> None:
    key = managed_key("test-master-key-abcdef1234567890", "conn-123")
    assert key.hex() == "2909278dc45364f21a60cc3f0dd60e6810f8c163475cae3ab855f3ff6c4880e8"


def test_credentials_vector() -> None:
    creds = Credentials(b"\x01" * 32, b"\x02" * 32)
    assert len(VECTOR_CREDENTIALS) == 86
    assert creds.text == VECTOR_CREDENTIALS
    assert creds.secret1_b64 == VECTOR_SECRET1
    assert creds.secret2_b64 == VECTOR_SECRET2


def test_credentials_vector_parses_back() -> None:
    creds = parse_credentials(VECTOR_CREDENTIALS)
    assert creds.secret1 == b"\x01" * 32
    assert creds.secret2 == b"\x02" * 32


def test_zero_knowledge_key_vector() -> None:
    key = zero_knowledge_key(VECTOR_SECRET2)
    assert key.hex() == "1f64754e120b8b4c1a5e183310d5a82a1883eb21e3c8d01f379e6282ccdd3b66"


def test_zero_knowledge_key_uses_the_text_not_the_raw_bytes() -> None:
    # The hosted worker hashed the 43-char string; a raw-bytes derivation would differ.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    raw = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"bindify-token-encryption", info=b""
    ).derive(b"\x02" * 32)
    assert zero_knowledge_key(VECTOR_SECRET2) != raw


def test_lookup_hash_and_verifier_pinned() -> None:
    creds = Credentials(b"\x01" * 32, b"\x02" * 32)
    assert secret1_lookup_hash(creds) == (
        "25b517d2de954771ad5c114dfe7d37c264af045f93344d2228920de5b4db79b1"
    )
    assert secret2_verifier(creds) == (
        "5959e6b7746c99c71a9d9d8d887d11710a89fd188584eb27ddd7c7f6319e2051"
    )
    # Independently: SHA-256 over the documented prefix and the raw secret bytes.
    assert (
        secret1_lookup_hash(creds)
        == hashlib.sha256(
            b"bindify-appliance/secret1-lookup/v1\x00"
            + base64.urlsafe_b64decode(VECTOR_SECRET1 + "=")
        ).hexdigest()
    )
