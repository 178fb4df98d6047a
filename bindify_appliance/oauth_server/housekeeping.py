"""`oauth-cleanup` (leased, hourly): expired tokens and grants, registrations never used
within 24 hours, and every grant and registration of another issuer (a changed base URL ends
them all, DESIGN §10). Issuer checks at every lookup already refuse those; this removes them."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from bindify_appliance.context import AppContext
from bindify_appliance.scheduler import Job
from bindify_appliance.store import oauth_server as rows

__all__ = ["UNUSED_REGISTRATION_LIFETIME", "oauth_jobs", "purge_once"]

UNUSED_REGISTRATION_LIFETIME: Final = timedelta(hours=24)


async def purge_once(ctx: AppContext) -> str:
    now = ctx.clock.now()
    tokens, grants, clients = await ctx.store.run(
        rows.purge, ctx.settings.base_url, now, now - UNUSED_REGISTRATION_LIFETIME
    )
    return f"{tokens} token(s), {grants} grant(s), {clients} registration(s) removed"


def oauth_jobs(ctx: AppContext) -> list[Job]:
    return [Job("oauth-cleanup", 3600.0, lambda: purge_once(ctx), leased=True, first_delay=90.0)]
