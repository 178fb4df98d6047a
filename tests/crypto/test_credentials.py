"""Credentials: generation, strict parsing, secret URLs, API keys, stored hashes."""

from __future__ import annotations

import hashlib
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bindify_appliance.crypto import (
    API_KEY_ENVS,
    CredentialFormatError,
    Credentials,
    format_api_key,
    generate_credentials,
    managed_key,
    parse_api_key,
    parse_credentials,
    secret1_lookup_hash,
    secret2_verifier,
    secret_url,
    verify_secret2,
    zero_knowledge_key,
)

B64URL = string.ascii_letters + string.digits + "-_"
VECTOR = Credentials(b"\x01" * 32, b"\x02" * 32)
VECTOR_TEXT = VECTOR.text  # ends in "g"; contains neither "-" nor "_"
# Credentials whose text contains '-' and '_' (0xfb 0xff... encode to those characters).
DASHY = Credentials(b"\xfb\xff" * 16, b"\xff\xfb" * 16)

secret_bytes = st.binary(min_size=32, max_size=32)
credentials = st.builds(Credentials, secret_bytes, secret_bytes)


def assert_no_leak(message: str, text: str) -> None:
    """No 8-character run of the input may appear in the message."""
    for start in range(max(0, len(text) - 7)):
        assert text[start : start + 8] not in message


def refuse(text: str, expected: str) -> str:
    with pytest.raises(CredentialFormatError) as info:
        parse_credentials(text)
    message = str(info.value)
    assert expected in message
    assert_no_leak(message, text)
    return message


# --- the Credentials value -----------------------------------------------------------------


def test_generate_credentials_is_random_and_well_formed() -> None:
    first, second = generate_credentials(), generate_credentials()
    assert first != second
    assert len(first.secret1) == len(first.secret2) == 32
    assert first.secret1 != first.secret2
    assert len(first.text) == 86
    assert len(first.secret1_b64) == len(first.secret2_b64) == 43
    assert first.text.startswith(first.secret1_b64[:42])


def test_repr_and_str_hide_the_secrets() -> None:
    creds = generate_credentials()
    for shown in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert creds.secret1_b64[:10] not in shown
        assert creds.secret2_b64[:10] not in shown
        assert repr(creds.secret1) not in shown
        assert "hidden" in shown


