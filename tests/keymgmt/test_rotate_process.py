"""`bindify keys rotate` as users run it: a separate process, killed and resumed, raced.

The process is `python -m bindify_appliance` (or the frozen binary) with BINDIFY_DATA_DIR.
`BINDIFY_TEST_FAULT=rotate:<point>:<n>` makes it SIGKILL itself at an exact point (keys_cli).
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.appliance import base_env, bindify_command, run_cli

from bindify_appliance.crypto.keyring import Keyring, MasterKey
from bindify_appliance.datadir import KeySource
from bindify_appliance.store.instances import heartbeat, register_instance

from . import (
    Expected,
    RefreshWriter,
    decrypt_all,
    env_keys,
    new_key,
    open_store,
    seed,
    settings_for,
    write_key_file,
)


def _check(url: str, keyring: Keyring, expected: Expected) -> dict[str, int]:
    """Every blob opens (under whichever key it names) to its original plaintext; counts by key."""
    store = open_store(url)
    try:
        found = decrypt_all(store, keyring)
    finally:
        store.close()
    assert {k: plain for k, (_, plain) in found.items()} == expected
    by_key: dict[str, int] = {}
    for fp, _ in found.values():
        by_key[fp] = by_key.get(fp, 0) + 1
    return by_key


def _seed(url: str, keyring: Keyring, **counts: int) -> Expected:
    store = open_store(url)
    try:
        return seed(store, keyring, **counts).expected
    finally:
        store.close()


def test_rotation_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, new = new_key(), new_key(active=False)
    write_key_file(data, [old, new])
    url = f"sqlite:///{data}/bindify.db"
    expected = _seed(url, Keyring([old]), connections=300, services=3, dcr=2, zero_knowledge=5)

    done = run_cli(["keys", "rotate", "--yes"], data)

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert f"key {new.fingerprint} is now the active key" in done.stderr
    assert "305 blob(s) re-encrypted (300 connections, 3 service secrets, 2 DCR" in done.stderr
    assert "re-encrypting: 305/305 (100%)" in done.stderr  # plain lines: stderr is a pipe
    assert "\r" not in done.stderr and "blobs/s" in done.stderr
    both = Keyring([old, MasterKey(new.key)])
    assert _check(url, both, expected) == {new.fingerprint: 305}
    for k in (old, new):
        assert k.key not in done.stderr

    removed = run_cli(["keys", "remove", old.fingerprint], data)
    assert removed.returncode == 0, removed.stderr
    listing = json.loads(run_cli(["keys", "list", "--json"], data).stdout)
    assert [k["fingerprint"] for k in listing["keys"]] == [new.fingerprint]
    assert listing["keys"][0]["total"] == 305 and listing["orphans"] == []


@pytest.mark.parametrize(
    ("point", "on_new_after_kill"),
    # 305 blobs in batches of 100; the fault fires once 150 rows have been rewritten:
    # before/after the UPDATE of row 151/150 (batch 2 uncommitted: rolled back) or after the
    # commit of batch 2 (200 rows).
    [("before_swap", 100), ("after_swap", 100), ("after_batch", 200)],
)
def test_sigkill_at_each_point_then_resume(
    tmp_path: Path, point: str, on_new_after_kill: int
) -> None:
    data = tmp_path / "data"
    old, new = new_key(), new_key(active=False)
    write_key_file(data, [old, new])
    url = f"sqlite:///{data}/bindify.db"
    expected = _seed(url, Keyring([old]), connections=300, services=3, dcr=2)
    both = Keyring([old, MasterKey(new.key)])

    killed = run_cli(
        ["keys", "rotate", "--yes"], data, env={"BINDIFY_TEST_FAULT": f"rotate:{point}:150"}
    )

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    counts = _check(url, both, expected)  # every row old-key or new-key, all decrypt
    assert counts == {new.fingerprint: on_new_after_kill, old.fingerprint: 305 - on_new_after_kill}
    refused = run_cli(["keys", "remove", old.fingerprint], data)
    assert refused.returncode == 1 and "still protects" in refused.stderr

    resumed = run_cli(["keys", "rotate", "--yes"], data)

    assert resumed.returncode == 0, resumed.stderr
    assert f"{305 - on_new_after_kill} blob(s) re-encrypted" in resumed.stderr
    assert f"{on_new_after_kill} already current, 0 failure(s)" in resumed.stderr
    assert _check(url, both, expected) == {new.fingerprint: 305}
    removed = run_cli(["keys", "remove", old.fingerprint], data)
    assert removed.returncode == 0, removed.stderr
    assert _check(url, Keyring([MasterKey(new.key)]), expected) == {new.fingerprint: 305}


def test_rotation_while_an_instance_keeps_refreshing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, new = new_key(), new_key(active=False)
    write_key_file(data, [old, new])
    url = f"sqlite:///{data}/bindify.db"
    expected = _seed(url, Keyring([old]), connections=400)
    ids = [cid for _, cid in expected]

    # The writer plays a running `serve`: it re-reads the key file when it changes (so it
    # switches to the new key once rotate activates it) and records what it holds.
    keys = KeySource(settings_for(data))
    store = open_store(url)
    store.call(
        register_instance, "writer", "0.1.0", list(keys.keyring.fingerprints), datetime.now(UTC)
    )

    def current() -> Keyring:
        keys.reload_if_changed()
        return keys.keyring

    writer = RefreshWriter(store, ids, expected, current)
    writer.start()
    try:
        proc = subprocess.run(
            [*bindify_command(), "keys", "rotate", "--yes"],
            env=base_env(data),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        writer.finish()
    try:
        assert proc.returncode == 0, proc.stderr
        assert store.call(heartbeat, "writer", [], datetime.now(UTC))
        final = decrypt_all(store, keys.keyring)
    finally:
        store.close()
    assert writer.writes > 0
    assert {fp for fp, _ in final.values()} == {new.fingerprint}
    # Not one of the writer's writes was lost or overwritten by the rotation.
    assert {cid: plain for (_, cid), (_, plain) in final.items()} == writer.latest


def test_postgresql_environment_keys_kill_and_resume(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    old, new = new_key(), new_key()
    env = {
        "BINDIFY_DATABASE_URL": pg_url,
        "BINDIFY_SINGLE_INSTANCE": "true",
        "BINDIFY_SECRET_KEY": secrets.token_hex(32),
        "BINDIFY_MASTER_KEYS": env_keys([old, new]),
    }
    expected = _seed(pg_url, Keyring([old]), connections=150, services=2, dcr=1)
    both = Keyring([old, new])

    killed = run_cli(
        ["keys", "rotate", "--yes"],
        data,
        env={**env, "BINDIFY_TEST_FAULT": "rotate:after_swap:120"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _check(pg_url, both, expected) == {new.fingerprint: 100, old.fingerprint: 53}

    resumed = run_cli(["keys", "rotate", "--yes"], data, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert _check(pg_url, both, expected) == {new.fingerprint: 153}

    refused = run_cli(["keys", "remove", old.fingerprint], data, env=env)
    assert refused.returncode == 1
    # One line of refusal (after the line naming the data directory every command prints).
    lines = [x for x in refused.stderr.splitlines() if not x.startswith("bindify: data directory")]
    assert len(lines) == 1, refused.stderr
    assert "remove its entry from BINDIFY_MASTER_KEYS" in refused.stderr
    assert not (data / "master-keys.json").exists()
