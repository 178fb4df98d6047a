"""Sealing: key derivation, blob layout, round trips and every way a blob can fail to open."""

from __future__ import annotations

import base64
import secrets
import string
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from bindify_appliance.crypto import (
    CredentialFormatError,
    DecryptError,
    dump_payload,
    generate_credentials,
    load_payload,
    managed_key,
    open_json,
    open_sealed,
    seal,
    seal_json,
    zero_knowledge_key,
)

KEY = bytes(range(32))
ROW = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
FIELD = "tokens"
SENTINEL = b"SENTINEL-access-token-value-0123456789"
TOKENS = {
    "access_token": "at-" + "x" * 40,
    "refresh_token": "rt-" + "y" * 40,
    "expires_at": "2026-11-29T10:00:00Z",
}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def raw_of(blob: str) -> bytes:
    body = blob.removeprefix("v1:")
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def documented_aad(row: str, field: str) -> bytes:
    """The associated data exactly as sealing.py's docstring describes it."""
    row_b, field_b = row.encode(), field.encode()
    return (
        b"bindify-seal-v1\x00"
        + len(row_b).to_bytes(4, "big")
        + row_b
        + len(field_b).to_bytes(4, "big")
        + field_b
    )


def refuse(blob: str, *, key: bytes = KEY, row: str = ROW, field: str = FIELD) -> str:
    """Opening must raise exactly DecryptError whose message shows neither blob nor plaintext."""
    with pytest.raises(DecryptError) as info:
        open_sealed(key, blob, row=row, field=field)
    assert type(info.value) is DecryptError
    message = str(info.value)
    assert SENTINEL.decode() not in message
    body = blob.removeprefix("v1:") if isinstance(blob, str) else ""
    if len(body) >= 8:
        assert body[:8] not in message and body[-8:] not in message
    return message


# --- key derivation ------------------------------------------------------------------------


def test_zero_knowledge_key_is_deterministic_and_per_secret() -> None:
    one, two = generate_credentials(), generate_credentials()
    assert zero_knowledge_key(one.secret2_b64) == zero_knowledge_key(one.secret2_b64)
    assert zero_knowledge_key(one.secret2_b64) != zero_knowledge_key(two.secret2_b64)
    assert len(zero_knowledge_key(one.secret2_b64)) == 32


@pytest.mark.parametrize(
    "wrong",
    [
        "",
        "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg",  # 42
        "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIA",  # 44
        "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=",  # padding in place of a character
        "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg\uff29",
    ],
)
def test_zero_knowledge_key_refuses_anything_but_43_base64url_chars(wrong: str) -> None:
    with pytest.raises(CredentialFormatError):
        zero_knowledge_key(wrong)


def test_zero_knowledge_key_refuses_the_whole_credentials_string() -> None:
    # The likeliest mistake: passing the 86-char credentials instead of secret2's text.
    with pytest.raises(CredentialFormatError):
        zero_knowledge_key(generate_credentials().text)


def test_managed_key_depends_on_master_key_and_connection() -> None:
    base = managed_key("master-a", "conn-1")
    assert managed_key("master-a", "conn-1") == base
    assert managed_key("master-b", "conn-1") != base
    assert managed_key("master-a", "conn-2") != base
    assert len(base) == 32


@pytest.mark.parametrize(("master", "conn"), [("", "conn-1"), ("master", "")])
def test_managed_key_refuses_empty_inputs(master: str, conn: str) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        managed_key(master, conn)


# --- layout and round trips ----------------------------------------------------------------


def test_blob_layout_and_documented_associated_data() -> None:
    blob = seal(KEY, SENTINEL, row=ROW, field=FIELD)
    assert blob.startswith("v1:")
    assert "=" not in blob
    body = blob[3:]
    assert set(body) <= set(string.ascii_letters + string.digits + "-_")
    raw = raw_of(blob)
    assert len(raw) == 12 + len(SENTINEL) + 16
    # Independent decryption with the documented layout pins the format for stored rows.
    assert AESGCM(KEY).decrypt(raw[:12], raw[12:], documented_aad(ROW, FIELD)) == SENTINEL
    assert SENTINEL not in raw


def test_each_seal_uses_a_fresh_iv() -> None:
    blobs = {seal(KEY, SENTINEL, row=ROW, field=FIELD) for _ in range(20)}
    assert len(blobs) == 20
    assert len({raw_of(blob)[:12] for blob in blobs}) == 20


