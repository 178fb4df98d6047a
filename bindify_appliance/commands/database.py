"""Operator commands on the database: migrate, backup, restore (DESIGN §3).

These are the CLI's bodies, kept out of cli.py so the parser stays a parser. Each refuses with a
`BindifyError` whose message is one line; nothing is changed by a refusal.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bindify_appliance.clock import SystemClock, iso
from bindify_appliance.config import Settings
from bindify_appliance.datadir import BACKUPS_DIR, ensure_data_dir, is_locked
from bindify_appliance.errors import BackupError
from bindify_appliance.store import Store, backup, migrator
from bindify_appliance.store.db import sqlite_path

__all__ = ["backup_command", "migrate_command", "open_migrated_store", "restore_command"]

Printer = Callable[[str], None]


def open_migrated_store(settings: Settings) -> Store:
    """Open the database and apply pending migrations (for CLI commands that write)."""
    ensure_data_dir(settings)
    store = Store(settings.database_url)
    backup_dir = settings.data_path / BACKUPS_DIR if settings.is_sqlite else None
    try:
        migrator.apply(store, backup_dir=backup_dir)
    except BaseException:
        store.close()
        raise
    return store


def migrate_command(
    settings: Settings, *, status: bool, as_json: bool, out: Printer, say: Printer
) -> int:
    ensure_data_dir(settings)
    store = Store(settings.database_url)
    try:
        if status:
            report = migrator.status(store)
            rows = [
                {
                    "number": m.number,
                    "name": m.name,
                    "applied_at": iso(applied) if applied else None,
                }
                for m, applied in report.migrations
            ]
            if as_json:
                unknown = [a.number for a in report.unknown]
                out(json.dumps({"migrations": rows, "unknown_applied": unknown}))
            else:
                for row in rows:
                    state = f"applied {row['applied_at']}" if row["applied_at"] else "pending"
                    out(f"{row['number']:04d} {row['name']:<40} {state}")
                for item in report.unknown:
                    out(f"{item.number:04d} {'(unknown to this version)':<40} applied")
            return 0
        backup_dir = settings.data_path / BACKUPS_DIR if settings.is_sqlite else None
        applied = migrator.apply(store, backup_dir=backup_dir)
        say(f"applied {len(applied)} migration(s)" if applied else "database is up to date")
        return 0
    finally:
        store.close()


def backup_command(settings: Settings, out_path: Path | None, *, out: Printer, say: Printer) -> int:
    db_path = sqlite_path(settings.database_url)
    if db_path is None:
        raise BackupError(
            "backups of PostgreSQL are taken with pg_dump (for example: pg_dump -Fc DBNAME > "
            "bindify.dump); bindify backup handles SQLite only"
        )
    if not db_path.exists():
        raise BackupError(f"no database at {db_path} yet; start the appliance first")
    ensure_data_dir(settings)
    if out_path is not None:
        written = backup.backup_sqlite(db_path, out_path)
    else:
        # Named as a manual backup: no automatic retention ever deletes it (DESIGN §12).
        folder = settings.data_path / BACKUPS_DIR
        written = backup.new_backup(db_path, folder, backup.MANUAL, SystemClock())
    out(str(written))
    say(
        "The backup holds the database only. The master keys (master-keys.json or "
        "BINDIFY_MASTER_KEYS) and secret-key are not in it: back them up separately, or the "
        "managed connections in this backup cannot be decrypted."
    )
    return 0


def restore_command(settings: Settings, source: Path, *, say: Printer) -> int:
    db_path = sqlite_path(settings.database_url)
    if db_path is None:
        raise BackupError("restore handles SQLite only; restore PostgreSQL with pg_restore")
    if is_locked(settings.data_path):
        raise BackupError(
            f"a running bindify serve holds {settings.data_path}; stop it before restoring"
        )
    if not source.is_file():
        raise BackupError(f"{source}: no such file")
    ensure_data_dir(settings)
    backup.restore_sqlite(source, db_path)
    say(f"restored {source} into {db_path}")
    return 0
