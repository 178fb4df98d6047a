"""Metadata-only bookkeeping after a relayed request: events and `last_used_at` (`record_use`),
tool calls a policy refused (`record_denial`), and an upstream that still refuses a credential
(`record_rejection`: the connection flagged needs-reconnect).

`record_use` is throttled in-process per (connection, failure kind, status): a busy connection
costs about one write a minute (`USE_THROTTLE`), and a write that failed is tried again on the
next use. Nothing here raises for storage trouble: bookkeeping never breaks a relayed request.

Invariant: events name the service, the use kind and the tool at most: never a credential,
argument or payload.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from bindify_appliance.context import AppContext
from bindify_appliance.errors import StoreError
from bindify_appliance.proxy.target import ProxyTarget
from bindify_appliance.services.registry import ServiceRegistry
from bindify_appliance.store import connections as rows
from bindify_appliance.store.events import record_event

__all__ = ["USE_THROTTLE", "UseRecorder"]

log = logging.getLogger(__name__)

USE_THROTTLE: Final = 60.0
_RECENT_SIZE: Final = 10_000
_KIND_RE: Final = re.compile(r"[a-z0-9:_-]{1,40}")


class UseRecorder:
    """The resolver's bookkeeping half (`ConnectionResolver.record_use`/`record_denial`)."""

    def __init__(self, ctx: AppContext, registry: ServiceRegistry, throttle: float) -> None:
        self._ctx = ctx
        self._registry = registry
        self._throttle = throttle
        self._recent_use: dict[tuple[str, str, int], float] = {}

    async def record_use(self, target: ProxyTarget, *, upstream_status: int, kind: str) -> None:
        """Events and `last_used_at` after a relayed request; never raises for storage trouble."""
        failed = upstream_status >= 400
        if failed:
            kind = kind.lower() if _KIND_RE.fullmatch(kind.lower()) else "other"
        key = (target.connection_id, kind if failed else "", upstream_status if failed else 0)
        now_mono = self._ctx.clock.monotonic()
        last = self._recent_use.get(key)
        if last is not None and now_mono - last < self._throttle:
            return  # the database would deduplicate it anyway
        self._note_recent(key, now_mono)
        kind = kind.lower() if _KIND_RE.fullmatch(kind.lower()) else "other"
        detail = f"{target.service_id}:{kind}"
        category = "upstream_error" if failed else "success"
        if failed:
            service = await self._registry.get(target.service_id)
            if service is not None and service.expects(
                category, upstream_status=upstream_status, detail=detail
            ):
                category = "expected"
        status = upstream_status if 100 <= upstream_status <= 599 else None
        now = self._ctx.clock.now()
        try:
            await self._ctx.store.run(
                lambda: rows.note_proxy_use(
                    target.connection_id,
                    user_id=target.user_id,
                    category=category,
                    detail=detail,
                    upstream_status=status if failed else None,
                    now=now,
                )
            )
        except StoreError:
            self._recent_use.pop(key, None)
            log.warning(
                "could not record connection use", extra={"connection_id": target.connection_id}
            )

    async def record_rejection(self, target: ProxyTarget, reason: str, status: int) -> None:
        """The upstream still refuses the connection's credential: flag it needs-reconnect and
        record `auth/upstream_rejected` (a storage failure is logged, never raised)."""
        now = self._ctx.clock.now()
        try:
            await self._ctx.store.run(rows.set_needs_reconnect, target.connection_id, reason, now)
            await self._ctx.store.run(
                lambda: record_event(
                    target.connection_id,
                    user_id=target.user_id,
                    event_type="auth",
                    category="upstream_rejected",
                    detail=f"{target.service_id}:{target.auth_type}",
                    upstream_status=status if 100 <= status <= 599 else None,
                    now=now,
                )
            )
        except StoreError:
            log.warning(
                "could not flag a connection for reconnecting",
                extra={"connection_id": target.connection_id},
            )

    async def record_denial(self, target: ProxyTarget, tool: str) -> None:
        """`proxy_request/policy_denied` naming the service and tool (deduplicated per hour)."""
        shown = "".join(c if c.isprintable() else "?" for c in tool[:120]) or "(no name)"
        try:
            await self._ctx.store.run(
                lambda: record_event(
                    target.connection_id,
                    user_id=target.user_id,
                    event_type="proxy_request",
                    category="policy_denied",
                    detail=f"{target.service_id}:{shown}",
                    now=self._ctx.clock.now(),
                )
            )
        except StoreError:
            log.warning(
                "could not record a policy denial", extra={"connection_id": target.connection_id}
            )

    def _note_recent(self, key: tuple[str, str, int], now: float) -> None:
        if len(self._recent_use) >= _RECENT_SIZE:
            cutoff = now - self._throttle
            self._recent_use = {k: t for k, t in self._recent_use.items() if t > cutoff}
            if len(self._recent_use) >= _RECENT_SIZE:
                self._recent_use.clear()
        self._recent_use[key] = now
