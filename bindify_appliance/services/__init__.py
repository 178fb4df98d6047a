"""Upstream services: the registry of built-in and admin-added MCP services (see `registry`).

Later work adds the OAuth client, dynamic client registration, discovery and token refresh here.
"""

from __future__ import annotations

from bindify_appliance.services.definitions import (
    BEARER,
    ApiKeyConfig,
    ApiKeyField,
    Application,
    AuthMode,
    AuthType,
    Injection,
    OAuthConfig,
    ServiceDefinition,
    Validation,
)
from bindify_appliance.services.registry import ServiceRegistry

__all__ = [
    "BEARER",
    "ApiKeyConfig",
    "ApiKeyField",
    "Application",
    "AuthMode",
    "AuthType",
    "Injection",
    "OAuthConfig",
    "ServiceDefinition",
    "ServiceRegistry",
    "Validation",
]