@pytest.mark.parametrize(("s1", "s2"), [(b"\x01" * 31, b"\x02" * 32), (b"\x01" * 32, b"")])
def test_credentials_refuse_wrong_secret_lengths(s1: bytes, s2: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Credentials(s1, s2)


def test_equality_and_hash_follow_the_secrets() -> None:
    same = Credentials(b"\x01" * 32, b"\x02" * 32)
    assert same == VECTOR
    assert hash(same) == hash(VECTOR)
    assert Credentials(b"\x01" * 32, b"\x03" * 32) != VECTOR
    assert VECTOR.__eq__(VECTOR.text) is NotImplemented
    assert len({same, VECTOR}) == 1


def test_secret_url() -> None:
    expected = f"https://mcp.example.com/mcp/linear/{VECTOR_TEXT}"
    assert secret_url("https://mcp.example.com", "linear", VECTOR) == expected
    assert secret_url("https://mcp.example.com/", "linear", VECTOR) == expected
    assert secret_url("https://h/base/", "jira", VECTOR) == f"https://h/base/mcp/jira/{VECTOR_TEXT}"


# --- parse_credentials ---------------------------------------------------------------------


def test_parse_accepts_dash_and_underscore() -> None:
    assert "-" in DASHY.text and "_" in DASHY.text
    assert parse_credentials(DASHY.text) == DASHY


def test_parse_refuses_empty() -> None:
    refuse("", "empty")


@pytest.mark.parametrize("length", [1, 43, 85, 87, 88, 129, 172])
def test_parse_refuses_wrong_length(length: int) -> None:
    text = (VECTOR_TEXT * 3)[:length]
    message = refuse(text, "exactly 86 characters")
    assert f"got {length}" in message


@pytest.mark.parametrize(
    "text",
    [
        " " + VECTOR_TEXT,
        VECTOR_TEXT + "\n",
        VECTOR_TEXT[:40] + " " + VECTOR_TEXT[41:],
        VECTOR_TEXT[:40] + "\t" + VECTOR_TEXT[41:],
        VECTOR_TEXT[:85] + "\r",
    ],
)
def test_parse_refuses_whitespace(text: str) -> None:
    refuse(text, "whitespace")


@pytest.mark.parametrize("text", [VECTOR_TEXT + "==", VECTOR_TEXT[:84] + "==", "=" * 86])
def test_parse_refuses_padding(text: str) -> None:
    refuse(text, "padding")


@pytest.mark.parametrize(
    "text",
    [
        VECTOR_TEXT + "/sse",
        VECTOR_TEXT + "/",
        VECTOR_TEXT[:43] + "/" + VECTOR_TEXT[43:],
        "extra/" + VECTOR_TEXT,
    ],
)
def test_parse_refuses_extra_segments(text: str) -> None:
    refuse(text, "'/'")


def test_parse_refuses_standard_base64_alphabet() -> None:
    standard = DASHY.text.replace("-", "+").replace("_", "/")
    assert len(standard) == 86
    with pytest.raises(CredentialFormatError):
        parse_credentials(standard)
    refuse(DASHY.text.replace("-", "+"), "'+'")


@pytest.mark.parametrize("bad", ["!", ".", "%", "~", "*", "\x00", "\x7f", "\\"])
def test_parse_refuses_other_ascii(bad: str) -> None:
    refuse(VECTOR_TEXT[:10] + bad + VECTOR_TEXT[11:], "outside the base64url alphabet")


@pytest.mark.parametrize(
    "lookalike",
    [
        "\uff21",  # FULLWIDTH LATIN CAPITAL LETTER A
        "\uff51",  # FULLWIDTH LATIN SMALL LETTER Q
        "\uff10",  # FULLWIDTH DIGIT ZERO
        "\u0410",  # CYRILLIC CAPITAL LETTER A
        "\u0391",  # GREEK CAPITAL LETTER ALPHA
        "\u2010",  # HYPHEN
        "\u2011",  # NON-BREAKING HYPHEN
        "\uff3f",  # FULLWIDTH LOW LINE
        "\u00a0",  # NO-BREAK SPACE
    ],
)
def test_parse_refuses_unicode_lookalikes(lookalike: str) -> None:
    # Same length as a valid credential, so only the character itself can be refused.
    refuse(VECTOR_TEXT[:20] + lookalike + VECTOR_TEXT[21:], "non-ASCII")


def test_parse_refuses_lone_surrogates() -> None:
    refuse(VECTOR_TEXT[:20] + "\ud800" + VECTOR_TEXT[21:], "non-ASCII")
    with pytest.raises(CredentialFormatError, match="non-ASCII"):
        parse_api_key("bnd_live_" + VECTOR_TEXT[:85] + "\udfff")


def test_parse_refuses_zero_width_characters() -> None:
    refuse(VECTOR_TEXT[:20] + "\u200b" + VECTOR_TEXT[20:-1], "non-ASCII")
    refuse("\ufeff" + VECTOR_TEXT, "non-ASCII")


def test_parse_refuses_fully_fullwidth_credentials() -> None:
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in VECTOR_TEXT)
    refuse(fullwidth, "non-ASCII")


@pytest.mark.parametrize("last", [c for c in B64URL if c not in "AQgw"])
def test_parse_refuses_non_canonical_last_character(last: str) -> None:
    # The last character carries 2 data bits and 4 spare bits: only A, Q, g, w are canonical.
    refuse(VECTOR_TEXT[:85] + last, "not canonical")


