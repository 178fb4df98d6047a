"""Tests of key management (usage, instances, rotation, the `keys` commands), with helpers.

Rows are sealed exactly as the appliance seals them (`seal_managed(keyring, row id, plaintext,
field=<column>)`) and inserted directly, so these tests depend on nothing but the store models.
"""

from __future__ import annotations

import functools
import json
import random
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bindify_appliance.config import Settings, load_settings
from bindify_appliance.crypto.keyring import (
    Keyring,
    MasterKey,
    dump_keyring_json,
    open_managed,
    seal_managed,
)
from bindify_appliance.store import Store, apply
from bindify_appliance.store.connections import swap_tokens
from bindify_appliance.store.keys import BLOB_FIELDS, BlobKind, read_row
from bindify_appliance.store.models import Connection, DcrRegistration, Service, User, new_id

ENGINES = ["sqlite", "postgresql"]
NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)

Expected = dict[tuple[BlobKind, str], bytes]


def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite file in tmp_path, or a PostgreSQL database migrated already (`open_store` next)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/bindify.db"
    return str(request.getfixturevalue("pg_migrated_url"))


def new_key(*, active: bool = True) -> MasterKey:
    return MasterKey(secrets.token_hex(32), active_allowed=active)


def write_key_file(data_dir: Path, keys: list[MasterKey]) -> Keyring:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    keyring = Keyring(keys)
    path = data_dir / "master-keys.json"
    path.write_text(dump_keyring_json(keyring))
    path.chmod(0o600)
    return keyring


def env_keys(keys: list[MasterKey]) -> str:
    entries: list[dict[str, object]] = []
    for k in keys:
        entry: dict[str, object] = {"key": k.key}
        if not k.active_allowed:
            entry["active"] = False
        entries.append(entry)
    return json.dumps(entries)


def settings_for(data_dir: Path, env: Mapping[str, str] | None = None) -> Settings:
    return load_settings({"data_dir": str(data_dir)}, environ=dict(env or {}))


def open_store(url: str) -> Store:
    store = Store(url)
    apply(store, backup_dir=None)
    return store


@dataclass
class Seeded:
    """What `seed` wrote: the plaintext of every managed blob, and the untouchable rows."""

    expected: Expected = field(default_factory=dict)
    zero_knowledge: dict[str, str] = field(default_factory=dict)  # id -> blob (never touched)


