"""Billing's background jobs (DESIGN §11).

With billing on: `billing-sync` (leased, at start and every minute) sees every member (their
trial starts) and applies what time alone changes — a trial, a grace period or a paid-up period
ending — suspending or restoring connections; `billing-events-prune` (leased, daily) deletes
`billing_events` older than 90 days; `billing-delete-suspended` (leased, hourly) deletes
connections suspended longer than `BINDIFY_BILLING_DELETE_SUSPENDED_DAYS`, only when it is set.
With billing off: `billing-release` (leased, at start and daily) lifts any suspension left from
when it was on (billing off means every connection is usable); no other billing work runs.
"""

from __future__ import annotations

from datetime import datetime

from bindify_appliance.billing.events import prune_events
from bindify_appliance.billing.options import EVENT_RETENTION
from bindify_appliance.billing.service import billing_service
from bindify_appliance.context import AppContext
from bindify_appliance.scheduler import Job
from bindify_appliance.store.models import Connection, User

__all__ = ["billing_jobs", "delete_suspended", "release_all"]


def release_all() -> int:
    released = (
        Connection.update(billing_suspended_at=None)
        .where(Connection.billing_suspended_at.is_null(False))
        .execute()
    )
    User.update(billing_until=None).where(User.billing_until.is_null(False)).execute()
    return int(released)


def delete_suspended(cutoff: datetime) -> list[str]:
    ids = [
        c.id
        for c in Connection.select(Connection.id).where(Connection.billing_suspended_at < cutoff)
    ]
    if ids:
        Connection.delete().where(Connection.id.in_(ids)).execute()
    return ids


def billing_jobs(ctx: AppContext) -> list[Job]:
    billing = billing_service(ctx)
    if billing is None:

        async def release() -> str:
            released = await ctx.store.run(release_all)
            return f"{released} suspension(s) lifted (billing is off)"

        return [Job("billing-release", 24 * 3600.0, release, leased=True, first_delay=0.0)]

    async def sync() -> str:
        members = await billing.sync_everyone()
        changed = sum(len(m.changed) for m in members)
        counts = dict.fromkeys(("trialing", "active", "past_due", "canceled", "expired"), 0)
        for member in members:
            if member.entitlement is not None:
                counts[member.entitlement.status] = counts.get(member.entitlement.status, 0) + 1
        for status, count in counts.items():
            ctx.metrics.billing_members.labels(status).set(count)
        return f"{len(members)} user(s) checked; {changed} connection(s) changed"

    async def prune() -> str:
        removed = await ctx.store.run(prune_events, ctx.clock.now(), EVENT_RETENTION)
        return f"{removed} billing event(s) older than 90 days removed"

    jobs = [
        Job("billing-sync", 60.0, sync, leased=True, first_delay=0.0),
        Job("billing-events-prune", 24 * 3600.0, prune, leased=True, first_delay=600.0),
    ]
    after = billing.options.delete_suspended_after
    if after is not None:

        async def delete() -> str:
            removed = await ctx.store.run(delete_suspended, ctx.clock.now() - after)
            if billing.forget is not None:
                for connection_id in removed:
                    billing.forget(connection_id)
            return f"{len(removed)} long-suspended connection(s) deleted"

        jobs.append(Job("billing-delete-suspended", 3600.0, delete, leased=True))
    return jobs