@pytest.mark.parametrize("last", list("AQgw"))
def test_parse_accepts_every_canonical_last_character(last: str) -> None:
    assert parse_credentials(VECTOR_TEXT[:85] + last).text == VECTOR_TEXT[:85] + last


def test_parse_refuses_non_text() -> None:
    with pytest.raises(CredentialFormatError, match="text"):
        parse_credentials(VECTOR_TEXT.encode())  # type: ignore[arg-type]


@given(credentials)
def test_property_credentials_round_trip(creds: Credentials) -> None:
    text = creds.text
    assert len(text) == 86
    assert parse_credentials(text) == creds


@given(st.text())
def test_property_random_text_parses_only_when_well_formed(text: str) -> None:
    try:
        creds = parse_credentials(text)
    except CredentialFormatError:
        return
    assert creds.text == text


@given(st.text(alphabet=B64URL + "=+/ \n\uff21", min_size=84, max_size=88))
def test_property_near_valid_text_parses_only_when_canonical(text: str) -> None:
    try:
        creds = parse_credentials(text)
    except CredentialFormatError:
        return
    assert creds.text == text


# --- API keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "length"), [("live", 95), ("stg", 94), ("test", 95)])
def test_format_api_key(env: str, length: int) -> None:
    key = format_api_key(VECTOR, env)
    assert key == f"bnd_{env}_{VECTOR_TEXT}"
    assert len(key) == length


def test_format_api_key_defaults_to_live_and_refuses_other_tags() -> None:
    assert format_api_key(VECTOR).startswith("bnd_live_")
    with pytest.raises(ValueError, match="live, stg, test"):
        format_api_key(VECTOR, "prod")


@pytest.mark.parametrize(
    "scheme",
    ["", "Bearer ", "bearer ", "BEARER ", "bEaReR ", "Bearer   ", "Bearer\t", "Bearer \t "],
)
@pytest.mark.parametrize("env", API_KEY_ENVS)
def test_parse_api_key_accepts_scheme_variants(scheme: str, env: str) -> None:
    assert parse_api_key(f"{scheme}bnd_{env}_{VECTOR_TEXT}") == (env, VECTOR)


def test_parse_api_key_handles_underscores_in_credentials() -> None:
    assert parse_api_key(format_api_key(DASHY, "stg")) == ("stg", DASHY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty"),
        ("Bearer", "carries no API key"),
        ("bearer ", "carries no API key"),
        ("Bearer \t ", "carries no API key"),
        (f"bndpat_{VECTOR_TEXT[:43]}", "personal API tokens are for /api/v1, not MCP routes"),
        (
            f"Bearer bndpat_{VECTOR_TEXT[:43]}",
            "personal API tokens are for /api/v1, not MCP routes",
        ),
        (VECTOR_TEXT, "must start with 'bnd_'"),
        (f"live_{VECTOR_TEXT}", "must start with 'bnd_'"),
        (f"BND_live_{VECTOR_TEXT}", "must start with 'bnd_'"),
        (f"Bearerbnd_live_{VECTOR_TEXT}", "must start with 'bnd_'"),
        (f"Bearer Bearer bnd_live_{VECTOR_TEXT}", "must start with 'bnd_'"),
        (f"Basic bnd_live_{VECTOR_TEXT}", "unsupported Authorization scheme"),
        (f"Token {VECTOR_TEXT}", "unsupported Authorization scheme"),
        (f"bnd_{VECTOR_TEXT}", "no environment tag"),
        (f"bnd_prod_{VECTOR_TEXT}", "must be one of live, stg, test"),
        (f"bnd_LIVE_{VECTOR_TEXT}", "must be one of live, stg, test"),
        (f"bnd__{VECTOR_TEXT}", "must be one of live, stg, test"),
        ("bnd_live_", "API key credentials are empty"),
        (f"bnd_live_{VECTOR_TEXT[:85]}", "exactly 86 characters"),
        (f"bnd_live_{VECTOR_TEXT}A", "exactly 86 characters"),
        (f"bnd_live_{VECTOR_TEXT} ", "whitespace"),
        (f" bnd_live_{VECTOR_TEXT}", "must start with 'bnd_'"),
        (f"bnd_live_{VECTOR_TEXT}==", "padding"),
        (f"bnd_live_{VECTOR_TEXT[:85]}h", "not canonical"),
        (f"bnd_live_{VECTOR_TEXT[:20]}\uff21{VECTOR_TEXT[21:]}", "non-ASCII"),
    ],
)
def test_parse_api_key_refusals(text: str, expected: str) -> None:
    with pytest.raises(CredentialFormatError) as info:
        parse_api_key(text)
    message = str(info.value)
    assert expected in message
    assert_no_leak(message, text)


