"""Discovery documents (DESIGN §10): protected-resource metadata per MCP service (RFC 9728)
and the authorization-server metadata (RFC 8414, also at the OpenID discovery path)."""

from __future__ import annotations

from typing import Any

from bindify_appliance.oauth_server.http import OAuthEndpoint
from bindify_appliance.services.registry import ServiceRegistry

__all__ = ["AuthorizationServerMetadata", "ProtectedResourceMetadata", "server_metadata"]


def server_metadata(base_url: str) -> dict[str, Any]:
    return {
        "issuer": base_url,
        "authorization_endpoint": f"{base_url}/oauth/authorize",
        "token_endpoint": f"{base_url}/oauth/token",
        "registration_endpoint": f"{base_url}/oauth/register",
        "revocation_endpoint": f"{base_url}/oauth/revoke",
        "scopes_supported": ["mcp"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": [
            "none",
            "client_secret_basic",
            "client_secret_post",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "none",
            "client_secret_basic",
            "client_secret_post",
        ],
        "client_id_metadata_document_supported": True,
        "authorization_response_iss_parameter_supported": True,
    }


class AuthorizationServerMetadata(OAuthEndpoint):
    def get(self) -> None:
        self.set_header("Cache-Control", "public, max-age=300")
        self.clear_header("Pragma")
        self.send_json(server_metadata(self.ctx.settings.base_url))


class ProtectedResourceMetadata(OAuthEndpoint):
    registry: ServiceRegistry

    def initialize(  # type: ignore[override]
        self, ctx: Any, route_template: str | None = None, *, registry: ServiceRegistry
    ) -> None:
        super().initialize(ctx, route_template)
        self.registry = registry

    async def get(self, service: str) -> None:
        if await self.registry.get(service) is None:
            self.oauth_error(404, "not_found", "no MCP service with this name on this appliance")
            return
        base = self.ctx.settings.base_url
        self.send_json(
            {
                "resource": f"{base}/mcp/{service}",
                "authorization_servers": [base],
                "scopes_supported": ["mcp"],
                "bearer_methods_supported": ["header"],
                "resource_name": service,
            }
        )
