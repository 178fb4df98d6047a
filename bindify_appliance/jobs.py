"""The appliance's standard background jobs, built from the application context.

Per-instance jobs (no lease): sweeping the in-process KV store, re-reading the master-key file
and recording this instance's heartbeat and key fingerprints. Leased jobs (one instance per
round): removing expired setup tokens and sessions. Later work adds token refresh and
keep-alives here.
"""

from __future__ import annotations

import logging

from bindify_appliance.context import AppContext
from bindify_appliance.kv import MemoryKV
from bindify_appliance.scheduler import Job
from bindify_appliance.store.instances import heartbeat
from bindify_appliance.store.models import Session, SetupToken

__all__ = ["standard_jobs"]

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 30.0


def _delete_expired(now: object) -> int:
    removed = SetupToken.delete().where(SetupToken.expires_at < now).execute()
    removed += Session.delete().where(Session.expires_at < now).execute()
    return int(removed)


def standard_jobs(ctx: AppContext) -> list[Job]:
    jobs: list[Job] = []

    if isinstance(ctx.kv, MemoryKV):
        kv = ctx.kv

        async def sweep_kv() -> str:
            return f"{kv.sweep()} expired entries removed"

        jobs.append(Job("kv-sweep", 60.0, sweep_kv, leased=False))

    async def instance_heartbeat() -> str:
        try:
            if ctx.keys.reload_if_changed():
                log.info("master key file changed; keys re-read", extra={"event": "keys_reloaded"})
        except Exception as exc:  # a bad edit keeps the keys we have
            log.error("master key file could not be re-read: %s", exc)
        fingerprints = list(ctx.keys.keyring.fingerprints)
        await ctx.store.run(heartbeat, ctx.instance_id, fingerprints, ctx.clock.now())
        return f"{len(fingerprints)} key(s) held"

    jobs.append(Job("instance-heartbeat", HEARTBEAT_INTERVAL, instance_heartbeat, leased=False))

    async def cleanup() -> str:
        removed = await ctx.store.run(_delete_expired, ctx.clock.now())
        return f"{removed} expired setup tokens and sessions removed"

    jobs.append(Job("cleanup", 3600.0, cleanup, leased=True, first_delay=60.0))
    return jobs
