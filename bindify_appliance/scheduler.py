"""Periodic background jobs: jittered, never overlapping, leased across instances, recorded.

Each job is an async callable run every `interval` seconds (±10 % jitter, so several instances
drift apart). Guarantees:
- A job never overlaps itself: a run that is still going when the next tick comes skips it.
- With `leased=True` a job takes a KV lease (`job:{name}`, owned by this instance, released
  with delete-if-value) so one instance runs it when several share a database; without a lease
  (per-instance work such as heartbeats) every instance runs it.
- Every run's start, duration and outcome ("ok", "error", "skipped") is written to `job_runs`
  for `GET /api/v1/jobs` and the admin UI; an exception is logged (scrubbed) and the schedule
  continues. Consecutive errors are counted there too (a success resets the count), so the mail
  outbox can tell administrators about a job that keeps failing.
- `stop()` cancels the timers and waits for running jobs up to a timeout; a job that still runs
  then is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bindify_appliance.clock import Clock
from bindify_appliance.kv import MEMBER, KVStore
from bindify_appliance.store import Store
from bindify_appliance.store.models import JobRun

__all__ = ["Job", "Scheduler", "record_job_run"]

log = logging.getLogger(__name__)

JobFn = Callable[[], Awaitable[str | None]]


@dataclass
class Job:
    """A periodic job; `run` returns an optional short, secret-free detail for the record."""

    name: str
    interval: float
    run: JobFn
    leased: bool = True
    first_delay: float | None = None
    _task: asyncio.Task[str] | None = field(default=None, repr=False)
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)


def record_job_run(
    name: str,
    started_at: datetime,
    outcome: str,
    duration_ms: int | None,
    detail: str | None,
) -> None:
    """Upsert the job's last run (unit of work), counting consecutive failures.

    An error adds one to `consecutive_failures`; a success resets it and the failing-job
    notice marker (the mail outbox tells admins after `FAILING_JOB_THRESHOLD` in a row).
    """
    finished = None if outcome == "running" else started_at
    streak: dict[Any, Any] = {}
    if outcome == "error":
        streak = {JobRun.consecutive_failures: JobRun.consecutive_failures + 1}
    elif outcome == "ok":
        streak = {JobRun.consecutive_failures: 0, JobRun.failure_notified_at: None}
    updated = (
        JobRun.update(
            {
                JobRun.last_started_at: started_at,
                JobRun.last_finished_at: finished,
                JobRun.duration_ms: duration_ms,
                JobRun.outcome: outcome,
                JobRun.detail: detail,
                **streak,
            }
        )
        .where(JobRun.name == name)
        .execute()
    )
    if not updated:
        JobRun.create(
            name=name,
            last_started_at=started_at,
            last_finished_at=finished,
            duration_ms=duration_ms,
            outcome=outcome,
            detail=detail,
            consecutive_failures=1 if outcome == "error" else 0,
        )


JobObserver = Callable[[str, str, float | None], None]


class Scheduler:
    def __init__(
        self,
        store: Store,
        kv: KVStore,
        clock: Clock,
        owner: str,
        *,
        jitter: float = 0.1,
        observe: JobObserver | None = None,
    ) -> None:
        """`observe(job, outcome, seconds or None)` is told of every run (the metrics)."""
        self._observe = observe
        self._store = store
        self._kv = kv
        self._clock = clock
        self._owner = owner
        self._jitter = jitter
        self._jobs: dict[str, Job] = {}
        self._running = False

    @property
    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def add(self, job: Job) -> None:
        if job.name in self._jobs:
            raise ValueError(f"job {job.name!r} is already scheduled")
        self._jobs[job.name] = job
        if self._running:
            self._schedule(job, job.first_delay)

    def start(self) -> None:
        self._running = True
        for job in self._jobs.values():
            self._schedule(job, job.first_delay)

    def _delay(self, job: Job) -> float:
        spread = job.interval * self._jitter
        return max(0.0, job.interval + random.uniform(-spread / 2, spread / 2))  # noqa: S311

    def _schedule(self, job: Job, delay: float | None = None) -> None:
        if not self._running:
            return
        loop = asyncio.get_running_loop()
        job._timer = loop.call_later(self._delay(job) if delay is None else delay, self._tick, job)

    def _tick(self, job: Job) -> None:
        if job._task is not None and not job._task.done():
            # Still running from the last tick: skip this one, never overlap.
            self._schedule(job)
            return
        job._task = asyncio.ensure_future(self.run_once(job))
        job._task.add_done_callback(lambda _t: self._schedule(job))

    async def run_once(self, job: Job) -> str:
        """Run `job` now (respecting its lease); return the outcome."""
        lease_key = f"job:{job.name}"
        if job.leased:
            ttl = max(job.interval, 30.0)
            if not await self._kv.set_if_absent(lease_key, self._owner, ttl, budget=MEMBER):
                if self._observe is not None:
                    self._observe(job.name, "skipped", None)
                return "skipped"
        started_at = self._clock.now()
        started = time.monotonic()
        outcome, detail = "ok", None
        try:
            detail = await job.run()
        except asyncio.CancelledError:
            outcome, detail = "error", "cancelled at shutdown"
            raise
        except Exception as exc:
            outcome, detail = "error", type(exc).__name__
            log.error("job failed", exc_info=True, extra={"job": job.name})
        finally:
            elapsed = time.monotonic() - started
            duration_ms = int(elapsed * 1000)
            if self._observe is not None:
                self._observe(job.name, outcome, elapsed)
            # A lease is kept until the interval ends so other instances skip this round (it
            # expires on its own); it is released early only when the job failed.
            if job.leased and outcome == "error":
                await self._kv.delete_if_value(lease_key, self._owner)
            try:
                await self._store.run(
                    record_job_run, job.name, started_at, outcome, duration_ms, detail
                )
            except Exception:
                log.warning("could not record the job run", extra={"job": job.name})
        return outcome

    async def stop(self, timeout: float = 10.0) -> None:
        self._running = False
        tasks = []
        for job in self._jobs.values():
            if job._timer is not None:
                job._timer.cancel()
                job._timer = None
            if job._task is not None and not job._task.done():
                tasks.append(job._task)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
