"""Offboarding: remove a member and revoke their grants at the providers (DESIGN §15).

`offboard(services, user_id, confirm=False)` serves `DELETE /api/v1/users/{id}?revoke=true`,
`DELETE /api/v1/me?revoke=true`, the admin page's "Remove member" and `bindify admin
remove-user --revoke`. It runs as the `offboarding` job (its run, duration and a secret-free
summary recorded in `job_runs`, shown by `GET /api/v1/jobs`), in this order:

1. the member is disabled first (the last active administrator is refused: 409 `last_admin`,
   nothing changes), which ends their sessions and tokens and stops their connections (-32002)
   before any provider is called;
2. each connection's grant is revoked at its provider (`services/revoke.py`); every connection
   whose outcome is final (`revoked`, `not_supported`, `zero_knowledge`, `api_key`,
   `nothing_to_revoke`) is deleted at once;
3. a `failed` one stays, disabled by an administrator with a `connection/revoke_failed` event,
   and so does the (disabled) member: running the offboarding again retries only those; with
   `confirm=True` (an administrator accepts that the grant may live on) it is deleted anyway;
4. with no connection left, the member is deleted (sessions, tokens, identities cascade).

Audit (DESIGN §12): one `connection.revoke` per connection (`detail.result`; outcome `failure`
for `failed`) and one `user.offboard` at the end (`detail`: counts per result, `deleted`), by
the acting administrator, the member themself or the CLI (`who`, `ip` from the caller).

The report lists every connection with its result and, for what the appliance cannot revoke,
the provider's page where the member can. It carries metadata only, never a secret.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from bindify_appliance import audit
from bindify_appliance.errors import NotFoundError
from bindify_appliance.scheduler import record_job_run
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.services.revoke import revoke_at_provider
from bindify_appliance.store import accounts as accounts_store
from bindify_appliance.store import connections as rows
from bindify_appliance.store.events import record_event
from bindify_appliance.store.models import Connection

__all__ = ["JOB_NAME", "Offboarding", "offboard"]

JOB_NAME = "offboarding"


@dataclass
class Offboarding:
    """What happened: per connection, and whether the member is gone."""

    user_id: str
    connections: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False

    @property
    def failed(self) -> int:
        return sum(1 for c in self.connections if c["result"] == "failed")

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for c in self.connections:
            counts[c["result"]] = counts.get(c["result"], 0) + 1
        parts = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in sorted(counts.items()))
        end = "member deleted" if self.deleted else "member kept disabled until a retry succeeds"
        return f"user {self.user_id}: {parts or 'no connections'}; {end}"

    def json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "deleted": self.deleted, "connections": self.connections}


def _keep_failed(connection_id: str, user_id: str, detail: str, now: Any) -> None:
    rows.set_disabled(connection_id, True, now, actor_role="admin")
    record_event(
        connection_id,
        user_id=user_id,
        event_type="connection",
        category="revoke_failed",
        detail=detail[:200],
        now=now,
    )


async def offboard(
    services: ConnectServices,
    user_id: str,
    *,
    confirm: bool = False,
    who: audit.Actor = audit.SYSTEM,
    ip: str | None = None,
) -> Offboarding:
    """See the module docstring. Raises NotFoundError, LastAdminError (nothing changed)."""
    ctx = services.ctx
    started, t0 = ctx.clock.now(), time.monotonic()
    await ctx.store.run(accounts_store.get_user, user_id)  # NotFoundError
    await ctx.store.run(accounts_store.update_user, user_id, None, True, ctx.clock.now())
    report = Offboarding(user_id)
    owned: list[Connection] = await ctx.store.run(rows.list_for_user, user_id)
    try:
        for row in owned:
            services.forget(row.id)
            outcome = await revoke_at_provider(services, row)
            report.connections.append(
                {
                    "id": row.id,
                    "service": row.service,
                    "label": row.label,
                    "auth_type": row.auth_type,
                    "key_storage_mode": row.key_storage_mode,
                    "result": outcome.result,
                    "revoke_at": outcome.link,
                    "detail": outcome.detail,
                }
            )
            await audit.record(
                ctx,
                who,
                "connection.revoke",
                audit.Target("connection", row.id),
                ip=ip,
                outcome="failure" if outcome.result == "failed" else "success",
                detail={"result": outcome.result, "service": row.service, "user_id": user_id},
            )
            now = ctx.clock.now()
            if outcome.result == "failed" and not confirm:
                detail = outcome.detail or "revocation failed"
                await ctx.store.run(_keep_failed, row.id, user_id, detail, now)
            else:
                await ctx.store.run(rows.delete_connection, row.id, user_id)
        if report.failed == 0 or confirm:
            # Deleted meanwhile by another administrator: the goal is reached.
            with contextlib.suppress(NotFoundError):
                await ctx.store.run(accounts_store.delete_user, user_id)
            report.deleted = True
    finally:
        counts: dict[str, Any] = {}
        for c in report.connections:
            counts[c["result"]] = counts.get(c["result"], 0) + 1
        await audit.record(
            ctx,
            who,
            "user.offboard",
            audit.Target("user", user_id),
            ip=ip,
            outcome="success" if report.deleted else "failure",
            detail={**counts, "deleted": report.deleted, "confirm": confirm},
        )
        outcome_name = "ok" if report.deleted else "error"
        elapsed = int((time.monotonic() - t0) * 1000)
        await ctx.store.run(
            record_job_run, JOB_NAME, started, outcome_name, elapsed, report.summary()[:500]
        )
    return report
