"""The `scheduled-backup` job: backups appear, are pruned to BINDIFY_BACKUP_KEEP, leave other
kinds alone, and report "not applicable" on PostgreSQL (DESIGN §12)."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.appliance import Appliance, admin_token, http
from support.keys import STRONG_MASTER_KEY, STRONG_SECRET_KEY

from bindify_appliance.clock import ManualClock
from bindify_appliance.config import load_settings
from bindify_appliance.context import AppContext
from bindify_appliance.datadir import KeySource, ensure_data_dir
from bindify_appliance.jobs import standard_jobs
from bindify_appliance.kv import MemoryKV
from bindify_appliance.ops.backups import JOB_NAME, NOT_APPLICABLE, backup_job
from bindify_appliance.scheduler import Scheduler
from bindify_appliance.store import Store, apply
from bindify_appliance.store.models import JobRun

PG_KEYS = {
    "BINDIFY_MASTER_KEYS": json.dumps([{"key": STRONG_MASTER_KEY}]),
    "BINDIFY_SECRET_KEY": STRONG_SECRET_KEY,
    "BINDIFY_SINGLE_INSTANCE": "true",
}


def _context(tmp_path: Path, env: dict[str, str]) -> Iterator[AppContext]:
    settings = load_settings({}, {"BINDIFY_DATA_DIR": str(tmp_path / "data"), **env})
    ensure_data_dir(settings)
    store = Store(settings.database_url)
    apply(store, backup_dir=None)
    clock = ManualClock()
    try:
        yield AppContext(
            settings=settings,
            store=store,
            kv=MemoryKV(clock),
            keys=KeySource(settings, create=True),
            clock=clock,
            secret_key=b"k" * 32,
            instance_id="test",
        )
    finally:
        store.close()


@pytest.fixture
def sqlite_ctx(tmp_path: Path) -> Iterator[AppContext]:
    yield from _context(tmp_path, {"BINDIFY_BACKUP_INTERVAL": "1h", "BINDIFY_BACKUP_KEEP": "2"})


async def _run(ctx: AppContext) -> str:
    (job,) = [j for j in standard_jobs(ctx) if j.name == JOB_NAME]
    outcome = await Scheduler(ctx.store, ctx.kv, ctx.clock, "test").run_once(job)
    assert outcome == "ok"
    detail = ctx.store.call(JobRun.get_by_id, JOB_NAME).detail
    assert detail is not None
    return detail


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_scheduled_backups_appear_and_are_pruned(sqlite_ctx: AppContext) -> None:
    ctx = sqlite_ctx
    assert isinstance(ctx.clock, ManualClock)
    folder = ctx.settings.data_path / "backups"
    for name in ("manual-20200101T000000Z.db", "pre-migration-20200101T000000Z.db", "mine.db"):
        (folder / name).write_bytes(b"not ours to prune")

    assert "wrote scheduled-20270115T080000Z.db" in await _run(ctx)
    # A restart a minute later does not take another one: the newest is recent.
    ctx.clock.advance(60)
    await ctx.kv.delete(f"job:{JOB_NAME}")
    assert "is recent; none written" in await _run(ctx)
    for _ in range(3):
        ctx.clock.advance(3600)
        await ctx.kv.delete(f"job:{JOB_NAME}")  # the lease lasts the interval
        detail = await _run(ctx)
    assert detail == "wrote scheduled-20270115T110100Z.db; 1 older scheduled backup(s) removed"
    assert _names(folder) == [
        "manual-20200101T000000Z.db",
        "mine.db",
        "pre-migration-20200101T000000Z.db",
        "scheduled-20270115T100100Z.db",
        "scheduled-20270115T110100Z.db",
    ]


def test_interval_zero_schedules_nothing(tmp_path: Path) -> None:
    for ctx in _context(tmp_path, {"BINDIFY_BACKUP_INTERVAL": "0"}):
        assert backup_job(ctx) is None
        assert JOB_NAME not in [j.name for j in standard_jobs(ctx)]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("24h", 86400), ("2d", 172800), ("45", 45)]
)
def test_interval_durations(tmp_path: Path, text: str, seconds: float) -> None:
    env = {"BINDIFY_DATA_DIR": str(tmp_path), "BINDIFY_BACKUP_INTERVAL": text}
    assert load_settings({}, env).backup_interval == seconds


@pytest.mark.parametrize("text", ["soon", "-1h", "0.5s", "h", "1w"])
def test_bad_intervals_are_refused(tmp_path: Path, text: str) -> None:
    from bindify_appliance.errors import ConfigError

    env = {"BINDIFY_DATA_DIR": str(tmp_path), "BINDIFY_BACKUP_INTERVAL": text}
    with pytest.raises(ConfigError, match="BINDIFY_BACKUP_INTERVAL: must be"):
        load_settings({}, env)


async def test_postgres_reports_not_applicable(tmp_path: Path, pg_url: str) -> None:
    for ctx in _context(tmp_path, {"BINDIFY_DATABASE_URL": pg_url, **PG_KEYS}):
        assert await _run(ctx) == NOT_APPLICABLE
        assert _names(ctx.settings.data_path / "backups") == []


def test_a_running_appliance_lists_the_job_and_keeps_the_newest(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"BINDIFY_BACKUP_INTERVAL": "1s", "BINDIFY_BACKUP_KEEP": "2"}
    token = admin_token(data, env)
    folder = data / "backups"
    planted = [f"scheduled-2020010{day}T000000Z.db" for day in (1, 2, 3)]
    others = ["manual-20200101T000000Z.db", "bindify-pre-migration-20200101T000000Z.db"]
    for name in planted + others:
        (folder / name).write_bytes(b"an older backup")
    app = Appliance(data, env).start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            fresh = [p for p in folder.glob("scheduled-2*.db") if p.name not in planted]
            if fresh and not (folder / planted[1]).exists():
                break
            time.sleep(0.1)
        status, _, raw = http(
            "GET", app.url + "/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}
        )
    finally:
        assert app.stop() == 0
    assert status == 200
    (job,) = [j for j in json.loads(raw)["items"] if j["name"] == JOB_NAME]
    assert job["outcome"] == "ok"
    assert re.fullmatch(r"wrote scheduled-\d{8}T\d{6}Z\.db; 2 older .* removed", job["detail"])
    (new,) = fresh
    assert _names(folder) == sorted([new.name, planted[2], *others])
    with sqlite3.connect(new) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
