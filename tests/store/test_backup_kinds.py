"""Backups are named by kind, and one kind's retention never deletes another kind's files.

Two bugs this file pins (DESIGN §12): `bindify backup` without `--out` used the pre-migration
name, so the next upgrade's "keep the newest 5 pre-migration backups" deleted manual backups;
and two such backups within one second failed with "already exists".
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bindify_appliance.clock import ManualClock
from bindify_appliance.commands import database as operations
from bindify_appliance.config import Settings, load_settings
from bindify_appliance.store import (
    Store,
    apply,
    list_backups,
    new_backup,
    pre_migration_backup,
    prune_backups,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    data = tmp_path / "data"
    settings = load_settings(environ={"BINDIFY_DATA_DIR": str(data)})
    data.mkdir(mode=0o700)
    with Store(settings.database_url) as store:
        apply(store, backup_dir=None)
    return settings


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """Every clock `operations` makes reads the same second."""
    clock = ManualClock(1_800_000_000)
    monkeypatch.setattr(operations, "SystemClock", lambda: clock)
    return clock


def _manual_backup(settings: Settings) -> Path:
    printed: list[str] = []
    assert operations.backup_command(settings, None, out=printed.append, say=lambda _t: None) == 0
    return Path(printed[0])


def test_manual_backups_survive_pre_migration_retention(
    settings: Settings, frozen: ManualClock
) -> None:
    manual = _manual_backup(settings)
    folder = manual.parent
    with Store(settings.database_url) as store:
        for _ in range(6):
            frozen.advance(60)
            pre_migration_backup(store, folder, frozen)
    assert manual.exists(), "the upgrade's pre-migration cleanup deleted a manual backup"


def test_two_manual_backups_in_one_second(settings: Settings, frozen: ManualClock) -> None:
    first = _manual_backup(settings)
    second = _manual_backup(settings)
    assert first != second and first.exists() and second.exists()


def test_each_kind_has_its_own_retention_and_unknown_files_are_never_pruned(
    settings: Settings, frozen: ManualClock
) -> None:
    folder = settings.data_path / "backups"
    folder.mkdir(exist_ok=True)
    # Files of unknown kind: an older version's name (maybe a manual backup), the operator's own.
    legacy = folder / "bindify-pre-migration-20260101T000000Z.db"
    mine = folder / "before-the-big-change.db"
    odd = folder / "scheduled-notadate.db"
    for path in (legacy, mine, odd):
        path.write_bytes(b"precious")
    with Store(settings.database_url) as store:
        scheduled = [new_backup(store, folder, "scheduled", frozen) for _ in range(4)]
        manual = [new_backup(store, folder, "manual", frozen) for _ in range(3)]
        pre = [new_backup(store, folder, "pre-migration", frozen) for _ in range(3)]
    assert [b.path for b in list_backups(folder, "scheduled")] == scheduled
    assert [p.name for p in scheduled] == [
        "scheduled-20270115T080000Z.db",
        "scheduled-20270115T080000Z-2.db",
        "scheduled-20270115T080000Z-3.db",
        "scheduled-20270115T080000Z-4.db",
    ]

    assert prune_backups(folder, kind="scheduled", keep=2) == scheduled[:2]
    assert prune_backups(folder, kind="pre-migration", keep=0) == pre
    left = {p.name for p in folder.iterdir()}
    assert left == {p.name for p in (legacy, mine, odd, *scheduled[2:], *manual)}
    assert all(p.read_bytes() == b"precious" for p in (legacy, mine, odd))
    with pytest.raises(ValueError):
        prune_backups(folder, kind="unknown", keep=0)


def test_backups_taken_at_once_never_overwrite_each_other(
    settings: Settings, frozen: ManualClock
) -> None:
    folder = settings.data_path / "backups"
    db = settings.data_path / "bindify.db"
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _i: new_backup(db, folder, "manual", frozen), range(8)))
    assert len(set(made)) == 8
    assert all(_is_bindify_db(p) for p in made)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left


def _is_bindify_db(path: Path) -> bool:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] > 0
    finally:
        conn.close()
