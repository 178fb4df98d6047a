"""Upstream services: what a service is (`definitions`), the registry of built-in and admin-added
services (`registry`), and connecting to them (OAuth, dynamic registration, discovery, refresh)."""

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
