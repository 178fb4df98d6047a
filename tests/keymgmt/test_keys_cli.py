"""The `keys` commands run in-process (fast): output shapes, refusals, and the rotation flows.

End-to-end runs in a separate process (and SIGKILL recovery) are in test_rotate_process.py.
Each `keys_cli.run` opens its own Store, which rebinds the models, so the tests below open a
fresh store after every run rather than keeping one across it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.appliance import run_cli

from bindify_appliance.clock import iso
from bindify_appliance.commands import keys as keys_cli
from bindify_appliance.crypto.keyring import Keyring, MasterKey, fingerprint, parse_keyring_json
from bindify_appliance.errors import ConfigError, KeyringError
from bindify_appliance.store.instances import heartbeat, register_instance
from bindify_appliance.store.keys import BlobKind
from bindify_appliance.store.models import Instance

from . import (
    NOW,
    Seeded,
    decrypt_all,
    env_keys,
    new_key,
    open_store,
    seed,
    settings_for,
    stored_blobs,
    write_key_file,
)


class Cli:
    """Runs `keys <action>` in-process against one data directory, capturing its output."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.env = dict(env or {})
        self.url = f"sqlite:///{data_dir}/bindify.db"
        self.out: list[str] = []
        self.say: list[str] = []
        self.stream = io.StringIO()

    def __call__(self, action: str, **kwargs: object) -> int:
        self.out.clear()
        self.say.clear()
        args = argparse.Namespace(json=False, yes=True, fingerprint=None)
        for name, value in kwargs.items():
            setattr(args, name, value)
        settings = settings_for(self.data_dir, self.env)
        return keys_cli.run(
            action,
            args,
            lambda _a: settings,
            out=self.out.append,
            say=self.say.append,
            environ={},
            instance_wait=float(str(kwargs.get("wait", 0))),
            settle_seconds=0,
            stream=self.stream,
        )

    def seed(self, keyring: Keyring, **counts: int) -> Seeded:
        store = open_store(self.url)
        try:
            return seed(store, keyring, **counts)
        finally:
            store.close()

    def decrypt(self, keyring: Keyring) -> dict[tuple[BlobKind, str], tuple[str, bytes]]:
        store = open_store(self.url)
        try:
            return dict(decrypt_all(store, keyring))
        finally:
            store.close()

    def blobs(self) -> dict[tuple[BlobKind, str], tuple[str, str]]:
        store = open_store(self.url)
        try:
            return dict(stored_blobs(store))
        finally:
            store.close()

    def add_instance(self, instance_id: str, fingerprints: list[str], *, host: str) -> None:
        store = open_store(self.url)
        try:
            store.call(register_instance, instance_id, "0.1.0", fingerprints, NOW)
            store.call(
                Instance.update(hostname=host, heartbeat_at=time_now())
                .where(Instance.id == instance_id)
                .execute
            )
        finally:
            store.close()

    def key_file(self) -> Keyring:
        return parse_keyring_json((self.data_dir / "master-keys.json").read_text(), "test")


def time_now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------- generate, list


