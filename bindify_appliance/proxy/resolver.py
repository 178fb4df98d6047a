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

After an upstream 401/403 the relay (`relay.open_upstream`, the one place that decides refresh
once, retry once, else needs-reconnect) calls `after_upstream_auth_failure` once with the target
it was given: an OAuth target under a refresher carries its explicit `RefreshHandle`
(`proxy/refresh_seam.py`) and is refreshed through the `TokenRefresher`; otherwise the
connection is flagged needs-reconnect, an event recorded, and "needs_reconnect" raised.
`record_use` does the metadata bookkeeping after the response (`proxy/use_records.py`). The
memo lives in `proxy/resolution_memo.py`.

Where new rules go: a new credential form is recognised in `_parse` (and `resolve` picks its
lookup); a new connection state that refuses requests is one check beside `disabled` and
`needs_reconnect` in `resolve` (after secret2 is verified, so only a holder of the whole
credential learns it) with its refusal kind's row in `proxy/jsonrpc.py`.

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

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal

from bindify_appliance.connections.needs_reconnect import (
    needs_new_key,
    needs_reconnect,
    reconnect_link,
)
from bindify_appliance.connections.secrets import open_payload, payload_secret
from bindify_appliance.context import AppContext
from bindify_appliance.crypto.credentials import (
    Credentials,
    parse_api_key,
    parse_credentials,
    secret1_lookup_hash,
    verify_secret2,
)
from bindify_appliance.errors import CredentialFormatError, DecryptError, KeyringError
from bindify_appliance.proxy.policy import effective, load_policy
from bindify_appliance.proxy.refresh_seam import RefreshHandle, TokenRefresher
from bindify_appliance.proxy.resolution_memo import Entry, Memo, Opened, RowLookups
from bindify_appliance.proxy.target import ProxyRefusal, ProxyTarget
from bindify_appliance.proxy.use_records import USE_THROTTLE, UseRecorder
from bindify_appliance.services.definitions import ServiceDefinition
from bindify_appliance.services.registry import ServiceRegistry
from bindify_appliance.store.connections import ConnectionAuth

__all__ = [
    "MEMO_TTL",
    "ConnectionResolver",
    "RefreshHandle",
    "TokenRefresher",
]

log = logging.getLogger(__name__)

MEMO_TTL: Final = 1.0
MEMO_SIZE: Final = 10_000

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


def _unknown() -> ProxyRefusal:
    return ProxyRefusal("unknown_credential", MSG_UNKNOWN_CREDENTIAL)


