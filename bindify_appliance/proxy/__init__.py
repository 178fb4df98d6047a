"""The MCP proxy: routes, relay and the interface to credential resolution.

`proxy_routes(ctx, resolver, upstream)` gives the Tornado routes; `UpstreamClient` is the pooled
upstream HTTP client (create one per process, close it at shutdown); `TargetResolver` is what
the credential side implements (`target.py`).
"""

from __future__ import annotations

from bindify_appliance.proxy.admission import ProxyServices
from bindify_appliance.proxy.handlers import proxy_routes
from bindify_appliance.proxy.relay import ProxyConfig
from bindify_appliance.proxy.target import ProxyRefusal, ProxyTarget, RefusalKind, TargetResolver
from bindify_appliance.proxy.upstream import UpstreamClient, UpstreamError

__all__ = [
    "ProxyConfig",
    "ProxyRefusal",
    "ProxyServices",
    "ProxyTarget",
    "RefusalKind",
    "TargetResolver",
    "UpstreamClient",
    "UpstreamError",
    "proxy_routes",
]
