"""The appliance's standard background jobs, built from the application context.

Per-instance jobs (no lease): sweeping the in-process KV store, re-reading the master-key file
when it changes (every 5 s) and recording this instance's heartbeat and key fingerprints.
Leased jobs (one instance per round): reporting stored fingerprints no configured key matches
(at start and every 10 minutes), removing expired setup tokens and sessions, forgetting dynamic
client registrations whose client has expired (every 6 hours), the scheduled SQLite backup
(`ops/backups.py`); `mail-outbox` (every instance, rows claimed by compare-and-swap; only with
`BINDIFY_SMTP_URL`, see `mail/outbox.py`); `oauth-cleanup` (hourly, the OAuth server's
expired tokens and grants and unused registrations, `oauth_server/housekeeping.py`); and the token
lifecycle jobs (`lifecycle_jobs`): background refresh, keep-alives and stale-marker recovery.

Token lifecycle (with a refresher): `stale-refresh-recovery` (every instance, at start and each
minute) flags connections whose refresh-in-flight marker is stale as needs-reconnect;
`token-refresh` (leased, every 10 minutes) refreshes managed OAuth connections whose last
refresh is older than the service's interval less an hour (Notion 6 h, others daily) or whose
token expires within the hour, and runs a keep-alive handshake for services whose tokens do not
expire (Todoist). Zero-knowledge connections are never touched (the server cannot open them).
"""

from __future__ import annotations

import functools
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from bindify_appliance import __version__, audit
from bindify_appliance.billing.jobs import billing_jobs
from bindify_appliance.context import AppContext
from bindify_appliance.keymgmt import orphan_fingerprints
from bindify_appliance.kv import MemoryKV
from bindify_appliance.mail.outbox import mail_job
from bindify_appliance.oauth_server.housekeeping import oauth_jobs
from bindify_appliance.ops.backups import backup_job
from bindify_appliance.scheduler import Job
from bindify_appliance.store import refresh as refresh_units
from bindify_appliance.store.dcr import delete_expired_registrations
from bindify_appliance.store.instances import heartbeat, register_instance
from bindify_appliance.store.models import Session, SetupToken

if TYPE_CHECKING:
    from bindify_appliance.services.refresh import OAuthRefresher
    from bindify_appliance.services.registry import ServiceRegistry

__all__ = ["standard_jobs"]

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 30.0
KEY_WATCH_INTERVAL = 5.0


def _delete_expired(now: object) -> int:
    removed = SetupToken.delete().where(SetupToken.expires_at < now).execute()
    removed += Session.delete().where(Session.expires_at < now).execute()
    return int(removed)


DEFAULT_REFRESH_INTERVAL = 24 * 3600
REFRESH_BUFFER = 3600
REFRESH_JOB_INTERVAL = 600.0


def lifecycle_jobs(
    ctx: AppContext, refresher: OAuthRefresher, registry: ServiceRegistry
) -> list[Job]:
    """The token-lifecycle jobs (see the module docstring)."""

    async def recover_stale() -> str:
        flagged = await ctx.store.run(refresh_units.sweep_stale_markers, ctx.clock.now())
        for cid in flagged:
            log.warning(
                "interrupted token refresh: connection flagged for reconnecting",
                extra={"connection_id": cid, "event": "refresh_interrupted"},
            )
        return f"{len(flagged)} interrupted refresh(es) flagged"

    async def refresh_due() -> str:
        refreshed = kept = failed = 0
        now = ctx.clock.now()
        for service in await registry.list():
            oauth = service.oauth
            if oauth is None:
                continue
            interval = oauth.refresh_interval or DEFAULT_REFRESH_INTERVAL
            due = functools.partial(
                refresh_units.due_for_refresh,
                service.id,
                refreshed_before=now - timedelta(seconds=max(interval - REFRESH_BUFFER, 60)),
                expiring_before=now + timedelta(seconds=REFRESH_BUFFER),
            )
            for cid in await ctx.store.run(due):
                if oauth.requires_refresh:
                    ok = await refresher.refresh_due(cid)
                    refreshed += ok
                else:
                    ok = await refresher.keep_alive(cid, service)
                    kept += ok
                failed += not ok
        return f"{refreshed} refreshed, {kept} kept alive, {failed} failed"

    return [
        Job("stale-refresh-recovery", 60.0, recover_stale, leased=False, first_delay=0.0),
        Job("token-refresh", REFRESH_JOB_INTERVAL, refresh_due, leased=True, first_delay=30.0),
    ]