def test_zero_knowledge_round_trip() -> None:
    creds = generate_credentials()
    blob = seal_json(zero_knowledge_key(creds.secret2_b64), TOKENS, row=ROW, field=FIELD)
    # Only the credentials (re-derived on a later request) open it.
    assert open_json(zero_knowledge_key(creds.secret2_b64), blob, row=ROW, field=FIELD) == TOKENS
    other = generate_credentials()
    refuse(blob, key=zero_knowledge_key(other.secret2_b64))


def test_managed_round_trip() -> None:
    key = managed_key("a" * 64, ROW)
    blob = seal_json(key, {"api_key": "sk-live-123"}, row=ROW, field="api_key")
    assert open_json(managed_key("a" * 64, ROW), blob, row=ROW, field="api_key") == {
        "api_key": "sk-live-123"
    }


def test_empty_and_large_plaintexts_round_trip() -> None:
    for plaintext in (b"", b"\x00", secrets.token_bytes(100_000)):
        blob = seal(KEY, plaintext, row=ROW, field=FIELD)
        assert open_sealed(KEY, blob, row=ROW, field=FIELD) == plaintext


@given(
    st.binary(max_size=512),
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=20),
)
def test_property_round_trip(plaintext: bytes, row: str, field: str) -> None:
    blob = seal(KEY, plaintext, row=row, field=field)
    assert open_sealed(KEY, blob, row=row, field=field) == plaintext


def test_payload_helpers() -> None:
    assert load_payload(dump_payload(TOKENS)) == TOKENS
    assert dump_payload({"api_key": "k\u00e9"}) == '{"api_key":"k\u00e9"}'.encode()


# --- failures: every one is DecryptError ---------------------------------------------------


def test_flipping_any_bit_anywhere_fails() -> None:
    blob = seal(KEY, SENTINEL, row=ROW, field=FIELD)
    raw = raw_of(blob)
    for index in range(len(raw)):  # IV: 0..11, ciphertext, tag: last 16
        for bit in range(8):
            tampered = bytearray(raw)
            tampered[index] ^= 1 << bit
            message = refuse("v1:" + b64url(bytes(tampered)))
            assert "failed authentication" in message


@pytest.mark.parametrize("where", ["iv", "ciphertext", "tag"])
def test_tampered_regions(where: str) -> None:
    raw = bytearray(raw_of(seal(KEY, SENTINEL, row=ROW, field=FIELD)))
    index = {"iv": 5, "ciphertext": 12 + 3, "tag": len(raw) - 1}[where]
    raw[index] ^= 0x80
    refuse("v1:" + b64url(bytes(raw)))


def test_swapped_tag_or_iv_from_another_blob_fails() -> None:
    one = raw_of(seal(KEY, SENTINEL, row=ROW, field=FIELD))
    two = raw_of(seal(KEY, SENTINEL, row=ROW, field=FIELD))
    refuse("v1:" + b64url(two[:12] + one[12:]))
    refuse("v1:" + b64url(one[:-16] + two[-16:]))


@pytest.mark.parametrize("prefix", ["", "v2:", "V1:", "v1", "v0:", "v1::", " v1:", "x"])
def test_wrong_version_prefix_fails(prefix: str) -> None:
    body = seal(KEY, SENTINEL, row=ROW, field=FIELD)[3:]
    refuse(prefix + body)


def test_hosted_style_blob_without_version_fails() -> None:
    # The hosted layout: standard base64 of IV ‖ ct ‖ tag, no prefix, no associated data.
    iv = secrets.token_bytes(12)
    hosted = base64.b64encode(iv + AESGCM(KEY).encrypt(iv, SENTINEL, None)).decode()
    refuse(hosted)
    refuse("v1:" + hosted.rstrip("="))


def test_truncated_blobs_fail() -> None:
    blob = seal(KEY, SENTINEL, row=ROW, field=FIELD)
    raw = raw_of(blob)
    for cut in (1, 2, 3, 4, 10, len(blob) // 2, len(blob) - 4):
        refuse(blob[:-cut])
    assert "too short" in refuse("v1:")
    assert "too short" in refuse("v1:" + b64url(raw[:27]))
    refuse("v1:" + b64url(raw[:28]))  # long enough, but the tag is wrong
    refuse("v1:" + b64url(raw[:-1]))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda body: body + "=",
        lambda body: body + "==",
        lambda body: body[:10] + "+" + body[11:],
        lambda body: body[:10] + "/" + body[11:],
        lambda body: body[:10] + " " + body[10:],
        lambda body: body + "\n",
        lambda body: body[:10] + "\uff21" + body[11:],
        lambda body: body[:10] + "." + body[11:],
        lambda body: body + "A",  # a length no base64 text can have (4n + 1)
    ],
)
def test_bad_base64_fails(mangle: Callable[[str], str]) -> None:
    body = seal(KEY, SENTINEL, row=ROW, field=FIELD)[3:]
    refuse("v1:" + mangle(body))


