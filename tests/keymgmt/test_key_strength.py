"""Key strength through the real CLI: new master keys and secret keys must decode to at least
32 random bytes; a weaker master key already protecting data keeps working, with a warning.

Each refusal is one `bindify: …` line on stderr, exit 1, and never shows the key.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from support.appliance import Appliance, free_port, run_cli

from bindify_appliance.crypto.keyring import Keyring, MasterKey

from . import decrypt_all, env_keys, new_key, open_store, seed, write_key_file

# Long enough to pass the old "non-empty" rule, but no 32 random bytes behind it.
WEAK_KEYS = [
    "correct-horse-battery-staple-2026",  # a passphrase
    "a" * 64,  # 32 bytes of hex, all the same byte
    "0123456789abcdef" * 4,  # 32 bytes of hex, a repeating pattern
    "c2VjcmV0",  # base64 of 6 bytes
]


def _refusal(stderr: str) -> str:
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("bindify: "), stderr
    return last


def _serve_env(**extra: str) -> dict[str, str]:
    return {"BINDIFY_PORT": str(free_port()), **extra}


@pytest.mark.parametrize("weak", WEAK_KEYS)
def test_serve_refuses_a_weak_new_master_key(tmp_path: Path, weak: str) -> None:
    data = tmp_path / "data"
    key = MasterKey(weak)
    done = run_cli(["serve"], data, env=_serve_env(BINDIFY_MASTER_KEYS=env_keys([key])), timeout=30)
    assert done.returncode == 1
    line = _refusal(done.stderr)
    assert "BINDIFY_MASTER_KEYS" in line and key.fingerprint in line
    assert "at least 32 random bytes" in line and "bindify keys generate" in line
    assert weak not in done.stderr


def test_serve_refuses_a_weak_key_file_that_protects_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    weak = MasterKey(WEAK_KEYS[0])
    write_key_file(data, [weak])
    done = run_cli(["serve"], data, env=_serve_env(), timeout=30)
    assert done.returncode == 1
    line = _refusal(done.stderr)
    assert "master-keys.json" in line and weak.fingerprint in line and "32 random bytes" in line


def test_keys_rotate_refuses_a_weak_new_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, weak = new_key(), MasterKey(WEAK_KEYS[0], active_allowed=False)
    write_key_file(data, [old, weak])
    before = (data / "master-keys.json").read_text()
    url = f"sqlite:///{data}/bindify.db"
    store = open_store(url)
    try:
        seed(store, Keyring([old]), connections=2, services=1)
    finally:
        store.close()

    done = run_cli(["keys", "rotate", "--yes"], data)
    assert done.returncode == 1
    line = _refusal(done.stderr)
    assert weak.fingerprint in line and "at least 32 random bytes" in line
    assert weak.key not in done.stderr
    assert (data / "master-keys.json").read_text() == before  # nothing changed
    store = open_store(url)
    try:
        found = decrypt_all(store, Keyring([old, weak]))
    finally:
        store.close()
    assert {fp for fp, _ in found.values()} == {old.fingerprint}


def test_a_weak_key_already_in_use_still_opens_its_blobs_with_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    weak = MasterKey(WEAK_KEYS[0])  # from an earlier version that accepted any key
    write_key_file(data, [weak])
    url = f"sqlite:///{data}/bindify.db"
    store = open_store(url)
    try:
        expected = seed(store, Keyring([weak]), connections=2, services=1).expected
    finally:
        store.close()

    app = Appliance(data).start()
    try:
        warnings = [
            r for r in app.log_records() if r.get("level") == "warning" and "weak" in r["msg"]
        ]
    finally:
        assert app.stop() == 0
    assert warnings, app.stderr()
    assert weak.fingerprint in warnings[0]["msg"]
    assert "bindify keys rotate" in warnings[0]["msg"]
    assert weak.key not in app.stderr()

    # The way out named by the warning: rotation opens every blob under the weak key and
    # seals it under a fresh, strong one.
    done = run_cli(["keys", "rotate", "--yes"], data)
    assert done.returncode == 0, done.stderr
    keys = json.loads((data / "master-keys.json").read_text())
    keyring = Keyring(MasterKey(k["key"], k.get("active", True)) for k in keys)
    store = open_store(url)
    try:
        found = decrypt_all(store, keyring)
    finally:
        store.close()
    assert {k: plain for k, (_, plain) in found.items()} == expected
    assert {fp for fp, _ in found.values()} == {keyring.active.fingerprint}
    assert keyring.active.fingerprint != weak.fingerprint


@pytest.mark.parametrize("weak", ["x" * 40, "0123456789abcdef" * 4, "QUFB" * 11])
def test_a_weak_secret_key_is_refused_by_every_command(tmp_path: Path, weak: str) -> None:
    data = tmp_path / "data"
    env = _serve_env(BINDIFY_SECRET_KEY=weak)
    for args in (["serve"], ["keys", "list"]):
        done = run_cli(args, data, env=env, timeout=30)
        assert done.returncode == 1, args
        line = _refusal(done.stderr)
        assert "BINDIFY_SECRET_KEY" in line and "at least 32 random bytes" in line
        assert weak not in done.stderr
    strong = run_cli(
        ["migrate", "--status"], data, env={"BINDIFY_SECRET_KEY": secrets.token_hex(32)}
    )
    assert strong.returncode == 0, strong.stderr


def test_a_weak_secret_key_file_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "secret-key").write_text("s" * 64 + "\n")
    (data / "secret-key").chmod(0o600)
    done = run_cli(["serve"], data, env=_serve_env(), timeout=30)
    assert done.returncode == 1
    line = _refusal(done.stderr)
    assert "secret-key" in line and "at least 32 random bytes" in line
    assert "s" * 64 not in done.stderr