def seed(
    store: Store,
    keyring: Keyring,
    *,
    connections: int,
    services: int = 0,
    dcr: int = 0,
    zero_knowledge: int = 0,
) -> Seeded:
    """Insert managed rows sealed under `keyring.active`, plus zero-knowledge decoys."""
    out = Seeded()
    batch = secrets.token_hex(3)  # several seeds into one database must not collide

    def work() -> None:
        user = User.create(
            email=f"{secrets.token_hex(4)}@example.com",
            role="member",
            created_at=NOW,
            updated_at=NOW,
        )
        rows = []
        for i in range(connections):
            cid = new_id()
            plain = json.dumps({"access_token": f"at-{i}", "refresh_token": f"rt-{i}"}).encode()
            blob, fp = seal_managed(keyring, cid, plain, field="encrypted_tokens")
            out.expected[("connection", cid)] = plain
            rows.append(
                {
                    "id": cid,
                    "user": user.id,
                    "service": "linear",
                    "auth_type": "oauth",
                    "key_storage_mode": "managed",
                    "secret1_hash": secrets.token_hex(16),
                    "encrypted_tokens": blob,
                    "key_fingerprint": fp,
                    "token_generation": i % 3,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            )
        for _ in range(zero_knowledge):
            cid = new_id()
            blob = "v1:" + secrets.token_urlsafe(60)  # sealed under a key no one stores
            out.zero_knowledge[cid] = blob
            rows.append(
                {
                    "id": cid,
                    "user": user.id,
                    "service": "github",
                    "auth_type": "api_key",
                    "key_storage_mode": "zero_knowledge",
                    "secret1_hash": secrets.token_hex(16),
                    "encrypted_tokens": blob,
                    "key_fingerprint": "",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            )
        for start in range(0, len(rows), 200):
            Connection.insert_many(rows[start : start + 200]).execute()
        for i in range(services):
            sid = f"svc-{batch}-{i}"
            plain = f"client-secret-{i}".encode()
            blob, fp = seal_managed(keyring, sid, plain, field=BLOB_FIELDS["service_secret"])
            out.expected[("service_secret", sid)] = plain
            Service.create(
                id=sid,
                oauth_client_id=f"client-{i}",
                oauth_client_secret_sealed=blob,
                oauth_key_fingerprint=fp,
                builtin=True,
                created_at=NOW,
                updated_at=NOW,
            )
        for i in range(dcr):
            did = new_id()
            plain = json.dumps({"client_id": f"dcr-{i}"}).encode()
            blob, fp = seal_managed(keyring, did, plain, field=BLOB_FIELDS["dcr_registration"])
            out.expected[("dcr_registration", did)] = plain
            DcrRegistration.create(
                id=did,
                service="notion",
                issuer=f"https://issuer-{batch}-{i}.example",
                registration_sealed=blob,
                key_fingerprint=fp,
                created_at=NOW,
                updated_at=NOW,
            )

    store.call(work)
    return out


def stored_blobs(store: Store) -> dict[tuple[BlobKind, str], tuple[str, str]]:
    """{(kind, id): (blob, fingerprint)} of every managed blob."""

    def work() -> dict[tuple[BlobKind, str], tuple[str, str]]:
        found: dict[tuple[BlobKind, str], tuple[str, str]] = {}
        for c in Connection.select().where(Connection.key_storage_mode == "managed"):
            if c.encrypted_tokens is not None:
                found[("connection", c.id)] = (c.encrypted_tokens, c.key_fingerprint)
        for s in Service.select().where(Service.oauth_client_secret_sealed.is_null(False)):
            found[("service_secret", s.id)] = (
                str(s.oauth_client_secret_sealed),
                s.oauth_key_fingerprint,
            )
        for d in DcrRegistration.select():
            found[("dcr_registration", d.id)] = (d.registration_sealed, d.key_fingerprint)
        return found

    return store.call(work)


def decrypt_all(store: Store, keyring: Keyring) -> dict[tuple[BlobKind, str], tuple[str, bytes]]:
    """{(kind, id): (fingerprint, plaintext)}; fails the test if any blob does not open."""
    return {
        (kind, rid): (fp, open_managed(keyring, fp, rid, blob, field=BLOB_FIELDS[kind]))
        for (kind, rid), (blob, fp) in stored_blobs(store).items()
    }


def zero_knowledge_blobs(store: Store) -> dict[str, str]:
    def work() -> dict[str, str]:
        return {
            c.id: str(c.encrypted_tokens)
            for c in Connection.select().where(Connection.key_storage_mode == "zero_knowledge")
        }

    return store.call(work)


class RefreshWriter(threading.Thread):
    """A stand-in for `serve` refreshing tokens: rewrites random connections until stopped.

    Each write follows the refresh rule of DESIGN §8: read (generation, blob), decrypt, seal the
    new value under the writer's current active key, compare-and-swap. On a lost swap it
    re-reads: a row whose plaintext is unchanged was only re-encrypted by a rotation, so the
    writer's value is still the newest and is written again against the new generation.

    It records its last successful value per row and fails (into `errors`) if it ever finds a
    row holding anything else — i.e. if a rotation overwrote one of its writes.
    """

    def __init__(
        self,
        store: Store,
        ids: list[str],
        expected: Expected,
        keyring: Callable[[], Keyring],
        *,
        seed_value: int = 0,
    ) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.ids = ids
        self.latest = {cid: expected[("connection", cid)] for cid in ids}
        self.keyring = keyring
        self.stop_event = threading.Event()
        self.random = random.Random(seed_value)
        self.writes = 0
        self.lost_swaps = 0
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self._refresh_one()
        except Exception as exc:  # surfaced by the test through `errors`
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _refresh_one(self) -> None:
        cid = self.random.choice(self.ids)
        keyring = self.keyring()
        row = self.store.call(read_row, "connection", cid)
        assert row is not None
        base = open_managed(keyring, row.fingerprint, cid, row.blob, field="encrypted_tokens")
        if base != self.latest[cid]:
            self.errors.append(f"row {cid} holds a value the writer did not write last")
            self.stop_event.set()
            return
        value = json.dumps({"access_token": f"at-{cid}-{self.writes}"}).encode()
        while True:
            blob, fp = seal_managed(keyring, cid, value, field="encrypted_tokens")
            won = self.store.call(
                functools.partial(
                    swap_tokens,
                    cid,
                    expected_generation=row.generation or 0,
                    encrypted_tokens=blob,
                    key_fingerprint=fp,
                    now=NOW,
                )
            )
            if won:
                self.latest[cid] = value
                self.writes += 1
                return
            self.lost_swaps += 1
            row = self.store.call(read_row, "connection", cid)
            assert row is not None
            now_stored = open_managed(
                keyring, row.fingerprint, cid, row.blob, field="encrypted_tokens"
            )
            if now_stored != base:
                self.errors.append(f"row {cid} changed under the writer by someone else")
                return

    def finish(self) -> None:
        self.stop_event.set()
        self.join(30)
        assert not self.is_alive()
        assert self.errors == []