@pytest.mark.parametrize(("plaintext", "length", "spare"), [(b"abc", 42, 4), (b"abcd", 43, 2)])
def test_non_canonical_base64_fails(plaintext: bytes, length: int, spare: int) -> None:
    # 31 bytes encode to 42 characters (4 spare bits in the last), 32 bytes to 43 (2 spare).
    # Setting a spare bit leaves the decoded bytes unchanged: only the canonical check refuses.
    body = seal(KEY, plaintext, row=ROW, field=FIELD)[3:]
    assert len(body) == length
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    for bit in range(spare):
        tweaked = body[:-1] + alphabet[alphabet.index(body[-1]) ^ (1 << bit)]
        assert raw_of("v1:" + tweaked) == raw_of("v1:" + body)
        assert "canonical" in refuse("v1:" + tweaked)


def test_wrong_key_fails() -> None:
    blob = seal(KEY, SENTINEL, row=ROW, field=FIELD)
    refuse(blob, key=secrets.token_bytes(32))
    refuse(blob, key=managed_key("m", ROW))


def test_wrong_row_or_field_fails() -> None:
    blob = seal(KEY, SENTINEL, row=ROW, field=FIELD)
    assert open_sealed(KEY, blob, row=ROW, field=FIELD) == SENTINEL
    refuse(blob, row="6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5e")
    refuse(blob, field="dcr_registration")
    refuse(blob, row=FIELD, field=ROW)


@pytest.mark.parametrize(
    ("sealed_as", "opened_as"),
    [
        (("a", "bc"), ("ab", "c")),
        (("ab", "c"), ("a", "bc")),
        (("a\x00", "b"), ("a", "\x00b")),
        (("a:b", "c"), ("a", "b:c")),
    ],
)
def test_row_and_field_boundaries_are_unambiguous(
    sealed_as: tuple[str, str], opened_as: tuple[str, str]
) -> None:
    blob = seal(KEY, SENTINEL, row=sealed_as[0], field=sealed_as[1])
    refuse(blob, row=opened_as[0], field=opened_as[1])


def test_non_text_blob_fails() -> None:
    refuse(b"v1:AAAA")  # type: ignore[arg-type]
    refuse(None)  # type: ignore[arg-type]


def test_open_json_refuses_non_object_plaintexts() -> None:
    for plaintext in (b"not json " + SENTINEL, b"[1, 2]", b'"text"', b"\xff\xfe", b""):
        blob = seal(KEY, plaintext, row=ROW, field=FIELD)
        with pytest.raises(DecryptError) as info:
            open_json(KEY, blob, row=ROW, field=FIELD)
        assert type(info.value) is DecryptError
        assert SENTINEL.decode() not in str(info.value)
        # Nothing from the json module (which may quote the document) is attached.
        assert info.value.__cause__ is None
        assert info.value.__context__ is None or info.value.__suppress_context__


def test_decrypt_error_does_not_chain_library_exceptions() -> None:
    blob = seal(KEY, SENTINEL, row=ROW, field=FIELD)
    with pytest.raises(DecryptError) as info:
        open_sealed(KEY, blob, row=ROW, field="other")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


# --- caller bugs are ValueError, not DecryptError ------------------------------------------


@pytest.mark.parametrize("bad_key", [b"", b"\x00" * 16, b"\x00" * 33])
def test_wrong_key_length_is_a_caller_bug(bad_key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        seal(bad_key, SENTINEL, row=ROW, field=FIELD)
    blob = seal(KEY, SENTINEL, row=ROW, field=FIELD)
    with pytest.raises(ValueError, match="32 bytes"):
        open_sealed(bad_key, blob, row=ROW, field=FIELD)


@pytest.mark.parametrize(("row", "field"), [("", FIELD), (ROW, "")])
def test_empty_row_or_field_is_a_caller_bug(row: str, field: str) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        seal(KEY, SENTINEL, row=row, field=field)
