"""The MCP proxy routes: admission (Origin, limits, credentials), then the relay.

Routes (`proxy_routes`), both credential forms (hosted-bindify §2.1):

    /mcp/{service}/{credentials}           Streamable HTTP, secret URL   POST GET DELETE OPTIONS
    /mcp/{service}  + Authorization        Streamable HTTP, API key      POST GET DELETE OPTIONS
    /mcp/{service}/{credentials}/sse       legacy HTTP+SSE stream        GET OPTIONS
    /mcp/{service}/{credentials}/messages  legacy messages (?session=)   POST OPTIONS
    /mcp/{service}/sse, /mcp/{service}/messages   the same, API-key form

Order of work on every request, cheapest and credential-free first. Steps 1 to 4 run in
`prepare()`, once the headers are in and before any of the body is read (the handlers stream
their request bodies, DESIGN §9):
1. `Origin` present and not allowed → 403, no body; preflights are answered by `options()`.
   A browser navigation (`Sec-Fetch-Mode: navigate`) gets a short page, nothing resolved.
2. API-key form without `Authorization` → 400 -32600. The resolver parses everything else and
   refuses per DESIGN §6 (`ProxyRefusal`).
3. A miss (unknown or malformed credential) from a client address (IPv6: its /64) over the
   unknown-credential limit → 429 + `Retry-After`; else the miss is counted. The block applies
   to misses only, after resolving: it never refuses a valid credential (DESIGN §9).
4. Per-connection rate limit → -31029.
A refusal from steps 1 to 4 reads at most the first `ID_SCAN_BYTES` of the body to find request
ids to answer; a larger body is answered with no ids at once and the connection closes after the
answer (Tornado hangs up on a request whose body it has not finished reading), so a refused
request never costs more than a constant.
5. A presented `Mcp-Session-Id` not recorded for this connection → 404, upstream never reached.
   More than `BINDIFY_MAX_STREAMS_PER_CONNECTION` exchanges open on the connection here → -31029
   (503 without an id), upstream never reached.
6. Relay (`relay.open_upstream` + `relay.pump`), recording upstream session ids first; then
   `resolver.record_use` off the hot path.

A GET on the Streamable HTTP URL of a service whose transport is legacy SSE is served as the
legacy stream, so clients that fall back from Streamable HTTP to SSE on the same URL work.

Legacy `endpoint` events are rewritten onto `base_url` with a proxy-minted session id. For
API-key users the rewritten URL carries no credential (hosted quirk Q10 fixed): the client sends
its `Authorization` header with every message POST, as it does on the stream.

Every answer carries `sandbox.SANDBOX_HEADERS`, and a relayed `Content-Type` other than JSON or
an event stream is sent as `application/octet-stream` (`headers.response_headers`).

Invariants: no log line, error message or event carries a credential, session id, URL query or
payload; the access log names the route template only (BaseHandler).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from tornado.iostream import StreamClosedError
from tornado.routing import URLSpec
from tornado.web import stream_request_body

from bindify_appliance.clientaddr import ip_bucket
from bindify_appliance.context import AppContext
from bindify_appliance.errors import KVError
from bindify_appliance.proxy.cors import ALLOWED_METHODS, OriginPolicy
from bindify_appliance.proxy.headers import SESSION_HEADER, request_headers, response_headers
from bindify_appliance.proxy.jsonrpc import (
    ID_SCAN_BYTES,
    NO_IDS,
    ErrorReply,
    RequestIds,
    parse_request_ids,
    refusal_reply,
    session_not_found_reply,
)
from bindify_appliance.proxy.limits import (
    ConnectionRateLimiter,
    IPNetwork,
    StreamSlots,
    UnknownCredentialLimiter,
    client_ip,
    parse_networks,
)
from bindify_appliance.proxy.query import client_url
from bindify_appliance.proxy.relay import ProxyConfig, needs_reconnect, open_upstream, pump, spawn
from bindify_appliance.proxy.sessions import LegacySession, LegacySessions, SessionBindings
from bindify_appliance.proxy.sse import (
    EventSplitter,
    SSEError,
    endpoint_event,
    parse_event,
    resolve_endpoint,
)
from bindify_appliance.proxy.target import ProxyRefusal, ProxyTarget, TargetResolver
from bindify_appliance.proxy.tool_filter import SSERewriter, sse_event
from bindify_appliance.proxy.tool_gate import Admission, ToolCatalog, ToolGate, fetch_url
from bindify_appliance.proxy.upstream import (
    UpstreamClient,
    UpstreamError,
    UpstreamResponse,
    with_query,
)
from bindify_appliance.routes import route
from bindify_appliance.sandbox import NAVIGATION_PAGE, SANDBOX_HEADERS
from bindify_appliance.web.base import BaseHandler

__all__ = ["ProxyServices", "proxy_routes"]

log = logging.getLogger(__name__)

Form = Literal["path", "api_key"]

_MISSING_AUTHORIZATION = (
    "Missing Authorization header: send your Bindify API key as 'Authorization: Bearer bnd_…', "
    "or use the secret URL."
)
_UNAVAILABLE = "The upstream service could not be reached. Try again shortly."
_KV_UNAVAILABLE = "The appliance cannot reach its key-value store. Try again shortly."
_TOO_MANY_STREAMS = (
    "This connection has too many requests and streams open at once; retry when one ends "
    "(BINDIFY_MAX_STREAMS_PER_CONNECTION)."
)
# Refusals that count toward the per-IP limit: someone guessing credentials.
_COUNTED_MISSES = frozenset({"unknown_credential", "malformed"})
_NOT_LEGACY = (
    "This service does not use the legacy SSE transport; use its Streamable HTTP URL "
    "(without /sse)."
)


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


def proxy_routes(
    ctx: AppContext,
    resolver: TargetResolver,
    upstream: UpstreamClient,
    config: ProxyConfig | None = None,
) -> list[URLSpec]:
    """The MCP proxy's routes, most specific first (the list order matters to Tornado)."""
    config = config or ProxyConfig()
    settings = ctx.settings
    services = ProxyServices(
        ctx=ctx,
        resolver=resolver,
        upstream=upstream,
        config=config,
        origins=OriginPolicy(settings.base_url, settings.allowed_origins),
        sessions=SessionBindings(ctx.kv, ctx.clock, session_ttl=config.session_ttl),
        legacy=LegacySessions(ctx.kv, ttl=config.legacy_session_ttl),
        rate=ConnectionRateLimiter(ctx.kv, ctx.clock, settings.rate_limit_per_hour),
        misses=UnknownCredentialLimiter(
            ctx.kv,
            ctx.clock,
            limit=config.unknown_credential_limit,
            window=config.unknown_credential_window,
        ),
        streams=StreamSlots(settings.max_streams_per_connection),
        trusted=parse_networks(settings.trusted_proxies),
        base_url=settings.base_url.rstrip("/"),
        tools=ToolGate(
            ToolCatalog(ctx.clock.monotonic, config.tool_catalog_ttl),
            upstream,
            lambda target, tool: _denied(ctx, resolver, target, tool),
            config.max_event_bytes,
        ),
    )
    api: dict[str, Any] = {"proxy": services, "form": "api_key"}
    path: dict[str, Any] = {"proxy": services, "form": "path"}
    return [
        route("/mcp/{service}/sse", LegacyStreamHandler, ctx, **api),
        route("/mcp/{service}/messages", LegacyMessagesHandler, ctx, **api),
        route("/mcp/{service}/{credentials}/sse", LegacyStreamHandler, ctx, **path),
        route("/mcp/{service}/{credentials}/messages", LegacyMessagesHandler, ctx, **path),
        route("/mcp/{service}/{credentials}", StreamableHandler, ctx, **path),
        route("/mcp/{service}", StreamableHandler, ctx, **api),
    ]


