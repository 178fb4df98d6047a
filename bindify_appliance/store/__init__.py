"""The only package that imports peewee: database URLs, the Store, models, migrations, backups.

Everything else in the appliance reaches the database through a `Store` and the per-area
modules of this package (`store/users.py`, `store/connections.py`, …), running synchronous
units of work with `await store.run(fn, *args)`.
"""

# ruff: noqa: E402 - peewee must be imported after `pgdriver.defer()`

from __future__ import annotations

from bindify_appliance.store import pgdriver

pgdriver.defer()  # before any module below imports peewee (store/pgdriver.py says why)

from bindify_appliance.store import models
from bindify_appliance.store.backup import (
    BACKUP_KINDS,
    KEEP_PRE_MIGRATION_BACKUPS,
    BackupFile,
    backup_name,
    backup_sqlite,
    backups_dir,
    list_backups,
    new_backup,
    pre_migration_backup,
    prune_backups,
    restore_sqlite,
)
from bindify_appliance.store.db import (
    Store,
    StoreKind,
    database_kind,
    open_database,
    redact_database_url,
    run_sql,
    sqlite_path,
)
from bindify_appliance.store.migrator import (
    MIGRATION_LOCK_KEY,
    MIGRATIONS_TABLE,
    AppliedMigration,
    Migration,
    MigrationStatus,
    apply,
    list_migrations,
    pending,
    status,
)

__all__ = [
    "BACKUP_KINDS",
    "KEEP_PRE_MIGRATION_BACKUPS",
    "MIGRATIONS_TABLE",
    "MIGRATION_LOCK_KEY",
    "AppliedMigration",
    "BackupFile",
    "Migration",
    "MigrationStatus",
    "Store",
    "StoreKind",
    "apply",
    "backup_name",
    "backup_sqlite",
    "backups_dir",
    "database_kind",
    "list_backups",
    "list_migrations",
    "models",
    "new_backup",
    "open_database",
    "pending",
    "pre_migration_backup",
    "prune_backups",
    "redact_database_url",
    "restore_sqlite",
    "run_sql",
    "sqlite_path",
    "status",
]