@given(credentials, st.sampled_from(API_KEY_ENVS), st.sampled_from(["", "Bearer ", "bearer  "]))
def test_property_api_key_round_trip(creds: Credentials, env: str, scheme: str) -> None:
    assert parse_api_key(scheme + format_api_key(creds, env)) == (env, creds)


@given(
    st.sampled_from(["", "bnd_", "bnd_live_", "bnd_stg_", "Bearer bnd_test_", "bndpat_"]),
    st.text(alphabet=B64URL + "= _/", min_size=0, max_size=90) | st.text(),
)
def test_property_random_api_keys_parse_only_when_well_formed(prefix: str, rest: str) -> None:
    text = prefix + rest
    try:
        env, creds = parse_api_key(text)
    except CredentialFormatError:
        return
    assert re.sub(r"^bearer[ \t]+", "", text, flags=re.I) == format_api_key(creds, env)


# --- stored hashes -------------------------------------------------------------------------


def test_lookup_hash_depends_only_on_secret1() -> None:
    creds = generate_credentials()
    other_secret2 = Credentials(creds.secret1, b"\x00" * 32)
    other_secret1 = Credentials(b"\x00" * 32, creds.secret2)
    digest = secret1_lookup_hash(creds)
    assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    assert secret1_lookup_hash(other_secret2) == digest
    assert secret1_lookup_hash(other_secret1) != digest


def test_stored_hashes_are_domain_separated() -> None:
    # Identical secret bytes on both sides: only the domain separation can tell the hashes apart.
    same = Credentials(b"\x07" * 32, b"\x07" * 32)
    lookup, verifier = secret1_lookup_hash(same), secret2_verifier(same)
    derived = {
        lookup,
        verifier,
        hashlib.sha256(same.secret1).hexdigest(),
        hashlib.sha256(same.secret1_b64.encode()).hexdigest(),
        hashlib.sha256(same.text.encode()).hexdigest(),
        zero_knowledge_key(same.secret2_b64).hex(),
        managed_key(same.secret2_b64, "conn").hex(),
    }
    assert len(derived) == 7
    # The stored hashes are neither the secrets nor their text.
    for stored in (lookup, verifier):
        assert same.secret1.hex() != stored
        assert same.secret1_b64 not in stored


def test_verify_secret2() -> None:
    creds = generate_credentials()
    stored = secret2_verifier(creds)
    assert verify_secret2(creds, stored)
    assert verify_secret2(parse_credentials(creds.text), stored)
    # Quirk Q3 closed: the right secret1 with any other secret2 is refused.
    assert not verify_secret2(Credentials(creds.secret1, generate_credentials().secret2), stored)
    assert not verify_secret2(creds, secret1_lookup_hash(creds))
    assert not verify_secret2(creds, "")
    assert not verify_secret2(creds, stored.upper())
    assert not verify_secret2(creds, stored[:-1])
    assert not verify_secret2(creds, stored + "0")
    assert not verify_secret2(creds, "\u00e9" * 64)
    assert not verify_secret2(creds, "\ud800" * 64)
