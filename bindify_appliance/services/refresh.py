"""OAuth token refresh that never loses a grant: on demand in the proxy, and for the jobs.

`OAuthRefresher` is the proxy resolver's `TokenRefresher` and the background jobs' worker.

On demand (`fresh_payload`): a token that has a refresh token is refreshed before use once it
is due (`due_margin`): within `WINDOW` (300 s) of expiry — or, for a token that lives shorter
than four windows, once `DUE_AT` (75 %) of its own lifetime has passed, whichever comes later.
A token shorter than the window would otherwise be due from the moment it was issued, and
every request after the resolver's 1 s memo would refresh it again. The lifetime is
`expires_at - issued_at` from the payload (`issued_at` is stamped when the token is stored);
a payload stored before `issued_at` existed uses the plain window once, and its refresh stores
`issued_at`. `refresh_after_rejection` forces one refresh after an upstream
401/403 (unless another request already replaced the rejected token). `refresh_due` refreshes a
managed connection in the background.

Guarantees (DESIGN §6, §8; hosted quirks Q5, Q8, Q12, Q14):
- Single flight per connection per process: concurrent callers share one future.
- Across processes the database decides: `store.refresh.claim_refresh` (a conditional UPDATE on
  the token generation, writing the refresh-in-flight marker) admits exactly one caller to the
  provider. The KV lock `refresh:{id}` only saves work (test hook
  `BINDIFY_TEST_REFRESH_KV_LOCK=off` disables it).
- Between the provider's answer and the commit there is no other await and no other I/O: the
  new payload is built and sealed synchronously inside the commit's unit of work.
- `invalid_grant` / `invalid_client` (exact OAuth error code, also when sent with HTTP 200) →
  needs-reconnect + event + -32003 with the reconnect link. Anything else is transient: a 60 s
  cool-down (KV `refresh-cooldown:{id}`) during which a still-valid token keeps working and an
  expired one gets -32007.
- A stale marker (a refresher died mid-way) is never retried — the provider may have rotated
  the refresh token we hold — the connection is flagged needs-reconnect with an event.
- Never a token in a log line, event or message.

Keep-alive of non-expiring grants (Todoist): `services/keepalive.py`, through `keep_alive`.

Test hook: `BINDIFY_TEST_FAULT=refresh:after_provider`, read once at construction, SIGKILLs this
process after the provider answered and before the commit (crash-recovery tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from datetime import UTC, datetime
from typing import Any, Final, Literal

from bindify_appliance.connections.needs_reconnect import needs_reconnect
from bindify_appliance.connections.secrets import open_payload, reseal_payload
from bindify_appliance.context import AppContext
from bindify_appliance.crypto.credentials import Credentials
from bindify_appliance.errors import (
    DecryptError,
    KeyringError,
    KVError,
    OAuthError,
    OutboundError,
    StoreError,
)
from bindify_appliance.kv.base import MEMBER
from bindify_appliance.outbound import OutboundClient
from bindify_appliance.proxy.target import ProxyRefusal
from bindify_appliance.services.definitions import ServiceDefinition
from bindify_appliance.services.keepalive import keep_alive
from bindify_appliance.services.oauth import (
    connection_payload,
    endpoint_from_payload,
    refresh_tokens,
)
from bindify_appliance.services.refresh_timing import (
    DUE_AT,
    WINDOW,
    due_margin,
    expires_at,
    has_refresh_token,
)
from bindify_appliance.services.registry import ServiceRegistry
from bindify_appliance.store import refresh as units
from bindify_appliance.store.connections import ConnectionAuth
from bindify_appliance.store.refresh import RefreshRow

__all__ = [
    "COOLDOWN",
    "DUE_AT",
    "FAULT_ENV",
    "KV_LOCK_ENV",
    "WINDOW",
    "OAuthRefresher",
    "due_margin",
]

log = logging.getLogger(__name__)

COOLDOWN: Final = 60
KV_LOCK_TTL: Final = 30.0
WAIT_DELAYS: Final = (0.1, 0.2, 0.4, 0.8, 1.6, 2.0)
FAULT_ENV: Final = "BINDIFY_TEST_FAULT"
KV_LOCK_ENV: Final = "BINDIFY_TEST_REFRESH_KV_LOCK"
FATAL_ERRORS: Final = frozenset({"invalid_grant", "invalid_client"})

Why = Literal["expiry", "rejected", "due"]


class OAuthRefresher:
    """See the module docstring."""

    def __init__(
        self,
        ctx: AppContext,
        registry: ServiceRegistry,
        outbound: OutboundClient,
        *,
        use_kv_lock: bool | None = None,
        fault: str | None = None,
    ) -> None:
        self._ctx = ctx
        self._registry = registry
        self._outbound = outbound
        if use_kv_lock is None:
            use_kv_lock = os.environ.get(KV_LOCK_ENV, "").strip().lower() not in ("off", "0")
        self._use_kv_lock = use_kv_lock
        if fault is None:
            fault = os.environ.get(FAULT_ENV, "")
        self._fault_after_provider = fault.strip() == "refresh:after_provider"
        self._flights: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.provider_calls = 0  # for tests and metrics: refreshes this process sent

    # -- the TokenRefresher seam -----------------------------------------------------------

    async def fresh_payload(
        self, conn: ConnectionAuth, payload: dict[str, Any], creds: Credentials | None
    ) -> dict[str, Any]:
        if not self._wants(payload, "expiry", payload):
            return payload
        expires = expires_at(payload)
        if await self._cooling(conn.id):
            if expires is not None and expires > self._ctx.clock.time():
                return payload
            raise self._cooldown()
        return await self._flight(conn.id, creds, payload, "expiry")

    async def refresh_after_rejection(
        self, conn: ConnectionAuth, payload: dict[str, Any], creds: Credentials | None
    ) -> dict[str, Any] | None:
        if not has_refresh_token(payload):
            return None
        if await self._cooling(conn.id):
            raise self._cooldown()
        return await self._flight(conn.id, creds, payload, "rejected")

    async def refresh_due(self, connection_id: str) -> bool:
        """Background refresh of a managed connection; True when it holds fresh tokens."""
        row = await self._ctx.store.run(units.read_refresh_row, connection_id)
        if row is None or row.key_storage_mode != "managed" or row.auth_type != "oauth":
            return False
        payload = self._open(row, None)
        if payload is None or not has_refresh_token(payload):
            return False
        try:
            await self._flight(connection_id, None, payload, "due")
        except ProxyRefusal:
            return False
        return True

    async def keep_alive(self, connection_id: str, service: ServiceDefinition) -> bool:
        """MCP `initialize` with a non-expiring grant's token (`services/keepalive.py`)."""
        return await keep_alive(self, connection_id, service)

    # -- single flight ---------------------------------------------------------------------

    async def _flight(
        self, connection_id: str, creds: Credentials | None, seen: dict[str, Any], why: Why
    ) -> dict[str, Any]:
        future = self._flights.get(connection_id)
        if future is None:
            # Its own task: a caller that goes away never cancels the others' refresh.
            task = asyncio.ensure_future(self._refresh(connection_id, creds, seen, why))
            self._flights[connection_id] = task
            task.add_done_callback(functools.partial(self._landed, connection_id))
            future = task
        return await asyncio.shield(future)

    def _landed(self, connection_id: str, task: asyncio.Future[dict[str, Any]]) -> None:
        if self._flights.get(connection_id) is task:
            del self._flights[connection_id]
        if not task.cancelled():
            task.exception()

    def _wants(self, payload: dict[str, Any], why: Why, seen: dict[str, Any]) -> bool:
        """Does `payload` (the stored one) still need the refresh `why` asks for?"""
        if not has_refresh_token(payload):
            return False
        if why in ("rejected", "due"):
            # Someone else replaced the tokens meanwhile: theirs are the fresh ones.
            return payload.get("access_token") == seen.get("access_token")
        expires = expires_at(payload)
        return expires is not None and expires - self._ctx.clock.time() < due_margin(payload)

    # -- the refresh -----------------------------------------------------------------------

    async def _refresh(
        self, connection_id: str, creds: Credentials | None, seen: dict[str, Any], why: Why
    ) -> dict[str, Any]:
        lock_key = f"refresh:{connection_id}"
        locked = False
        if self._use_kv_lock:
            try:
                locked = await self._ctx.kv.set_if_absent(
                    lock_key, self._ctx.instance_id, KV_LOCK_TTL, budget=MEMBER
                )
            except KVError:
                locked = True  # the database still decides
            if not locked:
                return await self._wait_for_other(connection_id, creds, seen, why)
        try:
            return await self._claim_and_refresh(connection_id, creds, seen, why)
        finally:
            if locked and self._use_kv_lock:
                with contextlib.suppress(KVError):
                    await self._ctx.kv.delete_if_value(lock_key, self._ctx.instance_id)

    async def _claim_and_refresh(
        self, connection_id: str, creds: Credentials | None, seen: dict[str, Any], why: Why
    ) -> dict[str, Any]:
        for _ in range(3):
            row = await self._current(connection_id)
            payload = self._open_or_refuse(row, creds)
            if not self._wants(payload, why, seen):
                return payload
            if row.refresh_started_at is not None:
                await self._refuse_if_stale(row)
                return await self._wait_for_other(connection_id, creds, seen, why)
            now = self._ctx.clock.now()
            claim = functools.partial(units.claim_refresh, connection_id, row.token_generation, now)
            if await self._ctx.store.run(claim):
                return await self._call_provider(row, payload, creds)
        return await self._wait_for_other(connection_id, creds, seen, why)

    async def _wait_for_other(
        self, connection_id: str, creds: Credentials | None, seen: dict[str, Any], why: Why
    ) -> dict[str, Any]:
        """Another process is refreshing: use its result, or the old token while it is valid."""
        expires = expires_at(seen)
        if why == "expiry" and expires is not None and expires > self._ctx.clock.time():
            return seen
        if why == "due":
            return seen  # the other refresher does the job's work
        for delay in WAIT_DELAYS:
            await asyncio.sleep(delay)
            row = await self._current(connection_id)
            payload = self._open_or_refuse(row, creds)
            if not self._wants(payload, why, seen):
                return payload
            if row.refresh_started_at is None:
                # The other refresher gave up without writing: try ourselves (the DB decides).
                claim = functools.partial(
                    units.claim_refresh,
                    connection_id,
                    row.token_generation,
                    self._ctx.clock.now(),
                )
                if await self._ctx.store.run(claim):
                    return await self._call_provider(row, payload, creds)
            else:
                await self._refuse_if_stale(row)
        await self._start_cooldown(connection_id)
        raise self._cooldown()

    async def _call_provider(
        self, row: RefreshRow, payload: dict[str, Any], creds: Credentials | None
    ) -> dict[str, Any]:
        """We hold the marker: call the provider once and commit (or flag) the outcome."""
        try:
            endpoint = None
            service = await self._registry.get(row.service)
            if service is not None:
                static_secret = None
                if payload.get("client_kind", "static") == "static" and payload.get(
                    "client_auth", "none"
                ) not in (None, "none"):
                    static_secret = await self._registry.client_secret(
                        row.service, self._ctx.keys.keyring
                    )
                endpoint = endpoint_from_payload(payload, static_secret=static_secret)
        except Exception:
            await self._release(row, "Refresh could not start: service unavailable")
            raise
        if endpoint is None:
            self._ctx.metrics.refresh(row.service, "impossible")
            await self._fatal(
                row,
                "this connection cannot be refreshed; reconnect it",
                "Refresh impossible: no token endpoint or client",
                "refresh_failed",
            )
            raise self._needs_reconnect(row.id, "the token cannot be refreshed")
        refresh_token = str(payload["refresh_token"])
        self.provider_calls += 1
        try:
            tokens = await refresh_tokens(self._outbound, endpoint, refresh_token)
        except OAuthError as exc:
            if exc.error in FATAL_ERRORS:
                self._ctx.metrics.refresh(row.service, "refused")
                await self._fatal(
                    row,
                    f"the provider refused the refresh ({exc.error})",
                    f"Refresh refused: {exc.error}",
                    "invalid_grant",
                    exc.status,
                )
                raise self._needs_reconnect(
                    row.id, f"the provider refused the refresh ({exc.error})"
                ) from None
            self._ctx.metrics.refresh(row.service, "transient_error")
            return await self._transient(row, payload, f"Refresh failed: {exc.error}", exc.status)
        except OutboundError as exc:
            self._ctx.metrics.refresh(row.service, "transient_error")
            return await self._transient(row, payload, f"Refresh failed: {exc.reason}", None)
        # ---- From the provider's answer to the commit: no other await, no other I/O. ----
        if self._fault_after_provider:
            os.kill(os.getpid(), signal.SIGKILL)
        now = self._ctx.clock.now()
        new_payload = {
            **payload,
            **connection_payload(tokens, endpoint, now.timestamp(), previous=payload),
        }
        expires = expires_at(new_payload)
        keyring = self._ctx.keys.keyring

        def seal(current: RefreshRow) -> tuple[str, str]:
            return reseal_payload(current, new_payload, creds, keyring)

        commit = functools.partial(
            units.commit_refresh,
            row.id,
            expected_generation=row.token_generation,
            base_payload=payload,
            seal=seal,
            open_row=lambda current: self._open(current, creds),
            token_expires_at=datetime.fromtimestamp(expires, UTC) if expires else None,
            now=now,
            detail=f"Refreshed for {row.service}",
        )
        try:
            outcome = await self._ctx.store.run(commit)
        except StoreError:
            self._ctx.metrics.refresh(row.service, "store_error")
            # The marker stays: the stale-marker sweep flags the connection (never silent).
            log.error("refreshed tokens could not be stored", extra={"connection_id": row.id})
            raise ProxyRefusal(
                "upstream_unavailable", "The appliance could not store a refreshed token."
            ) from None
        # ---- committed (or decided); I/O is fine again ----
        self._ctx.metrics.refresh(row.service, "success" if outcome.committed else "superseded")
        if outcome.committed:
            with contextlib.suppress(KVError):
                await self._ctx.kv.delete(f"refresh-cooldown:{row.id}")
            log.info("token refreshed", extra={"connection_id": row.id, "event": "token_refresh"})
            return new_payload
        log.warning(
            "refreshed tokens were superseded",
            extra={"connection_id": row.id, "reason": outcome.reason},
        )
        current = await self._current(row.id)
        return self._open_or_refuse(current, creds)

    # -- outcomes --------------------------------------------------------------------------

    async def _transient(
        self, row: RefreshRow, payload: dict[str, Any], detail: str, status: int | None
    ) -> dict[str, Any]:
        await self._release(row, detail, status)
        await self._start_cooldown(row.id)
        expires = expires_at(payload)
        if expires is not None and expires > self._ctx.clock.time():
            return payload
        raise self._cooldown()

    async def _release(self, row: RefreshRow, detail: str, status: int | None = None) -> None:
        release = functools.partial(
            units.release_refresh,
            row.id,
            user_id=row.user_id,
            now=self._ctx.clock.now(),
            detail=detail,
            upstream_status=status if status and 100 <= status <= 599 else None,
        )
        try:
            await self._ctx.store.run(release)
        except StoreError:
            log.warning("could not clear a refresh marker", extra={"connection_id": row.id})

    async def _fatal(
        self,
        row: RefreshRow,
        reason: str,
        detail: str,
        category: str,
        status: int | None = None,
        *,
        event_type: str = "token_refresh",
    ) -> None:
        fail = functools.partial(
            units.fail_refresh,
            row.id,
            user_id=row.user_id,
            reason=reason,
            now=self._ctx.clock.now(),
            detail=detail,
            category=category,
            event_type=event_type,
            upstream_status=status if status and 100 <= status <= 599 else None,
        )
        await self._ctx.store.run(fail)
        log.warning(
            "connection needs reconnecting", extra={"connection_id": row.id, "event": category}
        )

    async def _refuse_if_stale(self, row: RefreshRow) -> None:
        started = row.refresh_started_at
        if started is None or self._ctx.clock.now() - started < units.STALE_AFTER:
            return
        now = self._ctx.clock.now()
        await self._ctx.store.run(units.flag_stale_refresh, row.id, now)
        raise self._needs_reconnect(row.id, units.STALE_REASON)

    # -- helpers ---------------------------------------------------------------------------

    async def _current(self, connection_id: str) -> RefreshRow:
        row = await self._ctx.store.run(units.read_refresh_row, connection_id)
        if row is None:
            raise ProxyRefusal(
                "unknown_credential", "Connection not found: it may have been deleted."
            )
        return row

    def _open(self, row: RefreshRow, creds: Credentials | None) -> dict[str, Any] | None:
        try:
            return open_payload(row, creds, self._ctx.keys.keyring)
        except (DecryptError, KeyringError):
            return None

    def _open_or_refuse(self, row: RefreshRow, creds: Credentials | None) -> dict[str, Any]:
        if row.needs_reconnect_at is not None:
            raise self._needs_reconnect(row.id, None)
        payload = self._open(row, creds)
        if payload is None:
            raise self._needs_reconnect(row.id, "stored credential is unusable")
        return payload

    async def _cooling(self, connection_id: str) -> bool:
        try:
            return await self._ctx.kv.get(f"refresh-cooldown:{connection_id}") is not None
        except KVError:
            return False

    async def _start_cooldown(self, connection_id: str) -> None:
        with contextlib.suppress(KVError):
            await self._ctx.kv.set(
                f"refresh-cooldown:{connection_id}",
                self._ctx.clock.now().isoformat(),
                COOLDOWN,
                budget=MEMBER,
            )

    def _cooldown(self) -> ProxyRefusal:
        return ProxyRefusal(
            "cooldown",
            "Refreshing this connection's token failed a moment ago; retry in a minute.",
            retry_after=COOLDOWN,
        )

    def _needs_reconnect(self, connection_id: str, reason: str | None) -> ProxyRefusal:
        return needs_reconnect(self._ctx.settings.base_url, connection_id, reason)
