"""Composition root: builds the collaborators and the Tornado application. Wiring only.

Every route is declared here, in one list, so tests can enumerate them (ownership, CSRF and
OpenAPI checks walk this list).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import tornado.web
from tornado.routing import URLSpec

from bindify_appliance.billing.options import billing_enabled
from bindify_appliance.clock import Clock, SystemClock
from bindify_appliance.config import Settings
from bindify_appliance.context import AppContext
from bindify_appliance.datadir import KeySource, load_secret_key
from bindify_appliance.deferred_routes import DeferredRoutes
from bindify_appliance.http.base import access_log_function
from bindify_appliance.http.cookies import XSRF_COOKIE, cookie_name
from bindify_appliance.http.not_found import NotFoundHandler
from bindify_appliance.kv import open_kv
from bindify_appliance.oauth_server.documents import set_outbound
from bindify_appliance.oauth_server.routes import oauth_server_routes
from bindify_appliance.ops.canary_allowance import CanaryAllowances
from bindify_appliance.ops.health import HealthHandler, ReadyHandler
from bindify_appliance.ops.metrics_route import MetricsHandler
from bindify_appliance.proxy.handlers import proxy_routes
from bindify_appliance.proxy.resolver import ConnectionResolver
from bindify_appliance.proxy.upstream import UpstreamClient
from bindify_appliance.resources import resource_dir
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.services.refresh import OAuthRefresher
from bindify_appliance.store import Store

__all__ = ["Runtime", "build_application", "build_context", "build_runtime", "route_table"]


def build_context(settings: Settings, clock: Clock | None = None) -> AppContext:
    """Open the store, KV and keys for `settings` (the data directory must already exist)."""
    clock = clock or SystemClock()
    keys = KeySource(settings, create=True)
    return AppContext(
        settings=settings,
        store=Store(settings.database_url),
        kv=open_kv(settings.kv_url, clock, settings.kv_anonymous_records),
        keys=keys,
        clock=clock,
        secret_key=load_secret_key(settings),
        instance_id=str(uuid.uuid4()),
    )


@dataclass
class Runtime:
    """The long-lived collaborators the routes share: registry, resolver, HTTP clients."""

    connect: ConnectServices
    resolver: ConnectionResolver
    upstream: UpstreamClient
    refresher: OAuthRefresher | None = None

    async def close(self) -> None:
        await self.connect.close()
        await self.upstream.close()


def build_runtime(ctx: AppContext, connect: ConnectServices | None = None) -> Runtime:
    connect = connect or ConnectServices.build(ctx)
    refresher = OAuthRefresher(ctx, connect.registry, connect.outbound)
    resolver = ConnectionResolver(ctx, connect.registry, refresher=refresher)
    # Deleting, disabling or rotating a connection through the API drops it from this
    # instance's memo at once (other instances within the memo's 1 s).
    connect.resolver = resolver
    # A service moved by this instance (an admin's PATCH, a changed override at start) drops
    # every memoised connection row before the new definition is served (DESIGN §9).
    connect.registry.on_moved(resolver.forget_all)
    # The proxy's upstream connections follow the one outbound policy (DESIGN §9).
    # Client ID metadata documents are fetched with the connect flows' outbound client (one
    # SSRF policy, closed at shutdown with the rest).
    set_outbound(ctx, connect.outbound)
    upstream = UpstreamClient(allow_private=ctx.settings.allow_private_upstreams)
    upstream.observe = ctx.metrics.observe_upstream  # time to headers, by service
    upstream.allowances = CanaryAllowances(ctx.kv)  # asked only after a refusal (ops/canary.py)
    return Runtime(connect=connect, resolver=resolver, upstream=upstream, refresher=refresher)


def route_table(ctx: AppContext, connect: ConnectServices | None = None) -> list[URLSpec]:
    """Every route in the order the application tries them (the deferred block expanded)."""
    runtime = build_runtime(ctx, connect)
    return [
        *_eager_routes(ctx, runtime),
        *_deferred_routes(ctx, runtime, _billing_routes(ctx, runtime)),
    ]


def _eager_routes(ctx: AppContext, runtime: Runtime) -> list[URLSpec]:
    # The proxy's routes come first: Tornado tries rules in order, and every MCP request would
    # otherwise pay a regex match against each UI and API route (no other route starts /mcp/).
    # Health, metrics and the OAuth server's documents and endpoints serve an appliance that
    # only proxies (probes, scrapers, MCP clients); no deferred route matches their paths
    # (tests/test_deferred_routes.py), so trying them first answers every request as before.
    return [
        *proxy_routes(ctx, runtime.resolver, runtime.upstream),
        route("/healthz", HealthHandler, ctx),
        route("/readyz", ReadyHandler, ctx),
        route("/metrics", MetricsHandler, ctx),
        *oauth_server_routes(ctx, runtime.connect.registry),
    ]


def _billing_routes(ctx: AppContext, runtime: Runtime) -> list[URLSpec]:
    """Billing's routes, built at start: building them wires billing's service, which its jobs
    use whether or not a page was asked for. None (and no billing module) when billing is off."""
    if not billing_enabled(ctx.settings):
        return []
    from bindify_appliance.billing.routes import billing_routes

    return billing_routes(ctx, runtime.connect)


def _deferred_routes(ctx: AppContext, runtime: Runtime, billing: list[URLSpec]) -> list[URLSpec]:
    """The UI's pages and the API, in their order; their modules load on the first call.
    `billing` is `_billing_routes()`, built at start."""
    from bindify_appliance.api.connections import connect_api_routes
    from bindify_appliance.api.grants import grant_api_routes
    from bindify_appliance.api.ops import ops_api_routes
    from bindify_appliance.api.routes import api_routes
    from bindify_appliance.oauth_server.authorize import authorize_routes
    from bindify_appliance.oauth_server.connected_apps import connected_app_routes
    from bindify_appliance.web.account import account_routes
    from bindify_appliance.web.account_tokens import account_token_routes
    from bindify_appliance.web.admin import admin_routes
    from bindify_appliance.web.auth import auth_routes
    from bindify_appliance.web.connect import connect_routes
    from bindify_appliance.web.dashboard import dashboard_routes
    from bindify_appliance.web.oauth_callback import connect_web_routes
    from bindify_appliance.web.policies import policy_routes

    return [
        # The UI's pages replace the first minimal `/` and `/connections/{id}` handlers.
        *dashboard_routes(ctx, runtime.connect),
        *connect_routes(ctx, runtime.connect),
        *admin_routes(ctx, runtime.connect),
        *policy_routes(ctx, runtime.connect),
        *account_routes(ctx),
        *account_token_routes(ctx, runtime.connect),
        *authorize_routes(ctx, runtime.connect),
        *connected_app_routes(ctx, runtime.connect),
        *billing,  # none when billing is off
        *auth_routes(ctx),
        *api_routes(ctx, runtime.connect),
        *connect_api_routes(ctx, runtime.connect),
        *ops_api_routes(ctx, runtime.connect),
        *connect_web_routes(ctx, runtime.connect),
        *grant_api_routes(ctx, runtime.connect),
    ]


def build_application(
    ctx: AppContext, connect: ConnectServices | None = None
) -> tornado.web.Application:
    """The application; `app.settings["runtime"]` holds what `server.py` closes at shutdown."""
    runtime = build_runtime(ctx, connect)
    billing = _billing_routes(ctx, runtime)
    # The UI and the API load on the first request no eager route claims (memory: an
    # appliance that only proxies never imports them).
    deferred = DeferredRoutes(lambda: _deferred_routes(ctx, runtime, billing))
    app = tornado.web.Application(
        [*_eager_routes(ctx, runtime), deferred.rule()],
        runtime=runtime,
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
        # One hook per answered request: the access log line, then the request counter.
        log_function=ctx.metrics.log_function(access_log_function),
        cookie_secret=ctx.secret_key.decode("utf-8"),
        # CSRF: every state-changing form carries `_xsrf`; API handlers check it themselves
        # for session-authenticated calls and the MCP handlers opt out (bearer credentials).
        xsrf_cookies=True,
        # The token itself is bound to the session and the cookie named `__Host-_xsrf` under an
        # https base URL without a path: see web.base.BaseHandler.
        xsrf_cookie_name=cookie_name(XSRF_COOKIE, ctx.settings.base_url),
        xsrf_cookie_kwargs={
            "httponly": True,
            "samesite": "Strict",
            "secure": ctx.settings.base_url.startswith("https://"),
            "path": "/",
        },
        login_url="/login",
        template_path=str(resource_dir("templates")),
        static_path=str(resource_dir("static")),
        # Event streams must never be compressed (buffering); the UI is small enough without.
        compress_response=False,
        xheaders=False,
    )
    deferred.attach(app)
    _proxy_rules_first(app)
    return app


def _proxy_rules_first(app: tornado.web.Application) -> None:
    """Tornado puts its static-file rules (`/static/…`, `/favicon.ico`, `/robots.txt`) before
    the application's; the proxy's are moved ahead of them (no static path starts `/mcp/`), so
    an MCP request is matched without three regexes that never match it."""
    rules = app.wildcard_router.rules
    proxy = [r for r in rules if str(r.target_kwargs.get("route_template", "")).startswith("/mcp/")]
    rules[:] = [*proxy, *(r for r in rules if r not in proxy)]
