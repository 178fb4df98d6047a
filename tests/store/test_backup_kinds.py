"""Backups are named by kind, and one kind's retention never deletes another kind's files.

Two bugs this file pins (DESIGN §12): `bindify backup` without `--out` used the pre-migration
name, so the next upgrade's "keep the newest 5 pre-migration backups" deleted manual backups;
and two such backups within one second failed with "already exists".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bindify_appliance import operations
from bindify_appliance.clock import ManualClock
from bindify_appliance.config import Settings, load_settings
from bindify_appliance.store import Store, apply, pre_migration_backup


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
