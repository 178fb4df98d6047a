"""The frozen definition of an upstream MCP service: where it is and how credentials reach it.

A `ServiceDefinition` says where a service's MCP endpoint is, which auth kinds it takes
(`oauth`, `api_key`, `none`) and how each kind's secret is injected upstream (one header
`{name}: {prefix}{secret}` or one query parameter, `Injection`), plus the OAuth and API-key
details the OAuth client, validation and the UI use. These are pure data types: the built-ins
(`services/builtins.py`) are built from them, and `ServiceRegistry` (`services/registry.py`)
builds the admin-added ones from the `services` table and applies the environment's overrides.

Invariants:
- Every type is frozen (immutable, hashable): a definition handed out by the registry cannot be
  changed by its reader.
- No definition carries a client secret: only whether one is configured and where it comes from
  (`OAuthConfig.client_secret_source`); the registry opens it on demand.
- `public()` read-backs never include a secret.
- This module imports nothing of the appliance but the tool-policy type, so data modules
  (`builtins.py`) can depend on it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from bindify_appliance.proxy.policy import ToolPolicy

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
    "Transport",
    "Validation",
]

AuthType = Literal["oauth", "api_key", "none"]
Transport = Literal["streamable-http", "sse"]
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Injection:
    """Where an upstream secret goes: a header `{header}: {prefix}{secret}`, or a query param."""

    header: str | None = None
    prefix: str = ""
    query: str | None = None

    def __post_init__(self) -> None:
        if (self.header is None) == (self.query is None):
            raise ValueError("an injection names exactly one of header or query")

    def headers(self, secret: str) -> dict[str, str]:
        return {self.header: self.prefix + secret} if self.header else {}

    def query_params(self, secret: str) -> dict[str, str]:
        return {self.query: secret} if self.query else {}

    def public(self) -> dict[str, str]:
        if self.header:
            return {"header": self.header, "prefix": self.prefix}
        return {"query": self.query or ""}


BEARER: Final = Injection(header="Authorization", prefix="Bearer ")


@dataclass(frozen=True)
class ApiKeyField:
    """One input of the API-key form (Atlassian's e-mail + token, say)."""

    id: str
    label: str
    secret: bool = True


@dataclass(frozen=True)
class Validation:
    """How a pasted key is checked upstream before it is stored (reference §7.4).

    `mcp_initialize`: validate with an MCP `initialize` POST to `url` (None = the MCP URL).
    """

    url: str | None
    method: str = "GET"
    body: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    expect_status: int = 200
    mcp_initialize: bool = False


@dataclass(frozen=True)
class AuthMode:
    """A way of presenting an API key (Atlassian `personal` vs `service_account`).

    `assemble` names how the fields become the key (implemented by the upstream-services code,
    e.g. "atlassian_basic"); None means the single field's value is the key.
    """

    id: str
    label: str
    instructions: str = ""
    fields: tuple[ApiKeyField, ...] = ()
    injection: Injection | None = None
    proxy_injection: Injection | None = None
    assemble: str | None = None


@dataclass(frozen=True)
class Application:
    """What an API-key connection is for (Atlassian Jira/Confluence/Compass); advisory."""

    id: str
    label: str


@dataclass(frozen=True)
class ApiKeyConfig:
    """API-key support: injection for validation, optional separate injection for proxying."""

    injection: Injection
    proxy_injection: Injection | None = None
    validate: Validation | None = None
    instructions: str = ""
    fields: tuple[ApiKeyField, ...] = (ApiKeyField("api_key", "API key"),)
    auth_modes: tuple[AuthMode, ...] = ()
    applications: tuple[Application, ...] = ()

    def mode(self, mode_id: str | None) -> AuthMode | None:
        return next((m for m in self.auth_modes if m.id == mode_id), None)

    def proxy_injection_for(self, mode_id: str | None) -> Injection:
        """mode's proxy injection ?? mode's injection ?? service proxy ?? service (ref §2.3)."""
        mode = self.mode(mode_id)
        if mode is not None:
            if mode.proxy_injection is not None:
                return mode.proxy_injection
            if mode.injection is not None:
                return mode.injection
        return self.proxy_injection or self.injection

    def public(self) -> dict[str, Any]:
        def fields(items: tuple[ApiKeyField, ...]) -> list[dict[str, Any]]:
            return [{"id": f.id, "label": f.label, "secret": f.secret} for f in items]

        return {
            "instructions": self.instructions,
            "fields": fields(self.fields),
            "auth_modes": [
                {
                    "id": m.id,
                    "label": m.label,
                    "instructions": m.instructions,
                    "fields": fields(m.fields),
                }
                for m in self.auth_modes
            ],
            "applications": [{"id": a.id, "label": a.label} for a in self.applications],
        }


@dataclass(frozen=True)
class OAuthConfig:
    """OAuth support. Endpoints None with `discover` true: RFC 9728 → RFC 8414 discovery.

    `dcr`: the client registers itself (RFC 7591) at `register_url` (or the discovered one) as
    a public client; otherwise `client_id` is a static app from the environment or the database.
    """

    authorize_url: str | None = None
    token_url: str | None = None
    register_url: str | None = None
    scopes: tuple[str, ...] = ()
    pkce: bool = True
    dcr: bool = False
    discover: bool = False
    client_id: str | None = None
    client_secret_source: Literal["env", "stored"] | None = None
    resource: bool = True
    extra_authorize_params: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    requires_refresh: bool = True
    refresh_interval: int | None = None  # seconds between proactive refreshes, if fixed
    # Where to revoke a grant when a member is offboarded (DESIGN §15): an RFC 7009 endpoint,
    # or "github" for GitHub's own grant-deletion call; None with `discover`: the discovered
    # metadata's `revocation_endpoint`.
    revoke_url: str | None = None
    injection: Injection = BEARER

    @property
    def configured(self) -> bool:
        """Usable now: a static client id, or self-registration / discovery."""
        return bool(self.client_id) or self.dcr or self.discover

    @property
    def token_endpoint_auth(self) -> Literal["client_secret_post", "none"]:
        return "client_secret_post" if self.client_secret_source else "none"


@dataclass(frozen=True)
class ServiceDefinition:
    """One upstream MCP service, built-in or admin-added."""

    id: str
    name: str
    mcp_url: str
    transport: Transport = "streamable-http"
    builtin: bool = False
    oauth: OAuthConfig | None = None
    api_key: ApiKeyConfig | None = None
    no_auth: bool = False
    # "http_get_not_supported" (a 405 on GET is expected), "keepalive_session_id_missing".
    expected_errors: frozenset[str] = frozenset()
    # The provider's page where a member sees and revokes the apps and keys they authorized
    # (shown for what the appliance cannot revoke itself).
    authorized_apps_url: str | None = None
    # The admin's tool policy (DESIGN §13); not part of `endpoint_fingerprint`: it moves no
    # credential, so changing it flags no connection.
    policy: ToolPolicy | None = None

    @property
    def auth_types(self) -> tuple[AuthType, ...]:
        kinds: list[AuthType] = []
        if self.oauth is not None:
            kinds.append("oauth")
        if self.api_key is not None:
            kinds.append("api_key")
        if self.no_auth:
            kinds.append("none")
        return tuple(kinds)

    def supports(self, auth_type: str) -> bool:
        return auth_type in self.auth_types

    def injection_for(self, auth_type: str, auth_mode: str | None = None) -> Injection | None:
        """How a connection's secret goes upstream; None = nothing (auth none, unsupported)."""
        if auth_type == "oauth" and self.oauth is not None:
            return self.oauth.injection
        if auth_type == "api_key" and self.api_key is not None:
            return self.api_key.proxy_injection_for(auth_mode)
        return None

    def expects(self, category: str, *, upstream_status: int | None, detail: str = "") -> bool:
        """True when a failure is normal for this service (reference §7.5)."""
        if category == "upstream_error" and upstream_status == 405:
            return "http_get_not_supported" in self.expected_errors and detail.endswith(":get")
        if category == "transient_error":
            return (
                "keepalive_session_id_missing" in self.expected_errors
                and "No MCP session ID" in detail
            )
        return False

    def public(self) -> dict[str, Any]:
        """The admin API's read-back (DESIGN §5): never a secret."""
        auth: dict[str, Any] = {"types": list(self.auth_types)}
        if self.oauth is not None:
            o = self.oauth
            auth["oauth"] = {
                "authorization_url": o.authorize_url,
                "token_url": o.token_url,
                "registration_url": o.register_url,
                "scopes": list(o.scopes),
                "pkce": o.pkce,
                "dcr": o.dcr,
                "discover": o.discover,
                "client_id": o.client_id,
                "client_secret_set": o.client_secret_source is not None,
                "client_secret_source": o.client_secret_source,
            }
        if self.api_key is not None:
            auth["api_key"] = self.api_key.proxy_injection_for(None).public()
        return {
            "id": self.id,
            "name": self.name,
            "builtin": self.builtin,
            "transport": self.transport,
            "mcp_url": self.mcp_url,
            "auth": auth,
            "oauth_configured": self.oauth is not None and self.oauth.configured,
            "api_key": self.api_key.public() if self.api_key is not None else None,
            "policy": self.policy.public() if self.policy is not None else None,
        }
