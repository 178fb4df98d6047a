"""Online SQLite backup under concurrent writes, retention, and restore's refusals."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bindify_appliance.clock import ManualClock
from bindify_appliance.errors import BackupError
from bindify_appliance.store import (
    Store,
    apply,
    backup_name,
    backup_sqlite,
    backups_dir,
    models,
    pre_migration_backup,
    prune_backups,
    restore_sqlite,
)

NOW = ManualClock().now()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path}/data/bindify.db") as s:
        (tmp_path / "data").mkdir(exist_ok=True)
        apply(s, backup_dir=None)
        yield s


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _integrity(path: Path) -> list[tuple[str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def _event_ids(path: Path) -> set[int]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM connection_events")}
    finally:
        conn.close()


def test_backup_names_say_their_kind() -> None:
    clock = ManualClock(1_800_000_000)
    assert backup_name("pre-migration", clock) == "pre-migration-20270115T080000Z.db"
    assert backup_name("manual", clock, 3) == "manual-20270115T080000Z-3.db"
    with pytest.raises(ValueError):
        backup_name("weekly", clock)
    assert backups_dir(Path("/srv/bindify")) == Path("/srv/bindify/backups")


def test_backup_while_writes_continue_then_restore(store: Store, tmp_path: Path) -> None:
    committed = 0
    enough = threading.Event()
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        nonlocal committed
        try:
            with store.connection():
                while not stop.is_set():
                    event = models.ConnectionEvent.create(
                        event_type="proxy_request", category="success", created_at=NOW
                    )
                    committed = event.id  # set only after the insert committed
                    if committed >= 300:
                        enough.set()
        except BaseException as exc:  # reported below
            errors.append(exc)
            enough.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert enough.wait(30)
        committed_before = committed
        out = backup_sqlite(store, tmp_path / "new-dir" / "nested" / "b.db")
        # The writer keeps committing after the backup (it was never broken or locked out).
        mark = committed
        deadline = time.monotonic() + 10
        while committed <= mark and not errors and time.monotonic() < deadline:
            time.sleep(0.001)
        assert committed > mark
    finally:
        stop.set()
        thread.join(30)
    assert errors == []

    assert out == tmp_path / "new-dir" / "nested" / "b.db"
    assert _mode(out) == 0o600
    assert _mode(out.parent) == 0o700 and _mode(out.parent.parent) == 0o700
    assert not [p for p in out.parent.iterdir() if p.name != "b.db"]  # no temp files left

    target = tmp_path / "restored" / "bindify.db"
    restore_sqlite(out, target)
    assert _integrity(target) == [("ok",)]
    ids = _event_ids(target)
    assert set(range(1, committed_before + 1)) <= ids
    assert _mode(target) == 0o600


def test_backup_accepts_a_path(store: Store, tmp_path: Path) -> None:
    store.call(lambda: models.Setting.create(key="k", value="v", updated_at=NOW))
    assert store.path is not None
    out = backup_sqlite(store.path, tmp_path / "b.db")
    conn = sqlite3.connect(out)
    try:
        assert conn.execute("SELECT value FROM settings").fetchall() == [("v",)]
    finally:
        conn.close()


def test_backup_never_overwrites(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "exists.db"
    out.write_bytes(b"precious")
    with pytest.raises(BackupError, match="already exists"):
        backup_sqlite(store, out)
    assert out.read_bytes() == b"precious"


def test_backup_refuses_a_non_sqlite_source(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("hello")
    with pytest.raises(BackupError):
        backup_sqlite(source, tmp_path / "b.db")
    with pytest.raises(BackupError):
        backup_sqlite(tmp_path / "missing.db", tmp_path / "b.db")
    assert not (tmp_path / "b.db").exists()


def test_postgres_backup_points_to_pg_dump(pg_url: str, tmp_path: Path) -> None:
    with Store(pg_url) as s, pytest.raises(BackupError, match="pg_dump"):
        backup_sqlite(s, tmp_path / "b.db")
    assert not (tmp_path / "b.db").exists()


def test_pre_migration_backups_keep_the_newest_five(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "data" / "backups"
    clock = ManualClock(1_800_000_000)
    made = []
    for _ in range(7):
        made.append(pre_migration_backup(store, folder, clock))
        clock.advance(86400)
    unrelated = folder / "keep-me.db"
    unrelated.write_text("mine")
    assert prune_backups(folder) == []
    assert sorted(folder.iterdir()) == sorted([*made[2:], unrelated])
    assert _mode(folder) == 0o700
    assert all(_mode(p) == 0o600 for p in made[2:])


def test_two_backups_in_one_second_do_not_collide(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    clock = ManualClock(1_800_000_000)
    first = pre_migration_backup(store, folder, clock)
    second = pre_migration_backup(store, folder, clock)
    assert first.name == "pre-migration-20270115T080000Z.db"
    assert second.name == "pre-migration-20270115T080000Z-2.db"
    # The suffixed one is newer, so it survives pruning before the first.
    assert prune_backups(folder, keep=1) == [first]


def test_restore_replaces_the_database_and_drops_stale_wal(store: Store, tmp_path: Path) -> None:
    store.call(lambda: models.Setting.create(key="k", value="old", updated_at=NOW))
    backup = backup_sqlite(store, tmp_path / "b.db")
    store.call(
        lambda: models.Setting.update(value="new").where(models.Setting.key == "k").execute()
    )
    assert store.path is not None
    db_path = store.path
    store.close()
    # Leftovers a crashed process might leave; replayed onto the restored file they'd corrupt it.
    Path(f"{db_path}-wal").write_bytes(os.urandom(4096))
    Path(f"{db_path}-shm").write_bytes(os.urandom(4096))

    restore_sqlite(backup, db_path)

    assert not Path(f"{db_path}-wal").exists() and not Path(f"{db_path}-shm").exists()
    assert _integrity(db_path) == [("ok",)]
    with Store(f"sqlite:///{db_path}") as s:
        assert s.call(lambda: models.Setting.get_by_id("k").value) == "old"
    assert [p.name for p in db_path.parent.iterdir() if p.name.startswith(".bindify")] == []


def _target(tmp_path: Path) -> Path:
    target = tmp_path / "live" / "bindify.db"
    with Store(f"sqlite:///{target}") as s:
        target.parent.mkdir(exist_ok=True)
        apply(s, backup_dir=None)
        s.call(lambda: models.Setting.create(key="k", value="v", updated_at=NOW))
    return target


def test_restore_refuses_a_non_sqlite_file(tmp_path: Path) -> None:
    target = _target(tmp_path)
    before = _digest(target)
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BackupError, match="not a SQLite database"):
        restore_sqlite(bogus, target)
    assert _digest(target) == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["bindify.db"]


def test_restore_refuses_a_database_without_schema_migrations(tmp_path: Path) -> None:
    target = _target(tmp_path)
    before = _digest(target)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(BackupError, match="schema_migrations"):
        restore_sqlite(other, target)
    assert _digest(target) == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["bindify.db"]


def test_restore_refuses_a_damaged_database(tmp_path: Path, store: Store) -> None:
    target = _target(tmp_path)
    before = _digest(target)
    store.call(
        lambda: [
            models.Setting.create(key=str(i), value="x" * 500, updated_at=NOW) for i in range(200)
        ]
    )
    damaged = backup_sqlite(store, tmp_path / "damaged.db")
    data = bytearray(damaged.read_bytes())
    data[8192:16384] = os.urandom(8192)  # scribble over pages past the header
    damaged.write_bytes(bytes(data))
    with pytest.raises(BackupError):
        restore_sqlite(damaged, target)
    assert _digest(target) == before


def test_restore_refuses_a_missing_or_live_source(tmp_path: Path, store: Store) -> None:
    target = _target(tmp_path)
    before = _digest(target)
    with pytest.raises(BackupError, match="does not exist"):
        restore_sqlite(tmp_path / "nope.db", target)
    assert store.path is not None
    store.call(lambda: models.Setting.create(key="live", value="v", updated_at=NOW))
    assert Path(f"{store.path}-wal").exists()
    with pytest.raises(BackupError, match="-wal"):
        restore_sqlite(store.path, target)
    assert _digest(target) == before