def _memoised_target(entry: Entry | None, service: ServiceDefinition) -> ProxyTarget | None:
    """The target built when the entry's credential was opened for this very definition."""
    opened = entry.opened if entry is not None else None
    if opened is not None and opened.service is service:
        return opened.target
    return None


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
        self._rows = RowLookups(ctx, Memo(memo_ttl, memo_size))
        self._memo = self._rows.memo
        self._uses = UseRecorder(ctx, registry, use_throttle)

    # -- resolving -------------------------------------------------------------------------

    async def resolve(
        self, service_id: str, credential: str, *, form: Literal["path", "api_key"]
    ) -> ProxyTarget:
        try:
            creds = self._parse(credential, form)
            service = await self._registry.get(service_id)
            if service is None:
                raise ProxyRefusal("unknown_service", MSG_UNKNOWN_SERVICE)
            lookup_hash = secret1_lookup_hash(creds)
            # A memo hit needs no await (and no coroutine): the common case of a busy connection.
            entry = self._rows.hit(lookup_hash, service)
            if entry is not None:
                conn = entry.conn
            else:
                conn, entry = await self._rows.lookup(lookup_hash, service)
            # A credential of another service must never reach this service's upstream.
            if conn is None or conn.service != service.id:
                raise _unknown()
            payload: dict[str, Any] | None = None
            if conn.key_storage_mode == "managed":
                if not conn.secret2_verifier or not verify_secret2(creds, conn.secret2_verifier):
                    raise _unknown()
            else:
                try:
                    payload = open_payload(conn, creds, self._ctx.keys.keyring)
                except DecryptError:
                    raise _unknown() from None
            # Only a holder of the whole credential learns anything past this point.
            self._refuse_unusable(conn)
            if payload is None:  # a memoised target needs no await (the busy connection's case)
                memoised = _memoised_target(entry, service)
                return memoised or await self._managed_target(service, conn, entry, creds)
            if conn.auth_type == "oauth" and self._refresher is not None:
                fresh = await self._refresher.fresh_payload(conn, payload, creds)
                if fresh is not payload:
                    self.forget(conn.id)
                # A target of its own per request, carrying what one refresh after a 401 needs.
                return self._target(service, conn, fresh, RefreshHandle(conn, creds, fresh))
            return self._target(service, conn, payload)
        except ProxyRefusal as refusal:
            # Metadata only: the kind and the form, never the credential or the service name
            # the client typed (it may be anything).
            log.debug("credential refused", extra={"refusal": refusal.kind, "form": form})
            raise

    async def _managed_target(
        self,
        service: ServiceDefinition,
        conn: ConnectionAuth,
        entry: Entry | None,
        creds: Credentials | None,
    ) -> ProxyTarget:
        """A usable managed connection's target: its sealed credential is opened once per memo
        entry, not once per request (the caller proved the right to use it on every request).
        Callers try `_memoised_target` first; what reaches here has no target memoised."""
        refreshing = conn.auth_type == "oauth" and self._refresher is not None
        opened = entry.opened if entry is not None else None
        if opened is not None and opened.service is service:
            payload = opened.payload  # a refreshing connection's: its target is per request
        else:
            payload = self._open_managed(conn)
            if entry is not None:
                opened = Opened(service, payload, None)
                if not refreshing:
                    opened.target = self._target(service, conn, payload)
                entry.opened = opened
                if opened.target is not None:
                    return opened.target
        if not refreshing:
            return self._target(service, conn, payload)
        assert self._refresher is not None
        fresh = await self._refresher.fresh_payload(conn, payload, creds)
        if fresh is not payload:
            self.forget(conn.id)
        # A target of its own per request, carrying what one refresh after a 401 needs.
        return self._target(service, conn, fresh, RefreshHandle(conn, creds, fresh))

    async def resolve_connection(self, service_id: str, connection_id: str) -> ProxyTarget:
        """A managed connection reached through an OAuth grant (DESIGN §10), which names the
        connection instead of presenting its credentials: the same refusals, memo and target as
        `resolve` once secret2 was verified."""
        service = await self._registry.get(service_id)
        if service is None:
            raise ProxyRefusal("unknown_service", MSG_UNKNOWN_SERVICE)
        conn, entry = await self._rows.lookup_id(connection_id, service)
        if conn is None or conn.service != service.id or conn.key_storage_mode != "managed":
            raise _unknown()
        self._refuse_unusable(conn)
        return _memoised_target(entry, service) or await self._managed_target(
            service, conn, entry, None
        )

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
        return reconnect_link(self._ctx.settings.base_url, connection_id)

    def _needs_reconnect(
        self, conn: ConnectionAuth | ProxyTarget, reason: str | None
    ) -> ProxyRefusal:
        connection_id = conn.connection_id if isinstance(conn, ProxyTarget) else conn.id
        return needs_reconnect(self._ctx.settings.base_url, connection_id, reason)

    def _target(
        self,
        service: ServiceDefinition,
        conn: ConnectionAuth,
        payload: Mapping[str, Any],
        refresh: RefreshHandle | None = None,
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
            refresh=refresh,
        )

    def forget(self, connection_id: str) -> None:
        """Drop memo entries of a connection (this instance's own changes apply at once).

        Lookups already running may have read the row before the change: they are detached
        and their results not memoised.
        """
        self._rows.forget(connection_id)

    def forget_all(self) -> None:
        """Drop every memo entry (a service moved: `ServiceRegistry.on_moved`)."""
        self._rows.forget(None)

    # -- after the upstream answered ---------------------------------------------------------

    async def after_upstream_auth_failure(self, target: ProxyTarget, status: int) -> ProxyTarget:
        handle = target.refresh if isinstance(target.refresh, RefreshHandle) else None
        if target.auth_type == "oauth" and self._refresher is not None and handle is not None:
            payload = await self._refresher.refresh_after_rejection(
                handle.conn, handle.payload, handle.creds
            )
            if payload is not None:
                self.forget(target.connection_id)
                service = await self._registry.get(target.service_id)
                if service is not None:
                    retry = RefreshHandle(handle.conn, handle.creds, payload)
                    return self._target(service, handle.conn, payload, retry)
        if target.auth_type == "api_key":
            reason = "upstream rejected the key"
        elif target.auth_type == "oauth":
            reason = "upstream rejected the authorization"
        else:
            reason = "upstream refused the connection"
        await self._uses.record_rejection(target, reason, status)
        self.forget(target.connection_id)
        if target.auth_type == "api_key":
            raise needs_new_key(self._ctx.settings.base_url, target.connection_id)
        raise self._needs_reconnect(target, reason)

    async def record_use(self, target: ProxyTarget, *, upstream_status: int, kind: str) -> None:
        """Events and `last_used_at` after a relayed request (`proxy/use_records.py`)."""
        await self._uses.record_use(target, upstream_status=upstream_status, kind=kind)

    async def record_denial(self, target: ProxyTarget, tool: str) -> None:
        """`proxy_request/policy_denied` naming the service and tool (`proxy/use_records.py`)."""
        await self._uses.record_denial(target, tool)