def _denied(ctx: AppContext, resolver: TargetResolver, target: ProxyTarget, tool: str) -> None:
    """A tool call refused by policy: counted by service, recorded as an event (tool name only)."""
    ctx.metrics.observe_policy_denial(target.service_id)
    spawn(resolver.record_denial(target, tool), "record_denial")


@stream_request_body
class _McpHandler(BaseHandler):
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

    def set_default_headers(self) -> None:
        # No HTML page headers: the sandbox instead (kept by clear(), which calls this again).
        self.clear_header("Server")
        self.clear_header("Content-Type")
        for name, value in SANDBOX_HEADERS:
            self.set_header(name, value)

    def check_xsrf_cookie(self) -> None:
        """MCP clients authenticate with the URL or a bearer key; no cookies, no CSRF."""

    def compute_etag(self) -> str | None:
        return None  # never turn a relayed 200 into a 304

    async def prepare(self) -> None:
        origin = self.request.headers.get("Origin")
        if not self.proxy.origins.allowed(origin):
            self._refused = self._refuse_origin
            return
        for name, value in self.proxy.origins.response_headers(origin):
            self.set_header(name, value)
        if self.request.method == "OPTIONS":
            return  # preflights never touch credentials
        if self.request.headers.get("Sec-Fetch-Mode") == "navigate":
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
            refusal = ProxyRefusal("upstream_unavailable", _KV_UNAVAILABLE)
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
        if self.form == "api_key":
            credential = self.request.headers.get("Authorization", "")
            if not credential.strip():
                raise ProxyRefusal("malformed", _MISSING_AUTHORIZATION)
        else:
            credential = credentials or ""
        try:
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

    async def _guarded(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work`, turning a departed client into a quiet end and closing the upstream."""
        self._task = asyncio.current_task()
        try:
            await work()
        except asyncio.CancelledError:
            if not self._client_gone or self._task is None:
                raise
            self._task.uncancel()
        except StreamClosedError:
            self._client_gone = True
        except KVError:
            log.warning(
                "key-value store unavailable during a proxied request", extra={"event": "kv"}
            )
            if not self._headers_written and not self._finished:
                self._reset_response()
                self._refuse(ProxyRefusal("upstream_unavailable", _KV_UNAVAILABLE))
        finally:
            self._task = None
            response, self._upstream_response = self._upstream_response, None
            if response is not None:
                response.close()
            if self._slot is not None:
                self.proxy.streams.give_back(self._slot)
                self._slot = None

    async def _open(
        self,
        method: str,
        target: ProxyTarget,
        url: Callable[[ProxyTarget], str],
        body: bytes | None,
        *,
        timeout: float | None = None,
    ) -> tuple[ProxyTarget, UpstreamResponse] | None:
        """Open the upstream request; on failure answer the client and return None."""
        if self._slot is None:
            if not self.proxy.streams.take(target.connection_id):
                self._refuse(ProxyRefusal("rate_limited", _TOO_MANY_STREAMS, retry_after=1))
                return None
            self._slot = target.connection_id
        client_headers = list(self.request.headers.get_all())

        def build(t: ProxyTarget) -> tuple[str, Mapping[str, str]]:
            return client_url(url(t), self), request_headers(client_headers, t.inject_headers)

        try:
            target, response = await open_upstream(
                self.proxy.upstream,
                self.proxy.resolver,
                target,
                method,
                build,
                body,
                timeout=timeout,
            )
        except UpstreamError:
            self._refuse(ProxyRefusal("upstream_unavailable", _UNAVAILABLE))
            return None
        except ProxyRefusal as refusal:
            self._refuse(refusal)
            return None
        self._upstream_response = response
        if response.status in (401, 403):
            self._record(target, response.status)
            self._refuse(needs_reconnect(target))
            return None
        return target, response

    def _use_kind(self) -> str:
        return f"{self._kind}:{(self.request.method or '').lower()}"

    def _record(self, target: ProxyTarget, status: int) -> None:
        """`record_use` in the background (streams and refusals: don't wait for it)."""
        spawn(
            self.proxy.resolver.record_use(target, upstream_status=status, kind=self._use_kind()),
            "record_use",
        )

    async def _record_after(self, target: ProxyTarget, status: int) -> None:
        """`record_use` once the client has its answer (no extra task on the hot path)."""
        try:
            await self.proxy.resolver.record_use(
                target, upstream_status=status, kind=self._use_kind()
            )
        except Exception as exc:  # bookkeeping must never break a relayed request
            log.warning(
                "record_use failed: %s", type(exc).__name__, extra={"event": "proxy_bookkeeping"}
            )

    _kind = "streamable-http"

    def _start_response(self, response: UpstreamResponse) -> bool:
        """Status and allowed headers from the upstream; True for an event stream."""
        self.set_status(response.status)
        for name, value in response_headers(response.headers):
            self.set_header(name, value)
        sse = response.content_type == "text/event-stream"
        if sse:
            self.set_header("X-Accel-Buffering", "no")
            if response.header("Cache-Control") is None:
                self.set_header("Cache-Control", "no-cache")
        return sse

    async def _finish_relay(
        self,
        target: ProxyTarget,
        response: UpstreamResponse,
        sse: bool,
        *,
        transform: Callable[[bytes], Awaitable[bytes]] | None = None,
        every: tuple[float, Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        """Pump the body, finish, and record the use (at the start of a stream, else after)."""
        if sse:
            self._record(target, response.status)
            await self._pump(response, sse, transform=transform, every=every)
            return
        try:
            await self._pump(response, sse)
        finally:
            await self._record_after(target, response.status)

    async def _gate(self, target: ProxyTarget, body: bytes) -> Admission | None:
        """Tool policy admission of a POST body (DESIGN §13); None when answered here."""
        legacy = self._kind == "sse-messages"
        admission = await self.proxy.tools.admit(
            target,
            body,
            self.request.headers,
            list(self.request.headers.get_all()),
            fetch_url=None if legacy else fetch_url(target),
        )
        if admission.reply is not None:
            self._reply(admission.reply)
            return None
        return admission

    async def _answer(
        self, target: ProxyTarget, response: UpstreamResponse, admission: Admission | None
    ) -> None:
        """Relay the upstream's answer; under a policy, filter its tools/list answers and merge
        the refused batch entries' errors (proxy/tool_filter.py)."""
        sse = self._start_response(response)
        if admission is None or not admission.rewrites or not 200 <= response.status < 300:
            await self._finish_relay(target, response, sse)
            return
        listed = admission.filter or self.proxy.tools.list_filter(target, frozenset())
        if sse:
            prefix = b"".join(map(sse_event, admission.errors))
            rewriter = SSERewriter(listed, self.proxy.config.max_event_bytes, prefix)
            await self._finish_relay(target, response, sse, transform=rewriter)
            return
        try:
            limit = self.proxy.config.max_event_bytes
            body = await response.read_all(limit)
            if not response.at_eof():
                raise UpstreamError("a tools/list answer exceeds the size limit")
        except UpstreamError:
            self._reset_response()
            self._refuse(ProxyRefusal("upstream_unavailable", _UNAVAILABLE))
            return
        rewritten = listed.json_body(body, admission.errors)
        if rewritten is not None and response.status == 202:
            self.set_status(200)  # the upstream took the rest; the refused entries get errors
            self.set_header("Content-Type", "application/json")
        self._upstream_response = None
        response.release()
        self.finish(rewritten if rewritten is not None else body)
        await self._record_after(target, response.status)

    async def _pump(
        self,
        response: UpstreamResponse,
        sse: bool,
        *,
        transform: Callable[[bytes], Awaitable[bytes]] | None = None,
        every: tuple[float, Callable[[], Awaitable[None]]] | None = None,
    ) -> None:
        keepalive = self.proxy.config.keepalive_interval if sse else None
        try:
            await pump(
                response,
                self,
                keepalive=keepalive,
                flush_headers=sse,
                transform=transform,
                every=every,
            )
        except (UpstreamError, SSEError):
            # The upstream broke the body mid-way: end the client's response the same way.
            if not self._headers_written:
                self._reset_response()
                self._refuse(ProxyRefusal("upstream_unavailable", _UNAVAILABLE))
                return
            self._abort_client()
            return
        self._upstream_response = None
        response.release()
        self.finish()

    def _reset_response(self) -> None:
        """Forget the upstream's status and headers (nothing was sent yet); keep CORS."""
        self.clear()
        origin = self.request.headers.get("Origin")
        for name, value in self.proxy.origins.response_headers(origin):
            self.set_header(name, value)

    def _abort_client(self) -> None:
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            stream.close()
        self._client_gone = True

    async def _legacy_stream(
        self, service: str, credentials: str | None, target: ProxyTarget
    ) -> None:
        """Relay a legacy HTTP+SSE stream, rewriting its `endpoint` event onto our origin."""
        proxy = self.proxy
        opened = await self._open(
            "GET", target, lambda t: with_query(t.upstream_url, t.inject_query), None
        )
        if opened is None:
            return
        target, response = opened
        sse = self._start_response(response)
        if response.status != 200 or not sse:
            await self._finish_relay(target, response, sse)
            return

        splitter = EventSplitter(proxy.config.max_event_bytes)
        sessions: list[LegacySession] = []
        prefix = f"{proxy.base_url}/mcp/{quote(service, safe='')}"
        if self.form == "path" and credentials:
            prefix += f"/{quote(credentials, safe='')}"
        sse_url = target.upstream_url
        connection_id = target.connection_id
        listed = self.proxy.tools.list_filter(target, None) if target.policy else None

        async def transform(chunk: bytes) -> bytes:
            out: list[bytes] = []
            for raw in splitter.feed(chunk):
                event_type, data = parse_event(raw)
                if event_type != "endpoint":
                    out.append(raw if listed is None else listed.event(raw))
                    continue
                message_url = resolve_endpoint(data, sse_url)
                if message_url is None:
                    log.warning(
                        "legacy endpoint event refused (not on the upstream's origin)",
                        extra={"event": "sse_endpoint_refused"},
                    )
                    raise SSEError("endpoint refused")
                while sessions:
                    await proxy.legacy.close(sessions.pop())
                session = await proxy.legacy.open(connection_id, message_url)
                sessions.append(session)
                url = f"{prefix}/messages?session={session.session_id}"
                out.append(endpoint_event(url, raw))
            return b"".join(out)

        async def renew() -> None:
            for session in sessions:
                await proxy.legacy.renew(session)

        try:
            await self._finish_relay(
                target,
                response,
                True,
                transform=transform,
                every=(max(1.0, proxy.legacy.ttl / 3), renew),
            )
        finally:
            for session in sessions:
                try:
                    await proxy.legacy.close(session)
                except KVError:
                    log.warning("could not end a legacy session binding", extra={"event": "kv"})


class StreamableHandler(_McpHandler):
    """`/mcp/{service}/{credentials}` and `/mcp/{service}` (Streamable HTTP, every revision)."""

    async def post(self, service: str, credentials: str | None = None) -> None:
        await self._guarded(lambda: self._relay("POST", service, credentials))

    async def get(self, service: str, credentials: str | None = None) -> None:
        await self._guarded(lambda: self._relay("GET", service, credentials))

    async def delete(self, service: str, credentials: str | None = None) -> None:
        await self._guarded(lambda: self._relay("DELETE", service, credentials))

    async def _relay(self, method: str, service: str, credentials: str | None) -> None:
        target = self._admitted()
        if target is None:
            return
        if method == "GET" and target.transport == "sse":
            self._kind = "sse"
            await self._legacy_stream(service, credentials, target)
            return
        sessions = self.proxy.sessions
        session_id = self.request.headers.get(SESSION_HEADER)
        if session_id is not None and not await sessions.owns(target.connection_id, session_id):
            self._reply(session_not_found_reply(self._request_ids()))
            return
        body = self._body() if method == "POST" else None
        admission: Admission | None = None
        if target.policy is not None and method != "DELETE":  # else: no body inspection
            if body is None:  # a GET stream: its requests are not seen, answers go by shape
                admission = Admission(filter=self.proxy.tools.list_filter(target, None))
            elif (admission := await self._gate(target, body)) is None:
                return
            else:
                body = admission.body
        opened = await self._open(
            method, target, lambda t: with_query(t.upstream_url, t.inject_query), body
        )
        if opened is None:
            return
        target, response = opened
        status = response.status
        if 200 <= status < 300:
            issued = response.header(SESSION_HEADER)
            if issued and issued != session_id:
                await sessions.bind(target.connection_id, issued)
            if method == "DELETE" and session_id is not None:
                await sessions.forget(target.connection_id, session_id)
        await self._answer(target, response, admission)


class LegacyStreamHandler(_McpHandler):
    """`…/sse`: the legacy HTTP+SSE stream (2024-11-05 transport)."""

    SUPPORTED_METHODS = ("GET", "OPTIONS")
    ALLOW = "GET, OPTIONS"
    _kind = "sse"

    async def get(self, service: str, credentials: str | None = None) -> None:
        await self._guarded(lambda: self._stream(service, credentials))

    async def _stream(self, service: str, credentials: str | None) -> None:
        target = self._admitted()
        if target is None:
            return
        if target.transport != "sse":
            self._refuse(ProxyRefusal("malformed", _NOT_LEGACY))
            return
        await self._legacy_stream(service, credentials, target)


class LegacyMessagesHandler(_McpHandler):
    """`…/messages?session=…`: client → server messages of a legacy stream."""

    SUPPORTED_METHODS = ("POST", "OPTIONS")
    ALLOW = "POST, OPTIONS"
    _kind = "sse-messages"

    async def post(self, service: str, credentials: str | None = None) -> None:
        await self._guarded(lambda: self._message(service, credentials))

    async def _message(self, service: str, credentials: str | None) -> None:
        target = self._admitted()
        if target is None:
            return
        session_id = self.get_query_argument("session", "") or ""
        message_url = (
            await self.proxy.legacy.lookup(target.connection_id, session_id) if session_id else None
        )
        if message_url is None:
            self._reply(session_not_found_reply(self._request_ids(), legacy=True))
            return
        body: bytes | None = self._body()
        if target.policy is not None:
            admission = await self._gate(target, self._body())
            if admission is None:
                return
            body = admission.body  # answers come on the stream, filtered there
        opened = await self._open(
            "POST",
            target,
            lambda t: with_query(message_url, t.inject_query),
            body,
            timeout=self.proxy.config.legacy_post_timeout,
        )
        if opened is None:
            return
        target, response = opened
        sse = self._start_response(response)
        await self._finish_relay(target, response, sse)
