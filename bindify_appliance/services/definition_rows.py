"""Service definitions built from data: a built-in with its overrides, an admin-added row.

`services/registry.py` serves them; this module only builds them (no store, no cache).
Invariant: a damaged admin row raises `ValueError` here and is skipped by the registry, never
half-used; no definition carries a client secret, only where one comes from.
"""

from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType
from typing import Literal

from bindify_appliance.config import Settings
from bindify_appliance.proxy.policy import load_policy
from bindify_appliance.services.definitions import (
    ApiKeyConfig,
    Injection,
    OAuthConfig,
    ServiceDefinition,
    Transport,
    Validation,
)
from bindify_appliance.store import services as service_rows
from bindify_appliance.store.models import Service

__all__ = ["admin_definition", "unsaved_row", "with_overrides"]


def with_overrides(
    base: ServiceDefinition, settings: Settings, row: Service | None
) -> ServiceDefinition:
    """A built-in with its `BINDIFY_{SERVICE}_*` overrides and stored OAuth app applied."""

    def env(name: str) -> str | None:
        return settings.service_setting(base.id, name)

    mcp_url = env("mcp_url") or base.mcp_url
    api_key = base.api_key
    if api_key is not None and api_key.validate is not None:
        validate = api_key.validate
        if env("validate_url"):
            validate = dataclasses.replace(validate, url=env("validate_url"))
        elif validate.mcp_initialize:
            validate = dataclasses.replace(validate, url=validate.url or mcp_url)
        api_key = dataclasses.replace(api_key, validate=validate)
    oauth = base.oauth
    if oauth is not None:
        client_id = env("client_id") or (row.oauth_client_id if row is not None else None)
        source: Literal["env", "stored"] | None = None
        if env("client_secret"):
            source = "env"
        elif row is not None and row.oauth_client_secret_sealed:
            source = "stored"
        oauth = dataclasses.replace(
            oauth,
            authorize_url=env("authorize_url") or oauth.authorize_url,
            token_url=env("token_url") or oauth.token_url,
            register_url=env("register_url") or oauth.register_url,
            client_id=client_id or None,
            client_secret_source=source if not oauth.dcr else None,
        )
    policy = load_policy(row.policy_json) if row is not None else None
    return dataclasses.replace(base, mcp_url=mcp_url, api_key=api_key, oauth=oauth, policy=policy)


def admin_definition(row: Service) -> ServiceDefinition:
    """The definition of an admin-added row; `ValueError` when the row is damaged."""
    spec = service_rows.spec_from_row(row)
    auth = spec.auth
    kind = auth["type"]
    oauth: OAuthConfig | None = None
    api_key: ApiKeyConfig | None = None
    if kind == "oauth":
        explicit = "authorization_url" in auth
        oauth = OAuthConfig(
            authorize_url=auth.get("authorization_url"),
            token_url=auth.get("token_url"),
            register_url=auth.get("registration_url"),
            scopes=tuple(auth.get("scopes", ())),
            pkce=True,  # OAuth 2.1 / MCP authorization: always PKCE for servers we discover
            dcr=spec.client_id is None,
            discover=not explicit,
            client_id=spec.client_id,
            client_secret_source="stored" if row.oauth_client_secret_sealed else None,
            resource=bool(auth.get("resource", True)),
            extra_authorize_params=MappingProxyType(dict(auth.get("extra_authorize_params", {}))),
        )
    elif kind == "api_key":
        injection = (
            Injection(header=auth["header"], prefix=auth.get("prefix", ""))
            if "header" in auth
            else Injection(query=auth["query"])
        )
        api_key = ApiKeyConfig(
            injection=injection,
            validate=Validation(url=spec.mcp_url, method="POST", mcp_initialize=True),
            instructions=f"Paste the API key or token {spec.name} issued to you.",
        )
    transport: Transport = "sse" if spec.transport == "sse" else "streamable-http"
    return ServiceDefinition(
        id=spec.id,
        name=spec.name,
        mcp_url=spec.mcp_url,
        transport=transport,
        builtin=False,
        oauth=oauth,
        api_key=api_key,
        no_auth=kind == "none",
        policy=load_policy(row.policy_json),
    )


def unsaved_row(spec: service_rows.ServiceSpec, sealed_secret: object) -> Service:
    """The row `spec` will be stored as (not saved), to build its definition before the write."""
    return Service(
        id=spec.id,
        name=spec.name,
        mcp_url=spec.mcp_url,
        transport=spec.transport,
        auth_json=json.dumps(dict(spec.auth), separators=(",", ":"), sort_keys=True),
        oauth_client_id=spec.client_id,
        oauth_client_secret_sealed=sealed_secret if isinstance(sealed_secret, str) else None,
        builtin=False,
    )
