"""The scheduler: no overlap, leases across instances, recorded outcomes, clean stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bindify_appliance.clock import SystemClock
from bindify_appliance.kv import MemoryKV, open_kv
from bindify_appliance.scheduler import Job, Scheduler
from bindify_appliance.store import Store, apply
from bindify_appliance.store.models import JobRun


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/db.sqlite")
    apply(s, backup_dir=None)
    yield s
    s.close()


async def test_job_never_overlaps_itself(store: Store) -> None:
    active = 0
    peak = 0
    runs = 0

    async def slow() -> str:
        nonlocal active, peak, runs
        active += 1
        runs += 1
        peak = max(peak, active)
        await asyncio.sleep(0.15)
        active -= 1
        return "done"

    sched = Scheduler(store, MemoryKV(), SystemClock(), "me")
    sched.add(Job("slow", interval=0.02, run=slow, leased=False, first_delay=0))
    sched.start()
    await asyncio.sleep(0.5)
    await sched.stop()
    assert peak == 1
    assert 2 <= runs <= 4
    row = store.call(JobRun.get_by_id, "slow")
    assert row.outcome == "ok" and row.detail == "done" and (row.duration_ms or 0) >= 100


async def test_lease_lets_one_instance_run_each_round(store: Store, redis_url: str) -> None:
    import secrets

    kv_a = open_kv(redis_url)
    kv_b = open_kv(redis_url)
    name = "lease-" + secrets.token_hex(4)
    ran: list[str] = []

    def job_for(who: str) -> Job:
        async def run() -> None:
            ran.append(who)

        return Job(name, interval=60, run=run, leased=True)

    a = Scheduler(store, kv_a, SystemClock(), "a")
    b = Scheduler(store, kv_b, SystemClock(), "b")
    outcomes = await asyncio.gather(a.run_once(job_for("a")), b.run_once(job_for("b")))
    assert sorted(outcomes) == ["ok", "skipped"]
    assert len(ran) == 1
    await kv_a.delete(f"job:{name}")
    await kv_a.close()
    await kv_b.close()


@pytest.mark.allow_error_logs
async def test_failure_is_recorded_and_schedule_continues(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom with secret bnd_live_" + "x" * 86)

    sched = Scheduler(store, MemoryKV(), SystemClock(), "me")
    job = Job("flaky", interval=0.05, run=flaky, leased=True, first_delay=0)
    assert await sched.run_once(job) == "error"
    assert store.call(JobRun.get_by_id, "flaky").detail == "RuntimeError"
    # A failed leased run releases its lease, so the next round runs again.
    assert await sched.run_once(job) == "ok"
    assert store.call(JobRun.get_by_id, "flaky").outcome == "ok"
    assert any(r.levelno == logging.ERROR for r in caplog.records)


async def test_stop_cancels_a_stuck_job(store: Store) -> None:
    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.sleep(3600)

    sched = Scheduler(store, MemoryKV(), SystemClock(), "me")
    sched.add(Job("stuck", interval=10, run=stuck, leased=False, first_delay=0))
    sched.start()
    await asyncio.wait_for(started.wait(), 2)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await sched.stop(timeout=0.2)
    assert loop.time() - t0 < 2
    assert store.call(JobRun.get_by_id, "stuck").outcome == "error"


async def test_duplicate_names_refused(store: Store) -> None:
    async def run() -> None:
        return None

    sched = Scheduler(store, MemoryKV(), SystemClock(), "me")
    sched.add(Job("x", 1, run))
    with pytest.raises(ValueError, match="already scheduled"):
        sched.add(Job("x", 1, run))
