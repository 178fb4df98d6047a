"""Background lifecycle jobs: refresh without client traffic, stale-marker recovery, the
scheduler's overlap and shutdown rules — all on the ManualClock, no sleeps."""

from __future__ import annotations

import asyncio

from peers.oauth_upstream import OAuthUpstream
from support.inprocess import Appliance
from support.managed import Connected, events, payload, refresh_calls, row, rpc

from bindify_appliance.jobs import lifecycle_jobs
from bindify_appliance.scheduler import Job, Scheduler
from bindify_appliance.services.refresh import OAuthRefresher
from bindify_appliance.store.models import Connection, JobRun


def _jobs(appliance: Appliance) -> dict[str, Job]:
    refresher = OAuthRefresher(
        appliance.ctx, appliance.connect.registry, appliance.connect.outbound
    )
    jobs = lifecycle_jobs(appliance.ctx, refresher, appliance.connect.registry)
    return {job.name: job for job in jobs}


async def test_background_job_refreshes_managed_connection_without_traffic(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    job = _jobs(appliance)["token-refresh"]
    assert "0 refreshed" in (await job.run() or "")  # just connected: not due
    assert refresh_calls(upstream) == 0
    before = payload(appliance, connected.connection_id)
    # The token expires within the hour: due, though no client has called.
    appliance.clock.advance(3600 - 1800)
    assert (await job.run() or "").startswith("1 refreshed")
    assert refresh_calls(upstream) == 1
    after = payload(appliance, connected.connection_id)
    assert after["refresh_token"] != before["refresh_token"]
    stored = row(appliance, connected.connection_id)
    assert stored.last_refreshed_at == appliance.clock.now().replace(microsecond=0)
    # Not due again until a day (less the buffer) has passed or expiry nears again.
    assert (await job.run() or "").startswith("0 refreshed")
    assert refresh_calls(upstream) == 1
    # The refreshed grant serves requests with no refresh of its own.
    assert "result" in await rpc(appliance.url + connected.secret_path)
    assert refresh_calls(upstream) == 1 and upstream.revoked_families == set()


async def test_job_skips_zero_knowledge_connections(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    appliance.store.call(
        lambda: (
            Connection.update(key_storage_mode="zero_knowledge")
            .where(Connection.id == connected.connection_id)
            .execute()
        )
    )
    appliance.clock.advance(3600 * 30)
    assert (await _jobs(appliance)["token-refresh"].run() or "").startswith("0 refreshed")
    assert refresh_calls(upstream) == 0


async def test_stale_marker_is_flagged_needs_reconnect_never_retried(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    started = appliance.clock.now()
    appliance.store.call(
        lambda: (
            Connection.update(refresh_started_at=started)
            .where(Connection.id == connected.connection_id)
            .execute()
        )
    )
    recover = _jobs(appliance)["stale-refresh-recovery"]
    assert await recover.run() == "0 interrupted refresh(es) flagged"  # fresh marker: in flight
    appliance.clock.advance(180)
    assert await recover.run() == "1 interrupted refresh(es) flagged"
    stored = row(appliance, connected.connection_id)
    assert stored.status == "needs_reconnect" and stored.refresh_started_at is None
    assert ("token_refresh", "interrupted") in {
        e[:2] for e in events(appliance, connected.connection_id)
    }
    answer = await rpc(appliance.url + connected.secret_path)
    assert answer["error"]["code"] == -32003
    assert f"/connections/{connected.connection_id}" in answer["error"]["message"]
    assert refresh_calls(upstream) == 0


async def test_request_meeting_stale_marker_flags_instead_of_refreshing(
    appliance: Appliance, upstream: OAuthUpstream, connected: Connected
) -> None:
    started = appliance.clock.now()
    appliance.store.call(
        lambda: (
            Connection.update(refresh_started_at=started)
            .where(Connection.id == connected.connection_id)
            .execute()
        )
    )
    appliance.clock.advance(3600 + 10)  # expired, and the marker is stale
    answer = await rpc(appliance.url + connected.secret_path)
    assert answer["error"]["code"] == -32003
    assert refresh_calls(upstream) == 0
    assert row(appliance, connected.connection_id).status == "needs_reconnect"


async def test_job_never_overlaps_itself_and_stops_on_shutdown(appliance: Appliance) -> None:
    release = asyncio.Event()
    runs = 0

    async def slow() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        return "done"

    scheduler = Scheduler(appliance.store, appliance.ctx.kv, appliance.clock, "me")
    job = Job("slow", 3600.0, slow, leased=True, first_delay=3600.0)
    scheduler.add(job)
    scheduler.start()
    scheduler._tick(job)
    await asyncio.sleep(0)
    scheduler._tick(job)
    await asyncio.sleep(0)
    assert runs == 1
    # Another instance sharing the KV skips the leased job while the lease lasts.
    other = Scheduler(appliance.store, appliance.ctx.kv, appliance.clock, "other")
    assert await other.run_once(Job("slow", 3600.0, slow)) == "skipped"
    # Shutdown: a job still running after the timeout is cancelled and recorded.
    await scheduler.stop(timeout=0.05)
    assert job._task is not None and job._task.done()
    record = appliance.store.call(lambda: JobRun.get_by_id("slow"))
    assert record.outcome == "error" and record.detail == "cancelled at shutdown"
    assert job._timer is None
