"""Keyring: master keys, active-key selection, the JSON form and managed sealing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bindify_appliance.crypto import (
    DecryptError,
    Keyring,
    KeyringError,
    MasterKey,
    dump_keyring_json,
    fingerprint,
    generate_master_key,
    open_managed,
    parse_keyring_json,
    seal_managed,
)
from bindify_appliance.crypto.sealing import managed_key, open_sealed

KEY_A = "a" * 64
KEY_B = "b" * 64
KEY_C = "c" * 64
SECRETISH = "Sup3rS3cretMasterKeyValue-do-not-print"
CONN = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"


def ring(*entries: tuple[str, bool]) -> Keyring:
    return Keyring(MasterKey(key, active_allowed=active) for key, active in entries)


# --- keys and fingerprints -----------------------------------------------------------------


def test_generate_master_key() -> None:
    keys = {generate_master_key() for _ in range(10)}
    assert len(keys) == 10
    for key in keys:
        assert len(key) == 64
        assert set(key) <= set("0123456789abcdef")


def test_fingerprint_shape() -> None:
    fp = fingerprint(generate_master_key())
    assert len(fp) == 16 and set(fp) <= set("0123456789abcdef")
    assert fingerprint("\u00e9") != fingerprint("e")  # UTF-8 bytes, not a normalised form


def test_master_key_hides_the_key() -> None:
    key = MasterKey(SECRETISH, active_allowed=False)
    assert key.fingerprint == fingerprint(SECRETISH)
    for shown in (repr(key), str(key), repr([key])):
        assert SECRETISH not in shown
        assert SECRETISH[:8] not in shown
        assert key.fingerprint in shown
    assert MasterKey(KEY_A).active_allowed is True


def test_master_key_equality() -> None:
    assert MasterKey(KEY_A) == MasterKey(KEY_A)
    assert MasterKey(KEY_A) != MasterKey(KEY_B)
    assert MasterKey(KEY_A) != MasterKey(KEY_A, active_allowed=False)
    assert len({MasterKey(KEY_A), MasterKey(KEY_A)}) == 1


@pytest.mark.parametrize("bad", ["", None, 5])
def test_master_key_refuses_empty_or_non_text(bad: object) -> None:
    with pytest.raises(KeyringError, match="non-empty string"):
        MasterKey(bad)  # type: ignore[arg-type]


# --- active key selection ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "active"),
    [
        ([(KEY_A, True)], KEY_A),
        ([(KEY_A, True), (KEY_B, True)], KEY_B),
        ([(KEY_A, True), (KEY_B, False)], KEY_A),
        ([(KEY_A, False), (KEY_B, True), (KEY_C, False)], KEY_B),
        ([(KEY_A, True), (KEY_B, False), (KEY_C, True)], KEY_C),
        ([(KEY_A, True), (KEY_B, True), (KEY_C, False)], KEY_B),
    ],
)
def test_active_is_the_last_entry_not_marked_inactive(
    entries: list[tuple[str, bool]], active: str
) -> None:
    keyring = ring(*entries)
    assert keyring.active.key == active
    assert keyring.fingerprints == tuple(fingerprint(key) for key, _ in entries)
    assert len(keyring) == len(entries)
    assert [entry.key for entry in keyring] == [key for key, _ in entries]


def test_keyring_refusals() -> None:
    with pytest.raises(KeyringError, match="at least one key"):
        Keyring([])
    with pytest.raises(KeyringError, match="at least one must be usable"):
        ring((KEY_A, False), (KEY_B, False))
    with pytest.raises(
        KeyringError, match=f"entry 1 repeats the key of entry 0.*{fingerprint(KEY_A)}"
    ):
        ring((KEY_A, True), (KEY_A, False))


def test_get_is_strict() -> None:
    keyring = ring((KEY_A, True), (KEY_B, False))
    assert keyring.get(fingerprint(KEY_B)).key == KEY_B
    assert fingerprint(KEY_A) in keyring
    assert fingerprint(KEY_C) not in keyring
    with pytest.raises(KeyringError, match=fingerprint(KEY_C)):
        keyring.get(fingerprint(KEY_C))
    with pytest.raises(KeyringError, match="''"):
        keyring.get("")


def test_keyring_repr_hides_keys() -> None:
    keyring = ring((SECRETISH, True))
    assert SECRETISH not in repr(keyring)
    assert fingerprint(SECRETISH) in repr(keyring)


def test_added_activated_without() -> None:
    start = ring((KEY_A, True))
    staged = start.added(MasterKey(KEY_B, active_allowed=False))
    assert staged.active.key == KEY_A  # a staged key is known but not used yet
    rotated = staged.activated(fingerprint(KEY_B))
    assert rotated.active.key == KEY_B
    assert rotated.fingerprints == (fingerprint(KEY_A), fingerprint(KEY_B))
    # Activating an earlier key moves it last.
    back = rotated.activated(fingerprint(KEY_A))
    assert back.active.key == KEY_A
    assert back.fingerprints == (fingerprint(KEY_B), fingerprint(KEY_A))
    removed = rotated.without(fingerprint(KEY_A))
    assert removed.fingerprints == (fingerprint(KEY_B),)
    with pytest.raises(KeyringError, match="at least one key"):
        removed.without(fingerprint(KEY_B))
    with pytest.raises(KeyringError, match="at least one must be usable"):
        staged.without(fingerprint(KEY_A))
    with pytest.raises(KeyringError, match=fingerprint(KEY_C)):
        start.activated(fingerprint(KEY_C))
    with pytest.raises(KeyringError, match="repeats"):
        start.added(MasterKey(KEY_A))
    assert start.fingerprints == (fingerprint(KEY_A),)  # the originals never change


# --- JSON form -----------------------------------------------------------------------------


def test_parse_keyring_json() -> None:
    text = json.dumps(
        [{"key": KEY_A}, {"key": KEY_B, "active": True}, {"key": KEY_C, "active": False}]
    )
    keyring = parse_keyring_json(text, "BINDIFY_MASTER_KEYS")
    assert keyring.fingerprints == (fingerprint(KEY_A), fingerprint(KEY_B), fingerprint(KEY_C))
    assert keyring.active.key == KEY_B
    assert [entry.active_allowed for entry in keyring] == [True, True, False]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "not valid JSON (line 1, column 1)"),
        (f'[{{"key": "{SECRETISH}"', "not valid JSON"),
        (f'[{{"key": "{SECRETISH}"}},]', "not valid JSON"),
        ("null", "must be a JSON array"),
        (f'{{"key": "{SECRETISH}"}}', "must be a JSON array"),
        (f'"{SECRETISH}"', "must be a JSON array"),
        ("[]", "at least one key"),
        ("[1]", "entry 0 must be an object"),
        (f'[{{"key": "{KEY_A}"}}, "{SECRETISH}"]', "entry 1 must be an object"),
        (f'[{{"key": "{KEY_A}"}}, ["{SECRETISH}"]]', "entry 1 must be an object"),
        ("[{}]", 'entry 0: "key" must be a non-empty string'),
        ('[{"key": ""}]', 'entry 0: "key" must be a non-empty string'),
        ('[{"key": 12345678901234}]', 'entry 0: "key" must be a non-empty string'),
        ('[{"key": null}]', 'entry 0: "key" must be a non-empty string'),
        (f'[{{"key": " {SECRETISH}"}}]', "whitespace"),
        (f'[{{"key": "{SECRETISH}\\n"}}]', "whitespace"),
        (
            f'[{{"key": "{SECRETISH}", "active": "false"}}]',
            'entry 0: "active" must be true or false',
        ),
        (f'[{{"key": "{SECRETISH}", "active": 0}}]', 'entry 0: "active" must be true or false'),
        (f'[{{"key": "{SECRETISH}", "active": null}}]', 'entry 0: "active" must be true or false'),
        ('[{"key": "abc\\ud800"}]', "entry 0: a master key must be valid Unicode text"),
        (f'[{{"key": "{SECRETISH}", "kid": 1}}]', "entry 0 has unknown field(s) 'kid'"),
        (f'[{{"key": "{KEY_A}"}}, {{"key": "{SECRETISH}", "Key": 1}}]', "entry 1 has unknown"),
        (f'[{{"key": "{SECRETISH}", "key": "{KEY_A}"}}]', "'key' appears twice"),
        (
            f'[{{"key": "{SECRETISH}"}}, {{"key": "{KEY_A}"}}, {{"key": "{SECRETISH}"}}]',
            f"entry 2 repeats the key of entry 0 (fingerprint {fingerprint(SECRETISH)})",
        ),
        (
            f'[{{"key": "{SECRETISH}", "active": false}}, {{"key": "{KEY_A}", "active": false}}]',
            'every key is marked "active": false',
        ),
    ],
)
def test_parse_keyring_json_refusals(text: str, expected: str) -> None:
    with pytest.raises(KeyringError) as info:
        parse_keyring_json(text, "master-keys.json")
    message = str(info.value)
    assert message.startswith("master-keys.json: ")
    assert expected in message
    assert SECRETISH[:8] not in message
    assert KEY_A[:16] not in message


def test_unknown_field_named_like_a_key_is_not_echoed() -> None:
    text = json.dumps([{"key": KEY_A, SECRETISH: True}])
    with pytest.raises(KeyringError) as info:
        parse_keyring_json(text, "env")
    assert "(name not shown)" in str(info.value)
    assert SECRETISH[:8] not in str(info.value)
    hexy = generate_master_key()
    with pytest.raises(KeyringError) as info:
        parse_keyring_json(json.dumps([{"key": KEY_A, hexy: 1}]), "env")
    assert hexy[:8] not in str(info.value)


def test_dump_keyring_json_round_trip() -> None:
    keyring = ring((KEY_A, True), (KEY_B, False), (SECRETISH, True))
    text = dump_keyring_json(keyring)
    assert json.loads(text) == [
        {"key": KEY_A},
        {"key": KEY_B, "active": False},
        {"key": SECRETISH},
    ]
    again = parse_keyring_json(text, "dump")
    assert list(again) == list(keyring)
    assert again.active == keyring.active
    assert dump_keyring_json(again) == text


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=30).map(lambda s: "k" + s.strip() + "k"), st.booleans()
        ),
        min_size=1,
        max_size=6,
        unique_by=lambda entry: entry[0],
    ).filter(lambda entries: any(active for _, active in entries))
)
def test_property_dump_parse_round_trip(entries: list[tuple[str, bool]]) -> None:
    keyring = ring(*entries)
    again = parse_keyring_json(dump_keyring_json(keyring), "prop")
    assert list(again) == list(keyring)
    assert again.active.key == [key for key, active in entries if active][-1]


# --- managed sealing -----------------------------------------------------------------------


def test_seal_managed_uses_the_active_key() -> None:
    keyring = ring((KEY_A, True), (KEY_B, True), (KEY_C, False))
    blob, fp = seal_managed(keyring, CONN, b"payload", field="tokens")
    assert fp == fingerprint(KEY_B)
    # Independently: the per-connection key of the active master key opens it.
    assert open_sealed(managed_key(KEY_B, CONN), blob, row=CONN, field="tokens") == b"payload"
    assert open_managed(keyring, fp, CONN, blob, field="tokens") == b"payload"


def test_open_managed_after_rotation() -> None:
    before = ring((KEY_A, True))
    blob, fp = seal_managed(before, CONN, b"old", field="tokens")
    after = before.added(MasterKey(KEY_B, active_allowed=False)).activated(fingerprint(KEY_B))
    # Old blobs still open by their stored fingerprint; re-sealing moves them to the new key.
    plaintext = open_managed(after, fp, CONN, blob, field="tokens")
    new_blob, new_fp = seal_managed(after, CONN, plaintext, field="tokens")
    assert new_fp == fingerprint(KEY_B) != fp
    assert open_managed(after.without(fp), new_fp, CONN, new_blob, field="tokens") == b"old"


def test_open_managed_failures() -> None:
    keyring = ring((KEY_A, True), (KEY_B, False))
    blob, fp = seal_managed(keyring, CONN, b"payload", field="tokens")
    with pytest.raises(KeyringError, match=fingerprint(KEY_C)):
        open_managed(keyring, fingerprint(KEY_C), CONN, blob, field="tokens")
    with pytest.raises(KeyringError):
        open_managed(keyring, "", CONN, blob, field="tokens")  # strict: no active-key fallback
    with pytest.raises(DecryptError):
        open_managed(keyring, fingerprint(KEY_B), CONN, blob, field="tokens")  # other known key
    with pytest.raises(DecryptError):
        open_managed(keyring, fp, "0" + CONN[1:], blob, field="tokens")  # another row
    with pytest.raises(DecryptError):
        open_managed(keyring, fp, CONN, blob, field="dcr_registration")  # another field
