"""The only package that imports peewee: database URLs, the Store, models, migrations, backups.

Everything else in the appliance reaches the database through a `Store` and the per-area
modules of this package (`store/users.py`, `store/connections.py`, …), running synchronous
units of work with `await store.run(fn, *args)`.
"""

from __future__ import annotations

from bindify_appliance.store import models
from bindify_appliance.store.backup import (
    KEEP_PRE_MIGRATION_BACKUPS,
    PRE_MIGRATION_PREFIX,
    backup_sqlite,
    backups_dir,
    default_backup_name,
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
    "KEEP_PRE_MIGRATION_BACKUPS",
    "MIGRATIONS_TABLE",
    "MIGRATION_LOCK_KEY",
    "PRE_MIGRATION_PREFIX",
    "AppliedMigration",
    "Migration",
    "MigrationStatus",
    "Store",
    "StoreKind",
    "apply",
    "backup_sqlite",
    "backups_dir",
    "database_kind",
    "default_backup_name",
    "list_migrations",
    "models",
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
