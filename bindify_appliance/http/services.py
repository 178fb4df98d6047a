"""A handler base for routes that need the connect collaborators (registry, outbound client,
connect flows): the API's service and connection handlers and the UI's connect pages.

Mixed in ahead of the handler's own base (`class Page(WithConnectServices, PageHandler)`); the
route passes `services=` (`routes.route(..., services=...)`).
"""

from __future__ import annotations

from bindify_appliance.context import AppContext
from bindify_appliance.http.base import HttpHandler
from bindify_appliance.services.connect import ConnectServices

__all__ = ["WithConnectServices"]


class WithConnectServices(HttpHandler):
    """`self.services`: the `ConnectServices` the route was declared with."""

    services: ConnectServices

    def initialize(  # type: ignore[override]
        self,
        ctx: AppContext,
        route_template: str | None = None,
        services: ConnectServices | None = None,
    ) -> None:
        super().initialize(ctx, route_template)
        if services is None:
            raise TypeError(f"{type(self).__name__} needs services= in its route")
        self.services = services
