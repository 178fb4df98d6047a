"""Online SQLite backups named by kind, per-kind retention, and restore.

`backup_sqlite` copies a live database with `VACUUM INTO` on a connection of its own: one read
transaction, so the copy is a consistent snapshot of everything committed before it began,
while other connections keep writing (WAL). The copy is written to an empty 0600 temp file in
the target folder (VACUUM INTO accepts an empty file, so the data is never readable by others,
not even for a moment), fsynced, then hard-linked into place: a crash never leaves a half backup
under the final name, and an existing file is never overwritten, even by a concurrent backup.

Backups in `backups/` are named `{kind}-YYYYmmddTHHMMSSZ[-N].db`, kind one of `manual`
(`bindify backup`), `scheduled` (the `scheduled-backup` job) and `pre-migration` (before `serve`
or `migrate` changes the schema). Invariants:
- `new_backup` never fails because another backup was taken in the same second: it takes the
  next free `-N` suffix.
- `prune_backups` deletes only files whose name parses as the kind it is asked to prune; a
  manual backup is never deleted by the pre-migration or scheduled retention, and a file of
  unknown kind (including the `bindify-pre-migration-*` names of older versions, which may be
  manual backups) is never deleted at all. Manual backups have no automatic retention.

`restore_sqlite` copies the backup next to the target, checks the copy (SQLite header,
`PRAGMA integrity_check`, a `schema_migrations` table), and only then swaps it in atomically.
Any refusal leaves the target untouched. Refusing while a `serve` holds `bindify.lock` is the
caller's job.

PostgreSQL databases are backed up with `pg_dump`; asking for a file backup raises BackupError.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bindify_appliance.clock import Clock
from bindify_appliance.errors import BackupError
from bindify_appliance.store.db import Store

__all__ = [
    "BACKUP_KINDS",
    "KEEP_PRE_MIGRATION_BACKUPS",
    "MANUAL",
    "PRE_MIGRATION",
    "SCHEDULED",
    "BackupFile",
    "backup_name",
    "backup_sqlite",
    "backups_dir",
    "list_backups",
    "new_backup",
    "pre_migration_backup",
    "prune_backups",
    "restore_sqlite",
]

MANUAL, SCHEDULED, PRE_MIGRATION = "manual", "scheduled", "pre-migration"
BACKUP_KINDS = (MANUAL, SCHEDULED, PRE_MIGRATION)
KEEP_PRE_MIGRATION_BACKUPS = 5
_STAMP = "%Y%m%dT%H%M%SZ"
_NAME_RE = re.compile(r"^(manual|scheduled|pre-migration)-(\d{8}T\d{6}Z)(?:-(\d+))?\.db$")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_PG_HINT = (
    "PostgreSQL databases are backed up with pg_dump (for example "
    "`pg_dump --format=custom --file=bindify.dump DATABASE`), not by this command"
)


def backups_dir(data_dir: Path) -> Path:
    """Where backups taken without an explicit path go: `{data_dir}/backups`."""
    return Path(data_dir) / "backups"


def backup_name(kind: str, clock: Clock, counter: int = 1) -> str:
    """`{kind}-YYYYmmddTHHMMSSZ.db` for the clock's UTC second; `-N` added for counter N > 1."""
    if kind not in BACKUP_KINDS:
        raise ValueError(f"unknown backup kind {kind!r}")
    suffix = f"-{counter}" if counter > 1 else ""
    return f"{kind}-{clock.now().strftime(_STAMP)}{suffix}.db"


@dataclass(frozen=True)
class BackupFile:
    """A file in `backups/` whose name says its kind."""

    kind: str
    taken_at: datetime
    counter: int
    path: Path


