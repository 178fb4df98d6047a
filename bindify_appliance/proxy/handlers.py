"""The MCP proxy routes: the route table and the Streamable HTTP handler.

Routes (`proxy_routes`), both credential forms (hosted-bindify §2.1):

    /mcp/{service}/{credentials}           Streamable HTTP, secret URL   POST GET DELETE OPTIONS
    /mcp/{service}  + Authorization        Streamable HTTP, API key      POST GET DELETE OPTIONS
    /mcp/{service}/{credentials}/sse       legacy HTTP+SSE stream        GET OPTIONS
    /mcp/{service}/{credentials}/messages  legacy messages (?session=)   POST OPTIONS
    /mcp/{service}/sse, /mcp/{service}/messages   the same, API-key form

One exchange reads top to bottom in `StreamableHandler._relay`:
1. admit (`proxy/admission.py`, in `prepare()`: Origin, credentials through the resolver, limits;
   the resolved `ProxyTarget` carries its own refresh handle when it has one);
2. check the presented session id, and under a tool policy gate the body (`proxy/tool_gate.py`);
3. open upstream (`RelayHandler._open` → `relay.open_upstream`, the one place that decides an
   upstream 401/403: refresh once, retry once, else needs-reconnect);
4. relay the answer (`RelayHandler._answer` → `relay.pump`);
5. record the use (`resolver.record_use`, off the hot path).
The legacy transport and its endpoint rewrite live in `proxy/legacy.py` and `proxy/sse.py`.

Seams: the HTTP side is `proxy/base.py`: every route's target is an `ExchangeRoute`, which hands
each request straight to a new exchange (a `ProxyBaseHandler` subclass below, not a Tornado
`RequestHandler`) speaking the handler API the classes here use; the access line and the
request count are written through `ctx.metrics.log_function(access_log_function)`, as the
application does for its other routes. The upstream client is `proxy/upstream.py`, used only
through `relay.open_upstream`; a new
credential form is parsed by the resolver (`proxy/resolver.py`); a new refusal is a
`RefusalKind` with its row in `proxy/jsonrpc.py`. On the
Streamable HTTP routes, a presented `Mcp-Session-Id` not recorded for this connection → 404,
upstream never reached; upstream session ids are recorded before the answer is relayed.

A GET on the Streamable HTTP URL of a service whose transport is legacy SSE is served as the
legacy stream, so clients that fall back from Streamable HTTP to SSE on the same URL work.

Invariants: no log line, error message or event carries a credential, session id, URL query or
payload; the access log names the route template only (`proxy/base.py`).
"""

from __future__ import annotations

from typing import Any

from tornado.routing import URLSpec

from bindify_appliance.context import AppContext
from bindify_appliance.header_names import header_value
from bindify_appliance.http.base import access_log_function
from bindify_appliance.oauth_server.proxying import bearer_resolver
from bindify_appliance.proxy.admission import ProxyServices
from bindify_appliance.proxy.base import ExchangeRoute
from bindify_appliance.proxy.cors import OriginPolicy
from bindify_appliance.proxy.headers import SESSION_HEADER
from bindify_appliance.proxy.jsonrpc import session_not_found_reply
from bindify_appliance.proxy.legacy import (
    LegacyMessagesHandler,
    LegacyRelayHandler,
    LegacyStreamHandler,
)
from bindify_appliance.proxy.limits import (
    ConnectionRateLimiter,
    StreamSlots,
    UnknownCredentialLimiter,
    parse_networks,
)
from bindify_appliance.proxy.relay import ProxyConfig, spawn
from bindify_appliance.proxy.sessions import LegacySessions, SessionBindings
from bindify_appliance.proxy.target import ProxyTarget, TargetResolver
from bindify_appliance.proxy.tool_gate import Admission, ToolCatalog, ToolGate
from bindify_appliance.proxy.upstream import UpstreamClient, with_query
from bindify_appliance.routes import route

__all__ = ["StreamableHandler", "proxy_routes"]


def proxy_routes(
    ctx: AppContext,
    resolver: TargetResolver,
    upstream: UpstreamClient,
    config: ProxyConfig | None = None,
) -> list[URLSpec]:
    """The MCP proxy's routes (the list order matters to Tornado: see the comment below)."""
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
        bearer=bearer_resolver(ctx, resolver),
    )
    api: dict[str, Any] = {"proxy": services, "form": "api_key"}
    path: dict[str, Any] = {"proxy": services, "form": "path"}
    # The access line and the request count, as the application's `log_function` does them.
    log = ctx.metrics.log_function(access_log_function)
    stream, messages, streamable = (
        ExchangeRoute(handler, log)
        for handler in (LegacyStreamHandler, LegacyMessagesHandler, StreamableHandler)
    )
    # Tornado tries rules in order. The only overlap is `/mcp/{service}/sse` and `…/messages`
    # against `/mcp/{service}/{credentials}`, so those two come before it; the two forms of a
    # Streamable HTTP request (the hot paths) come as early as that allows.
    return [
        route("/mcp/{service}", streamable, ctx, **api),
        route("/mcp/{service}/sse", stream, ctx, **api),
        route("/mcp/{service}/messages", messages, ctx, **api),
        route("/mcp/{service}/{credentials}", streamable, ctx, **path),
        route("/mcp/{service}/{credentials}/sse", stream, ctx, **path),
        route("/mcp/{service}/{credentials}/messages", messages, ctx, **path),
    ]


def _denied(ctx: AppContext, resolver: TargetResolver, target: ProxyTarget, tool: str) -> None:
    """A tool call refused by policy: counted by service, recorded as an event (tool name only)."""
    ctx.metrics.observe_policy_denial(target.service_id)
    spawn(resolver.record_denial(target, tool), "record_denial")


class StreamableHandler(LegacyRelayHandler):
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
        session_id = header_value(self.request.headers, SESSION_HEADER)
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
