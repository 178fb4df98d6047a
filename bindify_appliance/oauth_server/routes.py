"""The OAuth server's routes; none at all while `BINDIFY_OAUTH_SERVER` is off (then every one
of these paths is the ordinary 404). The authorize page is the UI's (`/oauth/authorize`)."""

from __future__ import annotations

import logging

from tornado.routing import URLSpec

from bindify_appliance.context import AppContext
from bindify_appliance.oauth_server.metadata import (
    AuthorizationServerMetadata,
    ProtectedResourceMetadata,
)
from bindify_appliance.oauth_server.register import RegisterHandler
from bindify_appliance.oauth_server.revoke import RevokeHandler
from bindify_appliance.oauth_server.settings import oauth_server_enabled
from bindify_appliance.oauth_server.token_endpoint import TokenHandler
from bindify_appliance.routes import route
from bindify_appliance.services.registry import ServiceRegistry

__all__ = ["oauth_server_routes"]

log = logging.getLogger(__name__)


def oauth_server_routes(ctx: AppContext, registry: ServiceRegistry) -> list[URLSpec]:
    if not oauth_server_enabled(ctx.settings):
        if ctx.settings.oauth_server:
            log.warning(
                "the OAuth server for MCP clients is off: the base URL has a path",
                extra={"event": "oauth_server_off"},
            )
        return []
    return [
        route(
            "/.well-known/oauth-protected-resource/mcp/{service}",
            ProtectedResourceMetadata,
            ctx,
            registry=registry,
        ),
        route("/.well-known/oauth-authorization-server", AuthorizationServerMetadata, ctx),
        route("/.well-known/openid-configuration", AuthorizationServerMetadata, ctx),
        route("/oauth/register", RegisterHandler, ctx),
        route("/oauth/token", TokenHandler, ctx),
        route("/oauth/revoke", RevokeHandler, ctx),
    ]
