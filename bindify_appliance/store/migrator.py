"""The schema migration runner: numbered files `NNNN_name.py`, each with `up(db)`.

Migration files live in `resources.resource_dir("migrations")` (a plain data folder, so a
frozen binary finds them too) and are loaded with `importlib.util.spec_from_file_location`.
Each `up(db)` receives the peewee Database and uses frozen inline models or portable SQL;
migration files never import `store.models`, so changing a model never changes what an old
migration does.

Applied migrations are recorded in `schema_migrations(number, name, applied_at)`.

Invariants:
- Each migration runs in its own transaction together with its `schema_migrations` row, on
  both engines: it is applied entirely or not at all.
- A database recording a migration this code does not know is refused (SchemaTooNewError)
  before anything is changed: downgrade protection.
- Concurrent starters apply each migration exactly once: on PostgreSQL the whole run holds a
  session advisory lock (`MIGRATION_LOCK_KEY`); on SQLite each migration's transaction is
  `BEGIN IMMEDIATE` and re-checks, inside it, whether another process got there first.
- Before changing an existing SQLite database, a backup is written to `backup_dir` (when given);
  a brand-new empty database is not backed up.
- A migration that needs SQLite foreign keys off (a table rebuild) sets module-level
  `disable_foreign_keys = True`; the runner turns them off around its transaction and runs
  `PRAGMA foreign_key_check` before committing.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import peewee

from bindify_appliance import resources
from bindify_appliance.clock import Clock, SystemClock, iso, parse_iso
from bindify_appliance.errors import MigrationError, SchemaTooNewError
from bindify_appliance.store.backup import pre_migration_backup
from bindify_appliance.store.db import Store, run_sql

__all__ = [
    "MIGRATIONS_TABLE",
    "MIGRATION_LOCK_KEY",
    "AppliedMigration",
    "Migration",
    "MigrationStatus",
    "apply",
    "list_migrations",
    "pending",
    "status",
]

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"
# pg_advisory_lock key: "bindify" as a big-endian integer (fits a bigint).
MIGRATION_LOCK_KEY = int.from_bytes(b"bindify", "big")

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9][a-z0-9_]*)\.py$")


@dataclass(frozen=True, order=True)
class Migration:
    number: int
    name: str
    path: Path = field(compare=False)

    @property
    def label(self) -> str:
        return f"{self.number:04d}_{self.name}"


@dataclass(frozen=True)
class AppliedMigration:
    """A row of schema_migrations."""

    number: int
    name: str
    applied_at: datetime


@dataclass(frozen=True)
class MigrationStatus:
    """Every known migration with when it was applied (None: pending), plus applied numbers
    this code does not know (non-empty means the database is newer than the code)."""

    migrations: list[tuple[Migration, datetime | None]]
    unknown: list[AppliedMigration]

    @property
    def pending(self) -> list[Migration]:
        return [migration for migration, applied_at in self.migrations if applied_at is None]


def list_migrations(directory: Path | None = None) -> list[Migration]:
    """The migration files in `directory` (default: the bundled folder), by number.

    Raises:
        MigrationError: two files share a number, or a file starting with a digit is not named
            `NNNN_name.py` (lower-case name).
    """
    folder = Path(directory) if directory is not None else resources.resource_dir("migrations")
    found: dict[int, Migration] = {}
    for entry in sorted(folder.iterdir()):
        if not entry.name[:1].isdigit() or not entry.is_file():
            continue
        match = _FILE_RE.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.py")
        number = int(match.group(1))
        if number == 0:
            raise MigrationError(f"migration file {entry.name!r}: numbers start at 0001")
        if number in found:
            raise MigrationError(
                f"migrations {found[number].path.name!r} and {entry.name!r} share number {number}"
            )
        found[number] = Migration(number, match.group(2), entry)
    return [found[number] for number in sorted(found)]


def _load(migration: Migration) -> tuple[Callable[[peewee.Database], None], ModuleType]:
    spec = importlib.util.spec_from_file_location(
        f"bindify_migration_{migration.number:04d}", migration.path
    )
    if spec is None or spec.loader is None:
        raise MigrationError(f"migration {migration.label} cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise MigrationError(
            f"migration {migration.label} failed to load ({type(exc).__name__})"
        ) from exc
    up = getattr(module, "up", None)
    if not callable(up):
        raise MigrationError(f"migration {migration.label} defines no up(db) function")
    return up, module


def _migrations_table() -> peewee.Table:
    return peewee.Table(MIGRATIONS_TABLE, ("number", "name", "applied_at"))


def _read_applied(db: peewee.Database) -> dict[int, AppliedMigration]:
    if not db.table_exists(MIGRATIONS_TABLE):
        return {}
    query = _migrations_table().select().order_by(peewee.SQL("number")).bind(db)
    rows: list[dict[str, Any]] = list(query.dicts())
    return {
        int(row["number"]): AppliedMigration(
            int(row["number"]), str(row["name"]), parse_iso(str(row["applied_at"]))
        )
        for row in rows
    }


def _status_in(db: peewee.Database, migrations: list[Migration]) -> MigrationStatus:
    applied = _read_applied(db)
    known = {migration.number for migration in migrations}
    return MigrationStatus(
        migrations=[
            (m, applied[m.number].applied_at if m.number in applied else None) for m in migrations
        ],
        unknown=[row for number, row in sorted(applied.items()) if number not in known],
    )


def status(store: Store, *, directory: Path | None = None) -> MigrationStatus:
    """Which migrations are applied, which pending, and any unknown applied ones. Read-only."""
    migrations = list_migrations(directory)
    with store.connection() as db:
        return _status_in(db, migrations)


def pending(store: Store, *, directory: Path | None = None) -> list[Migration]:
    """The migrations not yet applied, in order. Read-only."""
    return status(store, directory=directory).pending


def _too_new(unknown: list[AppliedMigration]) -> SchemaTooNewError:
    labels = ", ".join(f"{row.number:04d}_{row.name}" for row in unknown)
    return SchemaTooNewError(
        f"the database records migrations this version does not know ({labels}); "
        "it was upgraded by a newer Bindify: run that version, or restore a backup"
    )


def _ensure_table(db: peewee.Database) -> None:
    run_sql(
        db,
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        "number INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )


def _apply_one(
    store: Store,
    migration: Migration,
    up: Callable[[peewee.Database], None],
    module: ModuleType,
    clock: Clock,
) -> bool:
    """Apply one migration in its own transaction; False if someone else already had."""
    db = store.db
    table = _migrations_table()
    fk_off = store.kind == "sqlite" and bool(getattr(module, "disable_foreign_keys", False))
    if fk_off:
        # Must happen outside a transaction: SQLite ignores it inside one.
        run_sql(db, "PRAGMA foreign_keys = OFF")
    try:
        with db.atomic():
            # Re-checked under the write lock: another process may have just applied it.
            already = (
                table.select(peewee.Column(table, "number"))
                .where(peewee.Column(table, "number") == migration.number)
                .bind(db)
                .exists()
            )
            if already:
                return False
            up(db)
            if fk_off and run_sql(db, "PRAGMA foreign_key_check").fetchone() is not None:
                raise MigrationError(
                    f"migration {migration.label} left rows violating foreign keys"
                )
            table.insert(
                number=migration.number, name=migration.name, applied_at=iso(clock.now())
            ).bind(db).execute()
    except MigrationError:
        raise
    except Exception as exc:
        raise MigrationError(f"migration {migration.label} failed ({type(exc).__name__})") from exc
    finally:
        if fk_off:
            run_sql(db, "PRAGMA foreign_keys = ON")
    return True


def _lock(store: Store) -> None:
    if store.kind == "postgresql":
        run_sql(store.db, "SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))


def _unlock(store: Store) -> None:
    if store.kind != "postgresql":
        return
    try:
        run_sql(store.db, "SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    except peewee.DatabaseError:
        # The session is gone, and the lock with it.
        log.warning("could not release the migration lock; it ends with the session")


def apply(
    store: Store,
    *,
    backup_dir: Path | None,
    directory: Path | None = None,
    clock: Clock | None = None,
) -> list[Migration]:
    """Apply every pending migration in order; return those this call applied.

    With `backup_dir`, an existing SQLite database is backed up there first (newest 5 kept).
    Runs in the calling thread (use `await store.run(functools.partial(apply, store, …))` from
    the event loop).

    Raises:
        SchemaTooNewError: the database records unknown migrations; nothing was changed.
        MigrationError: the migration set is inconsistent or a migration failed (that
            migration was rolled back; earlier ones stay applied).
        BackupError: the pre-migration backup failed; nothing was migrated.
    """
    clock = clock or SystemClock()
    migrations = list_migrations(directory)
    with store.connection() as db:
        _lock(store)
        try:
            state = _status_in(db, migrations)
            if state.unknown:
                raise _too_new(state.unknown)
            todo = state.pending
            if not todo:
                return []
            loaded = [(migration, *_load(migration)) for migration in todo]
            if backup_dir is not None and store.kind == "sqlite" and db.get_tables():
                path = pre_migration_backup(store, backup_dir, clock)
                log.info("pre-migration backup written", extra={"path": str(path)})
            _ensure_table(db)
            applied: list[Migration] = []
            for migration, up, module in loaded:
                if _apply_one(store, migration, up, module, clock):
                    log.info("migration applied", extra={"migration": migration.label})
                    applied.append(migration)
            return applied
        finally:
            _unlock(store)
