"""The admin API's routes (`/api/v1/…`), for the composition root.

Connection and service endpoints are added here the same way: a handler module whose verbs
carry `@operation`, and one `route(...)` line each. `/api/v1/openapi.json` documents whatever
this list holds.
"""

from __future__ import annotations

from tornado.routing import URLSpec

from bindify_appliance.api.audit import AuditHandler
from bindify_appliance.api.jobs import JobsHandler
from bindify_appliance.api.me import MeHandler
from bindify_appliance.api.openapi import OpenApiHandler
from bindify_appliance.api.sessions import SessionHandler, SessionsHandler
from bindify_appliance.api.tokens import TokenHandler, TokensHandler
from bindify_appliance.api.users import UserHandler, UsersHandler
from bindify_appliance.context import AppContext
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices

__all__ = ["api_routes"]


def api_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    return [
        route("/api/v1/openapi.json", OpenApiHandler, ctx),
        route("/api/v1/me", MeHandler, ctx, services=services),
        route("/api/v1/users", UsersHandler, ctx),
        route("/api/v1/users/{id}", UserHandler, ctx, services=services),
        route("/api/v1/sessions", SessionsHandler, ctx),
        route("/api/v1/sessions/{id}", SessionHandler, ctx),
        route("/api/v1/tokens", TokensHandler, ctx),
        route("/api/v1/tokens/{id}", TokenHandler, ctx),
        route("/api/v1/jobs", JobsHandler, ctx),
        route("/api/v1/audit", AuditHandler, ctx),
    ]
