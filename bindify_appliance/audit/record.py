"""Recording audit entries: the one call every security-relevant action makes (DESIGN §12).

`await record(ctx, actor, "user.disable", Target("user", id), ip=...)` appends one entry;
`record_sync(store, keyring, clock, ...)` does the same from the CLI. The actor is always
explicit: a signed-in user (`actor(principal)`, `user(id)`), the `CLI` operator or `SYSTEM`.

Metadata only: `detail` is a flat object of short values (ids, names of fields, counts, states),
checked here — a nested value, a long string or an odd key is a caller bug (`ValueError`), so
no payload or secret can be written through this module.

Failed sign-ins: `login_failure` records the typed identifier only when it names an account
(actor = that user); any other failure is counted per client address (IPv6 per /64) and hour
in the database (`audit_failure_counts`, one upsert per failure, so a crash loses no count) and
becomes one chained `login.failure_count` entry per address and window when the window has
ended (the hourly `audit-anchor` job of any instance, also at start) or at shutdown
(`flush_anonymous(final=True)`); the row is deleted in the same transaction as the append.

A failure to write an entry is logged (scrubbed) and does not undo or fail the action that has
already happened. The proxy path never calls this module.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from bindify_appliance.audit import chain
from bindify_appliance.audit.actions import ACTIONS, CHAIN_ACTIONS
from bindify_appliance.clientaddr import ip_bucket
from bindify_appliance.clock import Clock, iso
from bindify_appliance.crypto.keyring import Keyring
from bindify_appliance.http.base import request_ip
from bindify_appliance.store import Store
from bindify_appliance.store import audit as rows
from bindify_appliance.store.audit import AuditRow

if TYPE_CHECKING:
    from bindify_appliance.context import AppContext
    from bindify_appliance.store.sessions import Principal

__all__ = [
    "CLI",
    "SYSTEM",
    "Actor",
    "Target",
    "actor",
    "as_user",
    "by_request",
    "flush_anonymous",
    "log_anchor",
    "login_failure",
    "prune",
    "record",
    "record_sync",
    "signed_in",
    "signed_out",
    "user",
]

log = logging.getLogger(__name__)

MAX_DETAIL_TEXT: Final = 200
MAX_ANONYMOUS_ADDRESSES: Final = 10_000
WINDOW: Final = timedelta(hours=1)
_ACTION = re.compile(r"[a-z][a-z_]{0,30}(\.[a-z][a-z_]{0,30}){1,3}")
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
OUTCOMES: Final = ("success", "failure", "denied")


@dataclass(frozen=True)
class Actor:
    type: str  # "user" | "cli" | "system" | "anonymous"
    id: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Target:
    type: str
    id: str | None


SYSTEM: Final = Actor("system")
CLI: Final = Actor("cli")


def actor(principal: Principal | None) -> Actor:
    if principal is None:
        return Actor("anonymous")
    return Actor("user", principal.user_id, principal.email)


def user(user_id: str | None, email: str | None = None) -> Actor:
    return Actor("user", user_id, email) if user_id else Actor("anonymous")


def _check_detail(detail: dict[str, Any] | None) -> dict[str, Any]:
    if not detail:
        return {}
    for key, value in detail.items():
        if not _DETAIL_KEY.fullmatch(key):
            raise ValueError(f"audit detail key {key[:40]!r} is not a plain name")
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str):
                if len(item) > MAX_DETAIL_TEXT:
                    raise ValueError(f"audit detail {key!r} is longer than {MAX_DETAIL_TEXT}")
            elif item is not None and not isinstance(item, bool | int):
                raise ValueError(f"audit detail {key!r} must be flat text, numbers or flags")
    return dict(detail)


def _draft(
    who: Actor,
    action: str,
    target: Target | None,
    ip: str | None,
    outcome: str,
    detail: dict[str, Any] | None,
    now: datetime,
) -> AuditRow:
    if not _ACTION.fullmatch(action):
        raise ValueError(f"audit action {action[:60]!r} is not area.verb")
    if action not in ACTIONS or action in CHAIN_ACTIONS:
        raise ValueError(f"audit action {action!r} is not declared in audit.actions.ACTIONS")
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {OUTCOMES}")
    return AuditRow(
        seq=0,
        at=iso(now),
        actor_type=who.type,
        actor_id=who.id,
        actor_email=who.email,
        action=action,
        target_type=target.type if target else None,
        target_id=target.id if target else None,
        ip=ip[:64] if ip else None,
        outcome=outcome,
        detail=_check_detail(detail),
    )


def _append_unit(keyring: Keyring, draft: AuditRow) -> AuditRow:
    if draft.actor_type == "user" and draft.actor_id and draft.actor_email is None:
        email = rows.email_of(draft.actor_id)
        draft = AuditRow(**{**draft.__dict__, "actor_email": email})
    return chain.append(keyring, draft)


def record_sync(
    store: Store,
    keyring: Keyring,
    clock: Clock,
    who: Actor,
    action: str,
    target: Target | None = None,
    *,
    ip: str | None = None,
    outcome: str = "success",
    detail: dict[str, Any] | None = None,
) -> AuditRow:
    """Append one entry now, in the calling thread (CLI). Raises on failure."""
    draft = _draft(who, action, target, ip, outcome, detail, clock.now())
    return store.call(_append_unit, keyring, draft)


async def record(
    ctx: AppContext,
    who: Actor,
    action: str,
    target: Target | None = None,
    *,
    ip: str | None = None,
    outcome: str = "success",
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one entry (see the module docstring: logged, not raised, when it cannot)."""
    draft = _draft(who, action, target, ip, outcome, detail, ctx.clock.now())
    try:
        await ctx.store.run(_append_unit, ctx.keys.keyring, draft)
    except Exception:
        log.error("audit entry not written", extra={"event": "audit_failed"}, exc_info=True)