def list_backups(folder: Path, kind: str | None = None) -> list[BackupFile]:
    """Backups in `folder` whose names parse (optionally of one kind), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _NAME_RE.match(entry.name)
        if match is None or (kind is not None and match.group(1) != kind) or not entry.is_file():
            continue
        taken = datetime.strptime(match.group(2), _STAMP).replace(tzinfo=UTC)
        found.append(BackupFile(match.group(1), taken, int(match.group(3) or 1), entry))
    found.sort(key=lambda b: (b.taken_at, b.counter, b.kind))
    return found


def _fsync_dir(folder: Path) -> None:
    # Makes a rename durable; not every platform lets a directory be opened, hence best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_private_dir(folder: Path) -> None:
    """Create `folder` (and missing parents) if needed; every folder created here is 0700."""
    missing = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def _is_sqlite_file(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def _source_path(source: Store | Path) -> Path:
    if isinstance(source, Store):
        if source.kind != "sqlite" or source.path is None:
            raise BackupError(_PG_HINT)
        return source.path
    return Path(source)


class _Taken(BackupError):
    """`out` exists (or appeared while copying): the caller may pick another name."""


def _place(tmp: Path, out: Path) -> None:
    """Move `tmp` to `out` unless `out` exists, atomically where the file system can link."""
    try:
        os.link(tmp, out)  # fails with EEXIST instead of replacing: two writers cannot clash
    except FileExistsError:
        raise _Taken(f"{out} already exists; choose another path") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # No hard links here (some network and FUSE file systems): check, then rename.
        if out.exists():
            raise _Taken(f"{out} already exists; choose another path") from None
        os.replace(tmp, out)
        return
    tmp.unlink()


def backup_sqlite(source: Store | Path, out: Path) -> Path:
    """Write a consistent copy of a (possibly busy) SQLite database to `out`; return `out`.

    `out` must not exist; its folder is created (0700) when missing; the file is 0600.

    Raises:
        BackupError: PostgreSQL store, source missing or not SQLite, `out` exists, or the copy
            failed (nothing is left behind at `out`).
    """
    src = _source_path(source)
    out = Path(out)
    if not src.is_file() or not _is_sqlite_file(src):
        raise BackupError(f"{src} is not a SQLite database file")
    if out.exists():
        raise _Taken(f"{out} already exists; choose another path")
    _ensure_private_dir(out.parent)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=".bindify-backup-", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        conn = sqlite3.connect(str(src), timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("VACUUM INTO ?", (str(tmp),))
        finally:
            conn.close()
        os.chmod(tmp, 0o600)
        _fsync_file(tmp)
        _place(tmp, out)
        _fsync_dir(out.parent)
    except sqlite3.Error as exc:
        tmp.unlink(missing_ok=True)
        raise BackupError(f"backup of {src} failed ({type(exc).__name__})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def new_backup(source: Store | Path, folder: Path, kind: str, clock: Clock) -> Path:
    """Back `source` up into `folder` as a `kind` backup named for now; return its path.

    A name already taken (another backup in the same second, by this or another process) moves
    on to the next `-N` suffix instead of failing.
    """
    folder = Path(folder)
    for counter in range(1, 1000):
        try:
            return backup_sqlite(source, folder / backup_name(kind, clock, counter))
        except _Taken:
            continue
    raise BackupError(f"too many {kind} backups in one second in {folder}")


def prune_backups(
    folder: Path, *, kind: str = PRE_MIGRATION, keep: int = KEEP_PRE_MIGRATION_BACKUPS
) -> list[Path]:
    """Delete all but the newest `keep` backups of `kind` in `folder`; return the deleted.

    Only files whose name parses as `kind` are considered: other kinds, and files of unknown
    kind, are never touched.
    """
    if kind not in BACKUP_KINDS:
        raise ValueError(f"unknown backup kind {kind!r}")
    backups = list_backups(folder, kind)
    doomed = [b.path for b in backups[: max(len(backups) - max(keep, 0), 0)]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def pre_migration_backup(
    store: Store, folder: Path, clock: Clock, *, keep: int = KEEP_PRE_MIGRATION_BACKUPS
) -> Path:
    """Back `store` up into `folder` as `pre-migration-…Z.db`, then keep the newest `keep`."""
    out = new_backup(store, folder, PRE_MIGRATION, clock)
    prune_backups(folder, kind=PRE_MIGRATION, keep=keep)
    return out


def _verify_copy(path: Path, label: Path) -> None:
    """Refuse unless `path` is an intact SQLite database with a `schema_migrations` table."""
    if not _is_sqlite_file(path):
        raise BackupError(f"{label} is not a SQLite database")
    try:
        conn = sqlite3.connect(str(path), isolation_level=None)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
            has_migrations = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{label} is not a readable SQLite database") from exc
    if rows != [("ok",)]:
        raise BackupError(f"{label} fails PRAGMA integrity_check")
    if not has_migrations:
        raise BackupError(f"{label} is not a Bindify database (no schema_migrations table)")


def _checkpoint_quietly(db_path: Path) -> None:
    # Folds the old database's WAL into its file first, so the old database stays whole even if
    # we crash between removing its -wal and the rename. Best effort: it may be unreadable.
    if not db_path.is_file():
        return
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(str(db_path), timeout=5, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


def restore_sqlite(src: Path, db_path: Path) -> None:
    """Replace the database at `db_path` with the backup `src`, atomically.

    The caller must make sure no process has `db_path` open (the `bindify.lock` check).

    Raises:
        BackupError: `src` is missing, not SQLite, damaged, not a Bindify database, or is a
            live database with its own -wal file; the target is left unchanged.
    """
    src = Path(src)
    db_path = Path(db_path)
    if not src.is_file():
        raise BackupError(f"{src} does not exist")
    if Path(f"{src}-wal").exists():
        raise BackupError(
            f"{src} has a -wal file: it is a live database, not a backup; "
            "make a backup of it with `bindify backup` and restore that"
        )
    if not _is_sqlite_file(src):
        raise BackupError(f"{src} is not a SQLite database")
    _ensure_private_dir(db_path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=db_path.parent, prefix=".bindify-restore-", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(src, tmp)  # into the 0600 file mkstemp made
        _verify_copy(tmp, src)
        _fsync_file(tmp)
        _checkpoint_quietly(db_path)
        # A -wal, -shm or hot -journal left from the old database would be replayed onto the
        # new file and corrupt it: they go before the rename, never after.
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, db_path)
        _fsync_dir(db_path.parent)
    except OSError as exc:
        raise BackupError(f"restore into {db_path} failed ({type(exc).__name__})") from exc
    finally:
        tmp.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
