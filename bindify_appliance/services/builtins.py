"""The seven built-in services, as data (facts from reference/hosted-bindify.md §7.2).

Nothing here reads configuration: `ServiceRegistry` applies the `BINDIFY_{SERVICE}_*` overrides
(MCP, authorize, token, register and validate URLs; OAuth client id and secret) and any OAuth app
an admin stored. Static OAuth apps authenticate with `client_secret_post`; self-registered (DCR)
clients are public and use PKCE. The static apps are classic OAuth providers, not MCP
authorization servers, so they get no RFC 8707 `resource` parameter (`resource=False`); the DCR
services (Notion, TickTick) are MCP authorization servers and do.

Offboarding (DESIGN §15): `revoke_url` is the provider's documented revocation call — RFC 7009
for Linear and Todoist, `"github"` for GitHub's grant deletion (`DELETE
/applications/{client_id}/grant`); Notion, Figma and TickTick document none, so their grants are
listed with `authorized_apps_url`, the page where the member revokes them (also shown for API
keys, which only the provider can revoke).

Invariant: the keys of `BUILTINS` are exactly `config.BUILTIN_SERVICE_IDS`, in that order
(a test checks it), so the configuration's override names and this table never drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from bindify_appliance.services.definitions import (
    BEARER,
    ApiKeyConfig,
    ApiKeyField,
    Application,
    AuthMode,
    Injection,
    OAuthConfig,
    ServiceDefinition,
    Validation,
)

__all__ = ["BUILTINS"]

_GET_405: Final = "http_get_not_supported"
_RAW_AUTHORIZATION: Final = Injection(header="Authorization", prefix="")

LINEAR: Final = ServiceDefinition(
    id="linear",
    name="Linear",
    mcp_url="https://mcp.linear.app/mcp",
    builtin=True,
    authorized_apps_url="https://linear.app/settings/account/security",
    oauth=OAuthConfig(
        authorize_url="https://linear.app/oauth/authorize",
        token_url="https://api.linear.app/oauth/token",  # noqa: S106 - an endpoint, not a secret
        revoke_url="https://api.linear.app/oauth/revoke",
        scopes=("read", "write"),
        pkce=True,
        resource=False,  # a classic OAuth app, not an MCP authorization server
    ),
    api_key=ApiKeyConfig(
        # Linear's GraphQL API takes the key bare; its MCP server wants a Bearer token.
        injection=_RAW_AUTHORIZATION,
        proxy_injection=BEARER,
        validate=Validation(
            url="https://api.linear.app/graphql",
            method="POST",
            body='{"query":"{ viewer { id } }"}',
            expect_status=200,
        ),
        instructions=(
            "Create a personal API key in Linear's account settings (security and access) "
            "and paste it here."
        ),
    ),
)

GITHUB: Final = ServiceDefinition(
    id="github",
    name="GitHub",
    mcp_url="https://api.githubcopilot.com/mcp",
    builtin=True,
    authorized_apps_url="https://github.com/settings/applications",
    oauth=OAuthConfig(
        authorize_url="https://github.com/login/oauth/authorize",
        token_url="https://github.com/login/oauth/access_token",  # noqa: S106 - an endpoint, not a secret
        revoke_url="github",
        scopes=("repo", "read:user", "read:org"),
        pkce=False,
        resource=False,  # a classic OAuth app, not an MCP authorization server
    ),
    api_key=ApiKeyConfig(
        injection=BEARER,
        validate=Validation(
            url="https://api.github.com/user",
            headers=MappingProxyType({"User-Agent": "Bindify"}),
            expect_status=200,
        ),
        instructions=(
            "Create a personal access token in GitHub's developer settings, with access to "
            "the repositories you want to use, and paste it here."
        ),
    ),
    expected_errors=frozenset({_GET_405}),
)

NOTION: Final = ServiceDefinition(
    id="notion",
    name="Notion",
    mcp_url="https://mcp.notion.com/mcp",
    builtin=True,
    authorized_apps_url="https://www.notion.so/profile/integrations",
    oauth=OAuthConfig(
        authorize_url="https://mcp.notion.com/authorize",
        token_url="https://mcp.notion.com/token",  # noqa: S106 - an endpoint, not a secret
        register_url="https://mcp.notion.com/register",
        scopes=(),
        pkce=True,
        dcr=True,
        refresh_interval=6 * 3600,
    ),
)

ATLASSIAN: Final = ServiceDefinition(
    id="atlassian",
    name="Atlassian",
    mcp_url="https://mcp.atlassian.com/v1/mcp",
    builtin=True,
    authorized_apps_url="https://id.atlassian.com/manage-profile/security/api-tokens",
    api_key=ApiKeyConfig(
        injection=Injection(header="Authorization", prefix="Basic "),
        # Validated by an MCP `initialize` against the MCP URL itself.
        validate=Validation(url=None, method="POST", mcp_initialize=True, expect_status=200),
        instructions=(
            "Your Atlassian site admin must allow API-token authentication for the Rovo MCP "
            "server. Then use a personal API token (with your account e-mail) or a service "
            "account's API key."
        ),
        fields=(),
        auth_modes=(
            AuthMode(
                id="personal",
                label="Personal API token",
                instructions="Create an API token in your Atlassian account's security settings.",
                fields=(
                    ApiKeyField("email", "Atlassian account e-mail", secret=False),
                    ApiKeyField("token", "API token"),
                ),
                injection=Injection(header="Authorization", prefix="Basic "),
                assemble="atlassian_basic",
            ),
            AuthMode(
                id="service_account",
                label="Service account API key",
                instructions="Paste the API key of an Atlassian service account.",
                fields=(ApiKeyField("api_key", "API key"),),
                injection=BEARER,
            ),
        ),
        applications=(
            Application("jira", "Jira"),
            Application("confluence", "Confluence"),
            Application("compass", "Compass"),
            Application("other", "Other"),
        ),
    ),
)

FIGMA: Final = ServiceDefinition(
    id="figma",
    name="Figma",
    mcp_url="https://api.figma.com/mcp",
    builtin=True,
    authorized_apps_url="https://www.figma.com/settings",
    oauth=OAuthConfig(
        authorize_url="https://www.figma.com/oauth",
        token_url="https://api.figma.com/v1/oauth/token",  # noqa: S106 - an endpoint, not a secret
        scopes=(
            "current_user:read",
            "file_content:read",
            "file_metadata:read",
            "file_comments:read",
            "file_comments:write",
            "file_versions:read",
            "file_dev_resources:read",
            "file_dev_resources:write",
            "library_assets:read",
            "library_content:read",
            "team_library_content:read",
            "webhooks:read",
            "webhooks:write",
        ),
        pkce=False,
        resource=False,  # a classic OAuth app, not an MCP authorization server
    ),
    api_key=ApiKeyConfig(
        injection=Injection(header="X-Figma-Token", prefix=""),
        validate=Validation(url="https://api.figma.com/v1/me", expect_status=200),
        instructions=(
            "Create a personal access token in Figma's account settings and paste it here."
        ),
    ),
)

TODOIST: Final = ServiceDefinition(
    id="todoist",
    name="Todoist",
    mcp_url="https://ai.todoist.net/mcp",
    builtin=True,
    authorized_apps_url="https://app.todoist.com/app/settings/integrations/connected",
    oauth=OAuthConfig(
        authorize_url="https://todoist.com/oauth/authorize",
        token_url="https://todoist.com/oauth/access_token",  # noqa: S106 - an endpoint, not a secret
        revoke_url="https://api.todoist.com/api/v1/revoke",
        scopes=("data:read_write",),
        pkce=False,
        resource=False,  # a classic OAuth app, not an MCP authorization server
        # Todoist tokens do not expire: keep-alive instead of refresh.
        requires_refresh=False,
    ),
    api_key=ApiKeyConfig(
        injection=BEARER,
        validate=Validation(url="https://api.todoist.com/api/v1/projects", expect_status=200),
        instructions="Copy your API token from Todoist's integration settings and paste it here.",
    ),
    expected_errors=frozenset({_GET_405, "keepalive_session_id_missing"}),
)

TICKTICK: Final = ServiceDefinition(
    id="ticktick",
    name="TickTick",
    mcp_url="https://mcp.ticktick.com",
    builtin=True,
    authorized_apps_url="https://ticktick.com/webapp/#settings/account",
    oauth=OAuthConfig(
        authorize_url="https://ticktick.com/oauth/authorize",
        token_url="https://api.ticktick.com/oauth/token",  # noqa: S106 - an endpoint, not a secret
        register_url="https://api.ticktick.com/oauth/register",
        scopes=("tasks:read", "tasks:write"),
        pkce=True,
        dcr=True,
    ),
    api_key=ApiKeyConfig(
        injection=BEARER,
        validate=Validation(url="https://api.ticktick.com/open/v1/project", expect_status=200),
        instructions="Create an API token in TickTick's developer settings and paste it here.",
    ),
)

BUILTINS: Final[Mapping[str, ServiceDefinition]] = MappingProxyType(
    {s.id: s for s in (LINEAR, GITHUB, NOTION, ATLASSIAN, FIGMA, TODOIST, TICKTICK)}
)