def test_generate_prints_the_key_alone_and_the_fingerprint_on_stderr(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data")
    assert cli("generate") == 0
    (key,) = cli.out
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    said = "\n".join(cli.say)
    assert fingerprint(key) in said and key not in said and "keys rotate" in said

    done = run_cli(["keys", "generate"], tmp_path / "data")
    assert done.returncode == 0
    assert re.fullmatch(r"[0-9a-f]{64}\n", done.stdout)
    assert fingerprint(done.stdout.strip()) in done.stderr
    assert done.stdout.strip() not in done.stderr


def test_list_counts_keys_and_highlights_orphans(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, new, lost = new_key(), new_key(active=False), new_key()
    keyring = write_key_file(data, [old, new])
    cli = Cli(data)
    cli.seed(keyring, connections=4, services=1, dcr=2)
    cli.seed(Keyring([lost]), connections=3)
    cli.add_instance("inst-1", [old.fingerprint], host="host-a")

    assert cli("list", json=True) == 0
    listing = json.loads("\n".join(cli.out))
    assert listing["source"] == "file" and listing["active"] == old.fingerprint
    assert listing["keys"] == [
        {
            "fingerprint": old.fingerprint,
            "active": True,
            "marked_inactive": False,
            "connections": 4,
            "service_secrets": 1,
            "dcr_registrations": 2,
            "total": 7,
        },
        {
            "fingerprint": new.fingerprint,
            "active": False,
            "marked_inactive": True,
            "connections": 0,
            "service_secrets": 0,
            "dcr_registrations": 0,
            "total": 0,
        },
    ]
    assert listing["orphans"] == [
        {
            "fingerprint": lost.fingerprint,
            "connections": 3,
            "service_secrets": 0,
            "dcr_registrations": 0,
            "total": 3,
        },
    ]
    (instance,) = listing["instances"]
    assert instance["hostname"] == "host-a" and instance["missing"] == [new.fingerprint]
    assert any(lost.fingerprint in line and "warning" in line for line in cli.say)

    assert cli("list") == 0
    text = "\n".join(cli.out)
    assert re.search(rf"{old.fingerprint}\s+active\s+4\s+1\s+2", text)
    assert re.search(rf"{new.fingerprint}\s+new \(inactive\)\s+0\s+0\s+0", text)
    assert re.search(rf"{lost.fingerprint}\s+ORPHAN", text)
    for k in (old, new, lost):
        assert k.key not in text and k.key not in "\n".join(cli.say)


def test_list_without_any_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="does not exist"):
        Cli(tmp_path / "data")("list")


# ----------------------------------------------------------------------------- remove


def test_remove_refusals_then_success(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, mid, new = new_key(), new_key(), new_key()
    keyring = write_key_file(data, [old, mid, new])
    cli = Cli(data)
    cli.seed(Keyring([old]), connections=2, services=1)
    before = (data / "master-keys.json").read_bytes()

    with pytest.raises(KeyringError, match="16 hexadecimal"):
        cli("remove", fingerprint="not-a-fingerprint")
    with pytest.raises(KeyringError, match="no configured key has fingerprint 0123456789abcdef"):
        cli("remove", fingerprint="0123456789abcdef")
    with pytest.raises(KeyringError, match="is the active key"):
        cli("remove", fingerprint=new.fingerprint)
    with pytest.raises(KeyringError, match=r"still protects 3 blob\(s\) \(2 connections, 1 serv"):
        cli("remove", fingerprint=old.fingerprint.upper())
    assert (data / "master-keys.json").read_bytes() == before

    assert cli("remove", fingerprint=mid.fingerprint) == 0
    assert cli.key_file().fingerprints == (old.fingerprint, new.fingerprint)
    assert (data / "master-keys.json").stat().st_mode & 0o777 == 0o600
    assert keyring.active == cli.key_file().active


def test_remove_refuses_the_last_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    only = new_key()
    write_key_file(data, [only])
    with pytest.raises(KeyringError, match="last master key"):
        Cli(data)("remove", fingerprint=only.fingerprint)


def test_remove_with_environment_keys_explains_what_to_do(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    cli = Cli(tmp_path / "data", {"BINDIFY_MASTER_KEYS": env_keys([old, new])})
    cli.seed(Keyring([old]), connections=1)
    with pytest.raises(KeyringError, match=r"still protects 1 blob"):
        cli("remove", fingerprint=old.fingerprint)
    cli_env_unused = Cli(tmp_path / "data2", {"BINDIFY_MASTER_KEYS": env_keys([old, new])})
    with pytest.raises(KeyringError, match="remove its entry from BINDIFY_MASTER_KEYS"):
        cli_env_unused("remove", fingerprint=old.fingerprint)
    assert not (tmp_path / "data2" / "master-keys.json").exists()


# ----------------------------------------------------------------------------- rotate


def test_rotate_refuses_when_a_live_instance_lacks_the_new_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, new = new_key(), new_key(active=False)
    write_key_file(data, [old, new])
    cli = Cli(data)
    cli.seed(Keyring([old]), connections=5)
    cli.add_instance("inst-ok", [old.fingerprint, new.fingerprint], host="host-a")
    cli.add_instance("inst-behind", [old.fingerprint], host="host-b")
    file_before = (data / "master-keys.json").read_bytes()
    blobs_before = cli.blobs()

    with pytest.raises(KeyringError) as refused:
        cli("rotate")
    message = str(refused.value)
    assert "host-b" in message and "host-a" not in message and new.fingerprint in message
    assert (data / "master-keys.json").read_bytes() == file_before
    assert cli.blobs() == blobs_before

    # Once the laggard reports the key (it re-read the file), the rotation goes ahead.
    store = open_store(cli.url)
    store.call(heartbeat, "inst-behind", [old.fingerprint, new.fingerprint], time_now())
    store.close()
    assert cli("rotate") == 0
    assert cli.key_file().active.fingerprint == new.fingerprint
    assert {fp for fp, _ in cli.decrypt(cli.key_file()).values()} == {new.fingerprint}


def test_rotate_waits_for_an_instance_to_load_a_generated_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old = new_key()
    write_key_file(data, [old])
    cli = Cli(data)
    seeded = cli.seed(Keyring([old]), connections=30)
    cli.add_instance("inst-1", [old.fingerprint], host="host-a")
    reloaded = threading.Event()

    def instance() -> None:  # what serve does: notice the key file changed, record its keys
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ring = Cli(data).key_file()
            if len(ring) == 2:
                # Plain sqlite3: opening a Store here would rebind the models under the command.
                with contextlib.closing(sqlite3.connect(data / "bindify.db")) as db, db:
                    db.execute(
                        "UPDATE instances SET key_fingerprints = ?, heartbeat_at = ? WHERE id = ?",
                        (json.dumps(sorted(ring.fingerprints)), iso(time_now()), "inst-1"),
                    )
                reloaded.set()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=instance)
    thread.start()
    try:
        assert cli("rotate", wait=20) == 0
    finally:
        thread.join(30)
    assert reloaded.is_set()
    ring = cli.key_file()
    assert len(ring) == 2 and ring.keys[0] == old and ring.active.fingerprint != old.fingerprint
    assert any("waiting up to 20 s for host-a" in line for line in cli.say)
    after = cli.decrypt(ring)
    assert {fp for fp, _ in after.values()} == {ring.active.fingerprint}
    assert {k: v for k, (_, v) in after.items()} == seeded.expected
    assert cli("remove", fingerprint=old.fingerprint) == 0


def test_rotate_single_instance_does_every_step(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old = new_key()
    write_key_file(data, [old])
    cli = Cli(data)
    seeded = cli.seed(Keyring([old]), connections=40, services=2, dcr=1)

    assert cli("rotate") == 0

    ring = cli.key_file()
    assert ring.fingerprints[0] == old.fingerprint and len(ring) == 2
    new_fp = ring.active.fingerprint
    said = "\n".join(cli.say)
    assert f"generated master key {new_fp}" in said
    assert re.search(r"43 blob\(s\) re-encrypted \(40 connections, 2 service secrets, 1 DCR", said)
    assert f"no blob uses key(s) {old.fingerprint}" in said
    assert cli.out == []  # nothing for scripts on stdout
    progress = cli.stream.getvalue().splitlines()
    assert (
        progress[0] == "re-encrypting: 0/43 (0%)" and progress[-1] == "re-encrypting: 43/43 (100%)"
    )
    after = cli.decrypt(ring)
    assert {k: v for k, (_, v) in after.items()} == seeded.expected
    assert cli("remove", fingerprint=old.fingerprint) == 0
    assert cli.key_file().fingerprints == (new_fp,)


def test_rotate_without_yes_needs_a_terminal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_key_file(data, [new_key()])
    before = (data / "master-keys.json").read_bytes()
    with pytest.raises(ConfigError, match="--yes"):
        Cli(data)("rotate", yes=False)
    assert (data / "master-keys.json").read_bytes() == before


def test_rotate_with_environment_keys(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    pending = MasterKey(new.key, active_allowed=False)

    cli = Cli(tmp_path / "data", {"BINDIFY_MASTER_KEYS": env_keys([old, pending])})
    seeded = cli.seed(Keyring([old]), connections=10)
    with pytest.raises(KeyringError, match='marked "active": false.*restart them'):
        cli("rotate")

    cli = Cli(tmp_path / "data", {"BINDIFY_MASTER_KEYS": env_keys([old, new])})
    cli.add_instance("inst-env", [old.fingerprint], host="host-e")
    with pytest.raises(KeyringError, match=r"host-e .*do not hold key " + new.fingerprint):
        cli("rotate")
    assert {fp for _, fp in cli.blobs().values()} == {old.fingerprint}

    store = open_store(cli.url)
    store.call(heartbeat, "inst-env", [old.fingerprint, new.fingerprint], time_now())
    store.close()
    assert cli("rotate") == 0
    after = cli.decrypt(Keyring([old, new]))
    assert {fp for fp, _ in after.values()} == {new.fingerprint}
    assert {k: v for k, (_, v) in after.items()} == seeded.expected
    assert not (tmp_path / "data" / "master-keys.json").exists()

    assert cli("rotate") == 0  # nothing left: says how to rotate environment keys
    assert any("nothing to re-encrypt" in line for line in cli.say)


def test_fault_hook_parsing() -> None:
    assert keys_cli.parse_fault(None) is None and keys_cli.parse_fault("") is None
    for bad in (
        "rotate:somewhere:3",
        "rotate:before_swap",
        "other:after_batch:1",
        "rotate:after_swap:-1",
    ):
        with pytest.raises(ConfigError, match="BINDIFY_TEST_FAULT"):
            keys_cli.parse_fault(bad)
    hook = keys_cli.parse_fault("rotate:after_batch:5")
    assert hook is not None
    hook("after_batch", 4)  # below the threshold: nothing happens
    hook("before_swap", 10)  # another point: nothing happens


def test_the_instance_host_check_uses_this_host(tmp_path: Path) -> None:
    # A record on this host with a live pid (ours) is a live instance and is waited for.
    data = tmp_path / "data"
    old, new = new_key(), new_key(active=False)
    write_key_file(data, [old, new])
    cli = Cli(data)
    cli.add_instance("me", [old.fingerprint], host=socket.gethostname())
    with pytest.raises(KeyringError, match="do not hold key"):
        cli("rotate")