def standard_jobs(
    ctx: AppContext,
    refresher: OAuthRefresher | None = None,
    registry: ServiceRegistry | None = None,
) -> list[Job]:
    jobs: list[Job] = []
    if refresher is not None and registry is not None:
        jobs += lifecycle_jobs(ctx, refresher, registry)

    if isinstance(ctx.kv, MemoryKV):
        kv = ctx.kv

        async def sweep_kv() -> str:
            return f"{kv.sweep()} expired entries removed"

        jobs.append(Job("kv-sweep", 60.0, sweep_kv, leased=False))

    async def instance_heartbeat() -> str:
        fingerprints = list(ctx.keys.keyring.fingerprints)
        now = ctx.clock.now()
        if not await ctx.store.run(heartbeat, ctx.instance_id, fingerprints, now):
            # Our row was pruned (a long pause, or a restore): register again.
            await ctx.store.run(register_instance, ctx.instance_id, __version__, fingerprints, now)
        return f"{len(fingerprints)} key(s) held"

    async def watch_key_file() -> str | None:
        try:
            changed = ctx.keys.reload_if_changed()
        except Exception as exc:  # a bad edit keeps the keys we have
            log.error("master key file could not be re-read: %s", exc)
            return "key file unreadable; previous keys kept"
        if not changed:
            return None
        log.info("master key file changed; keys re-read", extra={"event": "keys_reloaded"})
        # `keys rotate` waits for every live instance to report the new key: tell it now.
        await instance_heartbeat()
        return "keys re-read"

    async def report_orphans() -> str:
        orphans = await ctx.store.run(orphan_fingerprints, ctx.keys.keyring)
        for fp, count in sorted(orphans.items()):
            log.error(
                "stored data is sealed with a master key this instance does not have",
                extra={"fingerprint": fp, "count": count, "event": "orphan_key"},
            )
        return f"{len(orphans)} orphan fingerprint(s)"

    jobs.append(Job("instance-heartbeat", HEARTBEAT_INTERVAL, instance_heartbeat, leased=False))
    if not ctx.keys.from_env:
        jobs.append(Job("key-file-watch", KEY_WATCH_INTERVAL, watch_key_file, leased=False))
    jobs.append(Job("orphan-key-check", 600.0, report_orphans, leased=True, first_delay=0.0))

    async def cleanup() -> str:
        removed = await ctx.store.run(_delete_expired, ctx.clock.now())
        return f"{removed} expired setup tokens and sessions removed"

    jobs.append(Job("cleanup", 3600.0, cleanup, leased=True, first_delay=60.0))

    async def registration_liveness() -> str:
        removed = await ctx.store.run(delete_expired_registrations, ctx.clock.now())
        return f"{removed} expired dynamic registration(s) removed"

    scheduled_backup = backup_job(ctx)
    if scheduled_backup is not None:
        jobs.append(scheduled_backup)
    mail = mail_job(ctx)  # only with BINDIFY_SMTP_URL
    if mail is not None:
        jobs.append(mail)
    jobs.append(
        Job(
            "registration-liveness",
            6 * 3600.0,
            registration_liveness,
            leased=True,
            first_delay=120.0,
        )
    )
    jobs.extend(audit_jobs(ctx))
    jobs.extend(oauth_jobs(ctx))  # the OAuth server's housekeeping (oauth_server/housekeeping.py)
    jobs.extend(billing_jobs(ctx))  # DESIGN §11 (billing/jobs.py)
    return jobs


def audit_jobs(ctx: AppContext) -> list[Job]:
    """`audit-anchor` (every instance, at start and hourly): write the anonymous sign-in
    failure counts of ended windows and log the chain head; `audit-retention` (leased, daily):
    apply BINDIFY_AUDIT_RETENTION_DAYS."""

    async def anchor() -> str:
        flushed = await audit.flush_anonymous(ctx)
        head = await audit.log_anchor(ctx)
        return f"anchor {head}; {flushed} failure count(s) written"

    async def retention() -> str:
        deleted = await audit.prune(ctx)
        return f"{deleted} audit entries older than the retention removed"

    return [
        Job("audit-anchor", 3600.0, anchor, leased=False, first_delay=0.0),
        Job("audit-retention", 24 * 3600.0, retention, leased=True, first_delay=300.0),
    ]