async def by_request(
    handler: Any,
    action: str,
    target: Target | None = None,
    *,
    who: Actor | None = None,
    outcome: str = "success",
    detail: dict[str, Any] | None = None,
) -> None:
    """`record` for a request handler: the actor is its signed-in principal (unless `who` is
    given) and the address its client's (trusted-proxy rules applied)."""
    ctx = handler.ctx
    ip = request_ip(handler, ctx.settings.trusted_proxies)
    principal = getattr(handler, "principal", None)
    await record(
        ctx, who or actor(principal), action, target, ip=ip, outcome=outcome, detail=detail
    )


async def signed_in(handler: Any, user_id: str, method: str) -> None:
    await by_request(handler, "login.success", who=user(user_id), detail={"method": method})


async def signed_out(handler: Any) -> None:
    if getattr(handler, "principal", None) is not None:
        await by_request(handler, "logout.success")


async def as_user(handler: Any, action: str, user_id: str) -> None:
    """An action a user takes on their own account (setup, accepting an invite)."""
    await by_request(handler, action, Target("user", user_id), who=user(user_id))


# -- failed sign-ins ----------------------------------------------------------------------------


def _window_start(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def _login_failure_unit(keyring: Keyring, draft: AuditRow, identifier: str) -> None:
    account = rows.user_by_email(identifier) if identifier else None
    if account is not None:
        fields = {**draft.__dict__, "actor_type": "user", "actor_id": account[0]}
        chain.append(keyring, AuditRow(**{**fields, "actor_email": account[1]}))
        return
    window = iso(_window_start(datetime.fromisoformat(draft.at.replace("Z", "+00:00"))))
    rows.count_failure(window, ip_bucket(draft.ip or ""), MAX_ANONYMOUS_ADDRESSES)


async def login_failure(
    ctx: AppContext, identifier: str, ip: str, reason: str | None, method: str = "password"
) -> None:
    """A failed sign-in: one entry when `identifier` names an account, else a count."""
    detail = {"method": method, "reason": (reason or "invalid")[:40]}
    draft = _draft(
        Actor("anonymous"), "login.failure", None, ip, "failure", detail, ctx.clock.now()
    )
    address = identifier.strip().lower()[:254]
    try:
        await ctx.store.run(_login_failure_unit, ctx.keys.keyring, draft, address)
    except Exception:
        log.error("audit entry not written", extra={"event": "audit_failed"}, exc_info=True)


def _flush_unit(keyring: Keyring, before: str | None, now: datetime) -> int:
    def inside() -> int:
        taken = rows.take_failure_counts(before)
        for window, address, count in taken:
            start = datetime.fromisoformat(window.replace("Z", "+00:00")).astimezone(UTC)
            detail = {"count": count, "window_start": window, "window_end": iso(start + WINDOW)}
            draft = _draft(
                Actor("anonymous"), "login.failure_count", None, address, "failure", detail, now
            )
            chain.append(keyring, draft)
        return len(taken)

    return rows.chain_transaction(inside)


async def flush_anonymous(ctx: AppContext, *, final: bool = False) -> int:
    """Chain the counts of ended windows (all of them when `final`); the entries written."""
    now = ctx.clock.now()
    before = None if final else iso(_window_start(now))
    try:
        return await ctx.store.run(_flush_unit, ctx.keys.keyring, before, now)
    except Exception:
        log.error("audit entry not written", extra={"event": "audit_failed"}, exc_info=True)
        return 0


# -- anchors and retention ----------------------------------------------------------------------


async def log_anchor(ctx: AppContext) -> str | None:
    """Log the chain head as an anchor (`SEQ:MAC-prefix`); the anchor, or None when empty."""
    head = await ctx.store.run(rows.head)
    if head is None:
        return None
    anchor = f"{head.seq}:{head.mac[: chain.ANCHOR_HEX]}"
    log.info("audit chain head %s", anchor, extra={"event": "audit_anchor", "count": head.seq})
    return anchor


async def prune(ctx: AppContext) -> int:
    """Apply `BINDIFY_AUDIT_RETENTION_DAYS`; the number of entries deleted."""
    now = ctx.clock.now()
    cutoff = iso(now - timedelta(days=ctx.settings.audit_retention_days))
    return await ctx.store.run(chain.prune, ctx.keys.keyring, cutoff, iso(now))
