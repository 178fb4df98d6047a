"""Admission of an MCP proxy request: Origin, limits and credentials, before any upstream.

`AdmissionHandler` is the base of every proxy handler (`proxy/handlers.py`, `proxy/legacy.py`).
Order of work on every request, cheapest and credential-free first. Steps 1 to 4 run in
`prepare()`, once the headers are in and before any of the body is read (the handlers stream
their request bodies, DESIGN §9):
1. `Origin` present and not allowed → 403, no body; preflights are answered by `options()`.
   A browser navigation (`Sec-Fetch-Mode: navigate`) gets a short page, nothing resolved.
2. API-key form without `Authorization` → 400 -32600, or 401 + `WWW-Authenticate` while the
   OAuth server is on (DESIGN §10); `Bearer bndat_…` goes to `ProxyServices.bearer`. The
   resolver parses everything else and refuses per DESIGN §6 (`ProxyRefusal`).
3. A miss (unknown or malformed credential) from a client address (IPv6: its /64) over the
   unknown-credential limit → 429 + `Retry-After`; else the miss is counted. The block applies
   to misses only, after resolving: it never refuses a valid credential (DESIGN §9).
4. Per-connection rate limit → -31029.
A refusal from steps 1 to 4 reads at most the first `ID_SCAN_BYTES` of the body to find request
ids to answer; a larger body is answered with no ids at once and the connection closes after the
answer (Tornado hangs up on a request whose body it has not finished reading), so a refused
request never costs more than a constant.

`ProxyServices` is everything the handlers share, built once by `proxy_routes`.

Invariants: a method handler relays only an admitted request (`_target` set); a refusal
`prepare()` decided (`_refused` set) is answered once the body is in, or as soon as more than
`ID_SCAN_BYTES` of it arrived. Every answer carries `sandbox.SANDBOX_HEADERS`. No log line,
error message or event carries a credential, session id, URL query or payload. All per-request
state of every proxy handler is set in `initialize()` here (one call, no chained initialisers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bindify_appliance.clientaddr import ip_bucket
from bindify_appliance.context import AppContext
from bindify_appliance.errors import KVError
from bindify_appliance.header_names import header_value
from bindify_appliance.oauth_server.bearer import BearerResolver
from bindify_appliance.oauth_server.tokens import is_access_token
from bindify_appliance.proxy.base import ProxyBaseHandler
from bindify_appliance.proxy.cors import ALLOWED_METHODS, OriginPolicy
from bindify_appliance.proxy.jsonrpc import (
    ID_SCAN_BYTES,
    NO_IDS,
    ErrorReply,
    RequestIds,
    parse_request_ids,
    refusal_reply,
)
from bindify_appliance.proxy.limits import (
    ConnectionRateLimiter,
    IPNetwork,
    StreamSlots,
    UnknownCredentialLimiter,
    client_ip,
)
from bindify_appliance.proxy.relay import ProxyConfig
from bindify_appliance.proxy.sessions import LegacySessions, SessionBindings
from bindify_appliance.proxy.target import ProxyRefusal, ProxyTarget, TargetResolver
from bindify_appliance.proxy.tool_gate import ToolGate
from bindify_appliance.proxy.upstream import UpstreamClient, UpstreamResponse
from bindify_appliance.sandbox import NAVIGATION_PAGE

__all__ = ["KV_UNAVAILABLE", "AdmissionHandler", "Form", "ProxyServices"]

log = logging.getLogger(__name__)

Form = Literal["path", "api_key"]

_MISSING_AUTHORIZATION = (
    "Missing Authorization header: send your Bindify API key as 'Authorization: Bearer bnd_…', "
    "or use the secret URL."
)
KV_UNAVAILABLE = "The appliance cannot reach its key-value store. Try again shortly."
# Refusals that count toward the per-IP limit: someone guessing credentials.
_COUNTED_MISSES = frozenset({"unknown_credential", "malformed"})


@dataclass
class ProxyServices:
    """Everything the proxy handlers share, built once by `proxy_routes`."""

    ctx: AppContext
    resolver: TargetResolver
    upstream: UpstreamClient
    config: ProxyConfig
    origins: OriginPolicy
    sessions: SessionBindings
    legacy: LegacySessions
    rate: ConnectionRateLimiter
    misses: UnknownCredentialLimiter
    streams: StreamSlots
    trusted: tuple[IPNetwork, ...]
    base_url: str
    tools: ToolGate  # tool policies (DESIGN §13), consulted only for targets with a policy
    bearer: BearerResolver | None = None  # `bndat_` tokens (DESIGN §10); None while it is off


class AdmissionHandler(ProxyBaseHandler):
    """Shared admission, error replies, cancellation and response relaying.

    Invariant: a method handler relays only an admitted request (`_target` set); a refusal
    `prepare()` decided (`_refused` set) is answered once the body is in, or as soon as more
    than `ID_SCAN_BYTES` of it arrived (then without ids, and the connection closes).
    """

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "POST", "DELETE", "OPTIONS")
    ALLOW = ALLOWED_METHODS
    proxy: ProxyServices
    form: Form

    def initialize(  # type: ignore[override]
        self,
        ctx: AppContext,
        route_template: str | None = None,
        *,
        proxy: ProxyServices,
        form: Form,
    ) -> None:
        super().initialize(ctx, route_template)
        self.proxy = proxy
        self.form = form
        self._task: asyncio.Task[Any] | None = None
        self._client_gone = False
        self._ids: RequestIds | None = None
        self._upstream_response: UpstreamResponse | None = None
        self._target: ProxyTarget | None = None
        self._refused: Callable[[], None] | None = None
        self._body_parts: list[bytes] = []
        self._body_size = 0
        self._slot: str | None = None  # the connection whose StreamSlots slot this holds

    # --------------------------------------------------------------- Tornado hooks

    async def prepare(self) -> None:
        headers = self.request.headers
        origin = header_value(headers, "Origin")
        if not self.proxy.origins.allowed(origin):
            self._refused = self._refuse_origin
            return
        for name, value in self.proxy.origins.response_headers(origin):
            self.set_header(name, value)
        if self.request.method == "OPTIONS":
            return  # preflights never touch credentials
        if header_value(headers, "Sec-Fetch-Mode") == "navigate":
            self._refused = self._navigation_page
            return
        kwargs = self.path_kwargs
        refusal: ProxyRefusal
        try:
            self._target = await self._admit(kwargs["service"], kwargs.get("credentials"))
            return
        except ProxyRefusal as refused:
            refusal = refused
        except KVError:
            log.warning("key-value store unavailable during admission", extra={"event": "kv"})
            refusal = ProxyRefusal("upstream_unavailable", KV_UNAVAILABLE)
        self._refused = lambda: self._refuse(refusal)

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return  # answered already; Tornado drops the connection after the answer
        if self._refused is not None and self._body_size + len(chunk) > ID_SCAN_BYTES:
            # Ids are looked for in the first 64 KiB only: a longer body has none to answer,
            # and the rest of it is never read (Tornado closes after an early answer).
            self._ids = NO_IDS
            self.set_header("Connection", "close")
            self._refused()
            return
        self._body_parts.append(chunk)
        self._body_size += len(chunk)

    def _refuse_origin(self) -> None:
        self.set_status(403)
        self.finish()

    def _navigation_page(self) -> None:
        """A person opened the URL in a browser: say what it is for, contact nobody."""
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(NAVIGATION_PAGE)

    def _body(self) -> bytes:
        parts = self._body_parts
        if len(parts) > 1:
            parts[:] = [b"".join(parts)]
        return parts[0] if parts else b""

    def _admitted(self) -> ProxyTarget | None:
        """The admitted request's target; else answer the refusal (if not yet) and None."""
        if self._refused is not None:
            if not self._finished:
                self._refused()
            return None
        return self._target

    def on_connection_close(self) -> None:
        self._client_gone = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        super().on_connection_close()

    def options(self, *args: Any, **kwargs: Any) -> None:
        if self._refused is not None:
            self._admitted()
            return
        origin = self.request.headers.get("Origin")
        if origin is None:
            self.set_header("Allow", self.ALLOW)
        else:
            requested = self.request.headers.get("Access-Control-Request-Headers")
            for name, value in self.proxy.origins.preflight_headers(origin, requested):
                self.set_header(name, value)
        self.set_status(204)
        self.finish()

    # --------------------------------------------------------------- helpers

    def _request_ids(self) -> RequestIds:
        if self._ids is None:
            body = self._body() if self.request.method == "POST" else b""
            self._ids = parse_request_ids(body)
        return self._ids

    def _reply(self, reply: ErrorReply) -> None:
        self.set_status(reply.status)
        for name, value in reply.headers:
            self.set_header(name, value)
        self.finish(reply.body or b"")

    def _refuse(self, refusal: ProxyRefusal) -> None:
        self._reply(refusal_reply(refusal, self._request_ids()))

    def _client_ip(self) -> str:
        peer = self.request.remote_ip or ""
        if not self.proxy.trusted:
            return peer
        headers = self.request.headers
        return client_ip(
            peer,
            headers.get_list("Forwarded"),
            headers.get_list("X-Forwarded-For"),
            self.proxy.trusted,
        )

    async def _admit(self, service: str, credentials: str | None) -> ProxyTarget:
        """Resolve the request's connection; raise the `ProxyRefusal` to answer instead."""
        proxy = self.proxy
        bearer = proxy.bearer if self.form == "api_key" else None
        if self.form == "api_key":
            credential = self.request.headers.get("Authorization", "")
            if not credential.strip():
                if bearer is not None:
                    raise bearer.missing(service)  # 401: sign in (DESIGN §10)
                raise ProxyRefusal("malformed", _MISSING_AUTHORIZATION)
        else:
            credential = credentials or ""
        try:
            if bearer is not None and is_access_token(credential):
                target = await bearer.resolve(service, credential)
            else:
                target = await proxy.resolver.resolve(service, credential, form=self.form)
        except ProxyRefusal as refusal:
            # Guessing credentials (well-formed or not) is what the per-IP limit brakes; it is
            # decided after resolving, so a valid credential is never refused by it.
            if refusal.kind in _COUNTED_MISSES:
                client = ip_bucket(self._client_ip())
                wait = proxy.misses.retry_after(client)
                if wait is not None:
                    raise ProxyRefusal("ip_limited", "", retry_after=wait) from None
                try:
                    await proxy.misses.record_miss(client)
                except KVError:
                    log.warning("unknown-credential limiter unavailable", extra={"event": "kv"})
            raise
        if proxy.rate.enabled:
            try:
                wait = await proxy.rate.hit(target.connection_id)
            except KVError:  # fail open: a KV outage must not stop every connection
                log.warning("rate limiter unavailable", extra={"event": "kv"})
                wait = None
            if wait is not None:
                raise ProxyRefusal(
                    "rate_limited",
                    "This connection's hourly request limit is reached.",
                    retry_after=wait,
                )
        return target

    def _reset_response(self) -> None:
        """Forget the upstream's status and headers (nothing was sent yet); keep CORS."""
        self.clear()
        origin = self.request.headers.get("Origin")
        for name, value in self.proxy.origins.response_headers(origin):
            self.set_header(name, value)
