"""Credential resolution for the proxy: a request's secret URL or `bnd_` key → a `ProxyTarget`.

`ConnectionResolver` implements `TargetResolver` (proxy/target.py):

1. Parse: the 86-char path segment, or the raw `Authorization` value (`Bearer ` optional).
   Malformed → "malformed" (400, -32600); a `bndpat_` personal token gets its own message.
2. Service: unknown → "unknown_service" (404, -32006).
3. Look up secret1's hash through a memo (≤ 1 s TTL, bounded, one query per hash however many
   requests miss at once) in front of one indexed query joined with the owner's state.
4. Verify secret2: managed rows compare the stored verifier in constant time; zero-knowledge rows
   must open their blob (the key comes from secret2). No row, wrong secret2, or a credential of
   another service → ONE "unknown_credential" refusal with one message (no oracle).
5. Disabled connection or owner → "disabled"; needs-reconnect → "needs_reconnect" with the
   `{base_url}/connections/{id}` link. Resolution never clears the flag (hosted quirk Q4).
   With billing on, a suspended connection or an owner past their entitlement →
   "payment_required" (-32004, the billing page link), from the memoised row alone.
6. Decrypt (managed) and inject the secret per the service's rule for the connection's auth type.
   A managed credential is opened once per memo entry and its target reused until the entry
   expires (≤ 1 s): secret2 is still verified on every request, the decrypted value never
   outlives the entry, and `forget()` drops it with the row.

After an upstream 401/403 the relay calls `after_upstream_auth_failure` once: OAuth connections
go through the `refresher` seam (None until the token-lifecycle work supplies one); otherwise the
connection is flagged needs-reconnect, an event recorded, and "needs_reconnect" raised.
`record_use` does the metadata bookkeeping after the response (events, `last_used_at`), throttled
in-process so a busy connection costs about one write a minute.

Invariants:
- A credential (or any part of it) is never logged, stored, or put in a message (hosted quirk Q9);
  logs name connection ids and key fingerprints only.
- Every change (delete, disable, rotate-url) is seen within the memo TTL (≤ 1 s) on every
  instance, and at once on this one after `forget()`.
- A memoised row is used only with the very service definition that was current when it was
  read: a changed definition (an admin moved the service, DESIGN §9: the same transaction flagged
  its connections) makes the row be read again, so no instance ever pairs a pre-change row with
  a post-change address.
- Database work goes through `ctx.store.run`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol

from bindify_appliance.connections.secrets import open_payload, payload_secret
from bindify_appliance.context import AppContext
from bindify_appliance.crypto.credentials import (
    Credentials,
    parse_api_key,
    parse_credentials,
    secret1_lookup_hash,
    verify_secret2,
)
from bindify_appliance.errors import CredentialFormatError, DecryptError, KeyringError, StoreError
from bindify_appliance.proxy.policy import effective, load_policy
from bindify_appliance.proxy.target import ProxyRefusal, ProxyTarget
from bindify_appliance.services.definitions import ServiceDefinition
from bindify_appliance.services.registry import ServiceRegistry
from bindify_appliance.store import connections as rows
from bindify_appliance.store.connections import ConnectionAuth
from bindify_appliance.store.events import record_event

__all__ = [
    "MEMO_TTL",
    "ConnectionResolver",
    "TokenRefresher",
]

log = logging.getLogger(__name__)

MEMO_TTL: Final = 1.0
MEMO_SIZE: Final = 10_000
USE_THROTTLE: Final = 60.0

MSG_UNKNOWN_SERVICE: Final = "Unknown service: no MCP service with this name on this appliance."
MSG_MISSING_AUTH: Final = (
    "Missing Authorization header: send 'Authorization: Bearer bnd_live_…' with the "
    "connection's API key, or use its secret URL."
)
MSG_PAT_REFUSED: Final = (
    "Personal API tokens (bndpat_…) work only on the admin API (/api/v1). MCP routes take the "
    "connection's API key (bnd_live_…) or its secret URL."
)
MSG_UNKNOWN_CREDENTIAL: Final = (
    "Connection not found: this URL or API key may have been deleted or replaced. "
    "Create or copy a current one on the appliance's Connections page."
)
MSG_KEY_UNAVAILABLE: Final = (
    "The appliance cannot unlock this connection's stored credential (its master key is "
    "missing or the data is damaged). Ask your administrator."
)
_KIND_RE: Final = re.compile(r"[a-z0-9:_-]{1,40}")


class TokenRefresher(Protocol):
    """The OAuth token-lifecycle seam (supplied by later work; None means "never refresh")."""

    async def fresh_payload(
        self, conn: ConnectionAuth, payload: dict[str, Any], creds: Credentials | None
    ) -> dict[str, Any]:
        """Before use: refresh when the token is (nearly) expired; return the payload to use.

        May raise ProxyRefusal ("cooldown", "needs_reconnect").
        """
        ...

    async def refresh_after_rejection(
        self, conn: ConnectionAuth, payload: dict[str, Any], creds: Credentials | None
    ) -> dict[str, Any] | None:
        """After an upstream 401/403: one forced refresh; the new payload, or None if refused."""
        ...


@dataclass(frozen=True)
class _Issued:
    """What the resolver needs to refresh a target it issued (kept only with a refresher)."""

    conn: ConnectionAuth
    creds: Credentials | None  # None: a managed connection reached through an OAuth grant
    payload: dict[str, Any]


class _Opened:
    """A managed connection's credential as opened for one service definition.

    Kept on the memo entry of the row it was opened from, so it lives no longer than that entry
    (≤ the memo TTL) and is dropped with it by `forget()`; valid only for the very row and
    service objects it was built from (a re-read row or a reloaded registry is a miss).
    """

    __slots__ = ("payload", "service", "target")

    def __init__(
        self, service: ServiceDefinition, payload: dict[str, Any], target: ProxyTarget | None
    ) -> None:
        self.service = service
        self.payload = payload
        self.target = target


class _Entry:
    __slots__ = ("conn", "expires", "opened", "service")

    def __init__(
        self, expires: float, conn: ConnectionAuth | None, service: ServiceDefinition
    ) -> None:
        self.expires = expires
        self.conn = conn
        self.service = service  # the definition current before `conn` was read
        self.opened: _Opened | None = None


class _Memo:
    """secret1 hash → entry (expiry, row or None, opened credential); bounded, oldest first."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[str, _Entry] = {}

    def get(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._entries[key]
            return None
        return entry

    def put(
        self, key: str, value: ConnectionAuth | None, service: ServiceDefinition, now: float
    ) -> None:
        if self.ttl <= 0:
            return
        if key not in self._entries and len(self._entries) >= self.size:
            self._evict(now)
        self._entries[key] = _Entry(now + self.ttl, value, service)

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def _evict(self, now: float) -> None:
        expired = [k for k, entry in self._entries.items() if entry.expires <= now]
        for k in expired:
            del self._entries[k]
        # Still full: drop the oldest tenth (dicts keep insertion order).
        excess = len(self._entries) - self.size + max(1, self.size // 10)
        for k in list(self._entries)[: max(0, excess)]:
            del self._entries[k]

    def forget_connection(self, connection_id: str) -> None:
        stale = [
            k
            for k, entry in self._entries.items()
            if entry.conn is not None and entry.conn.id == connection_id
        ]
        for k in stale:
            del self._entries[k]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _unknown() -> ProxyRefusal:
    return ProxyRefusal("unknown_credential", MSG_UNKNOWN_CREDENTIAL)


def _looks_personal(credential: str) -> bool:
    text = credential.strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].lstrip(" \t")
    return text.startswith("bndpat_")


class ConnectionResolver:
    """The proxy's `TargetResolver` over the connections table."""

    def __init__(
        self,
        ctx: AppContext,
        registry: ServiceRegistry,
        *,
        refresher: TokenRefresher | None = None,
        memo_ttl: float = MEMO_TTL,
        memo_size: int = MEMO_SIZE,
        use_throttle: float = USE_THROTTLE,
    ) -> None:
        if not 0 <= memo_ttl <= MEMO_TTL:
            raise ValueError(f"memo_ttl must be between 0 and {MEMO_TTL} seconds")
        if memo_size < 1:
            raise ValueError("memo_size must be positive")
        self._ctx = ctx
        # Billing (DESIGN §11) reads only the memoised row; off, it costs one boolean test.
        self._billing = bool(ctx.settings.stripe_webhook_secret)
        self._registry = registry
        self._refresher = refresher
        self._memo = _Memo(memo_ttl, memo_size)
        # secret1 hash → (the lookup under way, the service definition it was started with)
        self._inflight: dict[
            str, tuple[asyncio.Task[ConnectionAuth | None], ServiceDefinition]
        ] = {}
        self._issued: dict[int, _Issued] = {}
        self._epoch = 0
        self._use_throttle = use_throttle
        self._recent_use: dict[tuple[str, str, int], float] = {}

    # -- resolving -------------------------------------------------------------------------

    async def resolve(
        self, service_id: str, credential: str, *, form: Literal["path", "api_key"]
    ) -> ProxyTarget:
        try:
            return await self._resolve(service_id, credential, form)
        except ProxyRefusal as refusal:
            # Metadata only: the kind and the form, never the credential or the service name
            # the client typed (it may be anything).
            log.debug("credential refused", extra={"refusal": refusal.kind, "form": form})
            raise

    async def _resolve(
        self, service_id: str, credential: str, form: Literal["path", "api_key"]
    ) -> ProxyTarget:
        creds = self._parse(credential, form)
        service = await self._registry.get(service_id)
        if service is None:
            raise ProxyRefusal("unknown_service", MSG_UNKNOWN_SERVICE)
        conn, entry = await self._lookup(secret1_lookup_hash(creds), service)
        # A credential of another service must never reach this service's upstream.
        if conn is None or conn.service != service.id:
            raise _unknown()
        keyring = self._ctx.keys.keyring
        payload: dict[str, Any] | None = None
        if conn.key_storage_mode == "managed":
            if not conn.secret2_verifier or not verify_secret2(creds, conn.secret2_verifier):
                raise _unknown()
        else:
            try:
                payload = open_payload(conn, creds, keyring)
            except DecryptError:
                raise _unknown() from None
        # Only a holder of the whole credential learns anything past this point.
        self._refuse_unusable(conn)
        refreshing = conn.auth_type == "oauth" and self._refresher is not None
        if payload is None:
            # Managed: open the sealed credential once per memo entry, not once per request
            # (secret2 was verified above, on every request).
            opened = entry.opened if entry is not None else None
            if opened is not None and opened.service is service:
                if opened.target is not None:
                    return opened.target
                payload = opened.payload
            else:
                payload = self._open_managed(conn)
                if entry is not None:
                    opened = _Opened(service, payload, None)
                    if not refreshing:
                        opened.target = self._target(service, conn, payload)
                        entry.opened = opened
                        return opened.target
                    entry.opened = opened
        if refreshing:
            assert self._refresher is not None
            fresh = await self._refresher.fresh_payload(conn, payload, creds)
            if fresh is not payload:
                self.forget(conn.id)
            payload = fresh
        target = self._target(service, conn, payload)
        if refreshing:
            # A target of its own per request: the refresh-after-401 state is keyed by it.
            self._remember(target, _Issued(conn, creds, payload))
        return target

    async def resolve_connection(self, service_id: str, connection_id: str) -> ProxyTarget:
        """A managed connection reached through an OAuth grant (DESIGN §10), which names the
        connection instead of presenting its credentials: the same refusals and target as
        `resolve` once secret2 was verified. Not memoised: the grant's own lookup is."""
        service = await self._registry.get(service_id)
        if service is None:
            raise ProxyRefusal("unknown_service", MSG_UNKNOWN_SERVICE)
        conn = await self._ctx.store.run(rows.get_auth_by_id, connection_id)
        if conn is None or conn.service != service.id or conn.key_storage_mode != "managed":
            raise _unknown()
        self._refuse_unusable(conn)
        payload = self._open_managed(conn)
        if conn.auth_type == "oauth" and self._refresher is not None:
            fresh = await self._refresher.fresh_payload(conn, payload, None)
            if fresh is not payload:
                self.forget(conn.id)
            target = self._target(service, conn, fresh)
            self._remember(target, _Issued(conn, None, fresh))
            return target
        return self._target(service, conn, payload)

    def _refuse_unusable(self, conn: ConnectionAuth) -> None:
        """Disabled, needs-reconnect and (billing on) suspended connections are refused here,
        for secret URLs, `bnd_` keys and OAuth grants alike."""
        if conn.disabled:
            raise ProxyRefusal(
                "disabled",
                "This connection (or its owner's account) is disabled. Re-enable it at "
                f"{self._reconnect_url(conn.id)} or ask your administrator.",
            )
        if conn.needs_reconnect:
            raise self._needs_reconnect(conn, conn.needs_reconnect_reason)
        if self._billing and conn.billing_refused(self._ctx.clock.time()):
            raise ProxyRefusal(
                "payment_required",
                "This connection is suspended: its owner's plan does not cover it. Choose a "
                f"plan at {self._ctx.settings.base_url}/billing",
            )

    def _parse(self, credential: str, form: Literal["path", "api_key"]) -> Credentials:
        if form == "path":
            try:
                return parse_credentials(credential)
            except CredentialFormatError as exc:
                raise ProxyRefusal("malformed", f"Invalid request path: {exc}.") from None
        if not isinstance(credential, str) or not credential.strip():
            raise ProxyRefusal("malformed", MSG_MISSING_AUTH)
        try:
            return parse_api_key(credential)[1]
        except CredentialFormatError as exc:
            if _looks_personal(credential):
                raise ProxyRefusal("malformed", MSG_PAT_REFUSED) from None
            raise ProxyRefusal("malformed", f"Invalid API key: {exc}.") from None

    async def _lookup(
        self, lookup_hash: str, service: ServiceDefinition
    ) -> tuple[ConnectionAuth | None, _Entry | None]:
        """The row for a secret1 hash, read after `service` was current, and its memo entry
        (None when it was not memoised)."""
        now = self._ctx.clock.monotonic()
        entry = self._memo.get(lookup_hash, now)
        if entry is not None:
            if entry.service is service:
                return entry.conn, entry
            self._memo.drop(lookup_hash)  # read before the definition changed: read it again
        inflight = self._inflight.get(lookup_hash)
        if inflight is not None and inflight[1] is service:
            task = inflight[0]
        else:
            # The query runs in a task of its own, so a caller that goes away (a cancelled
            # request) never fails the others waiting for the same row.
            task = asyncio.ensure_future(self._fetch(lookup_hash, service, now))
            self._inflight[lookup_hash] = (task, service)
            task.add_done_callback(functools.partial(self._fetched, lookup_hash))
        conn = await asyncio.shield(task)
        entry = self._memo.get(lookup_hash, self._ctx.clock.monotonic())
        return conn, entry if entry is not None and entry.conn is conn else None

    async def _fetch(
        self, lookup_hash: str, service: ServiceDefinition, started: float
    ) -> ConnectionAuth | None:
        epoch = self._epoch
        value = await self._ctx.store.run(rows.get_auth_by_secret1_hash, lookup_hash)
        # Stamped with the time the lookup started, so the entry never outlives the TTL; and
        # not kept at all when `forget()` ran meanwhile (the row may predate that change).
        if epoch == self._epoch:
            self._memo.put(lookup_hash, value, service, started)
        return value

    def _fetched(self, lookup_hash: str, task: asyncio.Task[ConnectionAuth | None]) -> None:
        inflight = self._inflight.get(lookup_hash)
        if inflight is not None and inflight[0] is task:
            del self._inflight[lookup_hash]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller left

    def _open_managed(self, conn: ConnectionAuth) -> dict[str, Any]:
        try:
            return open_payload(conn, None, self._ctx.keys.keyring)
        except KeyringError:
            log.error(
                "no master key for a managed connection",
                extra={"connection_id": conn.id, "key_fingerprint": conn.key_fingerprint},
            )
        except DecryptError:
            log.error(
                "managed connection's sealed payload does not open",
                extra={"connection_id": conn.id, "key_fingerprint": conn.key_fingerprint},
            )
        raise ProxyRefusal("upstream_unavailable", MSG_KEY_UNAVAILABLE)

    def _reconnect_url(self, connection_id: str) -> str:
        return f"{self._ctx.settings.base_url}/connections/{connection_id}"

    def _needs_reconnect(
        self, conn: ConnectionAuth | ProxyTarget, reason: str | None
    ) -> ProxyRefusal:
        connection_id = conn.connection_id if isinstance(conn, ProxyTarget) else conn.id
        link = self._reconnect_url(connection_id)
        why = f" ({reason})" if reason else ""
        return ProxyRefusal(
            "needs_reconnect",
            f"This connection needs reconnecting{why}. Reconnect at {link}",
            reconnect_url=link,
        )

    def _target(
        self, service: ServiceDefinition, conn: ConnectionAuth, payload: Mapping[str, Any]
    ) -> ProxyTarget:
        try:
            secret = payload_secret(conn.auth_type, payload)
        except DecryptError:
            log.warning("stored credential has the wrong shape", extra={"connection_id": conn.id})
            raise self._needs_reconnect(conn, "stored credential is unusable") from None
        headers: dict[str, str] = {}
        query: dict[str, str] = {}
        if conn.auth_type != "none":
            injection = service.injection_for(conn.auth_type, conn.auth_mode)
            if injection is None or secret is None:
                # The service's auth changed since this connection was made.
                raise self._needs_reconnect(conn, "the service no longer accepts this credential")
            headers = injection.headers(secret)
            query = injection.query_params(secret)
        return ProxyTarget(
            connection_id=conn.id,
            user_id=conn.user_id,
            service_id=service.id,
            upstream_url=service.mcp_url,
            transport=service.transport,
            inject_headers=MappingProxyType(headers),
            inject_query=MappingProxyType(query),
            reconnect_url=self._reconnect_url(conn.id),
            auth_type=conn.auth_type,
            # Both halves come with what this target is built from (the memoised row, the
            # current definition), so a policy change applies within the memo's second.
            policy=effective(service.policy, load_policy(conn.policy_json)),
        )

    def _remember(self, target: ProxyTarget, issued: _Issued) -> None:
        key = id(target)
        self._issued[key] = issued
        weakref.finalize(target, self._issued.pop, key, None)

    def forget(self, connection_id: str) -> None:
        """Drop memo entries of a connection (this instance's own changes apply at once).

        Lookups already running may have read the row before the change: they are detached
        and their results not memoised.
        """
        self._epoch += 1
        self._inflight.clear()
        self._memo.forget_connection(connection_id)

    def forget_all(self) -> None:
        self._epoch += 1
        self._inflight.clear()
        self._memo.clear()

    # -- after the upstream answered ---------------------------------------------------------

    async def after_upstream_auth_failure(self, target: ProxyTarget, status: int) -> ProxyTarget:
        issued = self._issued.pop(id(target), None)
        if target.auth_type == "oauth" and self._refresher is not None and issued is not None:
            payload = await self._refresher.refresh_after_rejection(
                issued.conn, issued.payload, issued.creds
            )
            if payload is not None:
                self.forget(target.connection_id)
                service = await self._registry.get(target.service_id)
                if service is not None:
                    retry = self._target(service, issued.conn, payload)
                    self._remember(retry, _Issued(issued.conn, issued.creds, payload))
                    return retry
        if target.auth_type == "api_key":
            reason = "upstream rejected the key"
        elif target.auth_type == "oauth":
            reason = "upstream rejected the authorization"
        else:
            reason = "upstream refused the connection"
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
        self.forget(target.connection_id)
        refusal = self._needs_reconnect(target, reason)
        if target.auth_type == "api_key":
            link = self._reconnect_url(target.connection_id)
            refusal = ProxyRefusal(
                "needs_reconnect",
                f"The upstream service rejected this connection's API key. "
                f"Update your key at {link}",
                reconnect_url=link,
            )
        raise refusal

    async def record_use(self, target: ProxyTarget, *, upstream_status: int, kind: str) -> None:
        """Events and `last_used_at` after a relayed request; never raises for storage trouble."""
        failed = upstream_status >= 400
        if failed:
            kind = kind.lower() if _KIND_RE.fullmatch(kind.lower()) else "other"
        key = (target.connection_id, kind if failed else "", upstream_status if failed else 0)
        now_mono = self._ctx.clock.monotonic()
        last = self._recent_use.get(key)
        if last is not None and now_mono - last < self._use_throttle:
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
        if len(self._recent_use) >= MEMO_SIZE:
            cutoff = now - self._use_throttle
            self._recent_use = {k: t for k, t in self._recent_use.items() if t > cutoff}
            if len(self._recent_use) >= MEMO_SIZE:
                self._recent_use.clear()
        self._recent_use[key] = now
