"""The `scheduled-backup` job: a SQLite backup into `backups/` every `BINDIFY_BACKUP_INTERVAL`.

Each run writes `scheduled-…Z.db` (never over an existing file) and then keeps the newest
`BINDIFY_BACKUP_KEEP` scheduled backups; manual, pre-migration and unknown files are never
touched (`store.backup.prune_backups`). The job is leased, so with several workers on one data
directory one of them takes each round.

Restarts do not multiply backups: the first run comes a minute after start and writes only when
the newest scheduled backup is older than 80 % of the interval (the jitter is ±5 %, so regular
rounds always write). On PostgreSQL there is no file to copy: the job still runs once a day and
records "not applicable", so `/api/v1/jobs` says why no backup appears (use `pg_dump`).
`BINDIFY_BACKUP_INTERVAL=0` schedules nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bindify_appliance.context import AppContext
from bindify_appliance.datadir import BACKUPS_DIR
from bindify_appliance.scheduler import Job
from bindify_appliance.store import backup, sqlite_path

__all__ = ["JOB_NAME", "NOT_APPLICABLE", "backup_job", "run_scheduled_backup"]

JOB_NAME = "scheduled-backup"
NOT_APPLICABLE = "not applicable: PostgreSQL is backed up with pg_dump"
FIRST_DELAY = 60.0
RECENT_FRACTION = 0.8


def run_scheduled_backup(ctx: AppContext, *, force: bool = False) -> str:
    """Write one scheduled backup and prune; return the job's detail line (blocking)."""
    db_path = sqlite_path(ctx.settings.database_url)
    if db_path is None:
        return NOT_APPLICABLE
    settings = ctx.settings
    folder = settings.data_path / BACKUPS_DIR
    newest = backup.list_backups(folder, backup.SCHEDULED)
    if newest and not force:
        age = (ctx.clock.now() - newest[-1].taken_at).total_seconds()
        if age < settings.backup_interval * RECENT_FRACTION:
            return f"{newest[-1].path.name} is recent; none written"
    written: Path = backup.new_backup(db_path, folder, backup.SCHEDULED, ctx.clock)
    removed = backup.prune_backups(folder, kind=backup.SCHEDULED, keep=settings.backup_keep)
    return f"wrote {written.name}; {len(removed)} older scheduled backup(s) removed"


def backup_job(ctx: AppContext) -> Job | None:
    """The job for `ctx`'s settings, or None when `BINDIFY_BACKUP_INTERVAL` is 0."""
    interval = ctx.settings.backup_interval
    if interval <= 0:
        return None
    if not ctx.settings.is_sqlite:

        async def not_applicable() -> str:
            return NOT_APPLICABLE

        return Job(JOB_NAME, 86400.0, not_applicable, leased=True, first_delay=FIRST_DELAY)

    async def run() -> str:
        # VACUUM INTO reads the whole database: never on the event loop.
        return await asyncio.to_thread(run_scheduled_backup, ctx)

    return Job(JOB_NAME, interval, run, leased=True, first_delay=min(FIRST_DELAY, interval))
