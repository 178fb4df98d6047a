"""The service editor's form fields <-> the admin API's service body (DESIGN §5).

`templates/service_fields.html` shows the fields; `posted_body` turns a post into the exact body
`POST`/`PATCH /api/v1/services` take, so the registry (`store/services.py`) checks it with the
API's rules — nothing here decides what is valid, it only translates. `form_values` is the
reverse, to fill the editor from a stored service (never a client secret: only whether one is
set).

Form conventions: blank optional fields are left out of the body; a blank client secret keeps
the stored one (the API's "absent = keep"), the "clear" box sends null; the prefix is taken
as typed (its trailing space matters: `Bearer `).
"""

from __future__ import annotations

from typing import Any, Protocol

from bindify_appliance.config import service_env_name
from bindify_appliance.services.registry import ServiceDefinition
from bindify_appliance.store import connections as connection_rows

__all__ = ["FORM_FIELDS", "editor_values", "form_values", "posted_body"]

_DONE = {
    "saved": "Service saved.",
    "oauth-app": "OAuth app saved.",
}

FORM_FIELDS = (
    "name",
    "mcp_url",
    "transport",
    "auth",
    "key_in",
    "header",
    "prefix",
    "query",
    "authorization_url",
    "token_url",
    "registration_url",
    "client_id",
    "scopes",
)


async def editor_values(
    page: Any, service: ServiceDefinition, done: str, editor: dict[str, Any]
) -> dict[str, Any]:
    """The service page's settings, OAuth-app and delete sections (`templates/admin_service.html`).

    `editor` holds a refused form's message and typed values: `error`, `values` (settings),
    `oauth_error`, `delete_error`. `connections` is every member's connections to the service:
    the ones a move of its endpoints sends to "needs reconnecting" (DESIGN §9).
    """
    settings = page.ctx.settings
    count = await page.ctx.store.run(connection_rows.count_using_service, service.id)
    oauth_app = None
    if service.builtin and service.oauth is not None and not service.oauth.dcr:
        oauth_app = {
            "client_id": service.oauth.client_id or "",
            "secret_source": service.oauth.client_secret_source,
            "id_env": settings.service_setting(service.id, "client_id") is not None,
            "id_env_name": service_env_name(service.id, "client_id"),
            "secret_env_name": service_env_name(service.id, "client_secret"),
        }
    return {
        "connections": count,
        "edit_flash": _DONE.get(done),
        "values": editor.get("values") or form_values(service),
        "edit_error": editor.get("error"),
        "oauth_app": oauth_app,
        "oauth_error": editor.get("oauth_error"),
        "delete_error": editor.get("delete_error"),
    }


class _Form(Protocol):
    def form(self, name: str, limit: int = 4096) -> str: ...

    def get_body_argument(
        self, name: str, default: str | None, strip: bool = True
    ) -> str | None: ...


def form_values(service: ServiceDefinition | None) -> dict[str, str]:
    """The editor's fields for `service` (None: the add form's defaults)."""
    values = dict.fromkeys(FORM_FIELDS, "")
    values.update(
        transport="streamable-http", auth="oauth", key_in="header", header="Authorization"
    )
    values["prefix"] = "Bearer "
    if service is None:
        return values
    values.update(name=service.name, mcp_url=service.mcp_url, transport=service.transport)
    if service.api_key is not None:
        injection = service.api_key.proxy_injection_for(None)
        values["auth"] = "api_key"
        if injection.query is not None:
            values.update(key_in="query", query=injection.query, header="", prefix="")
        else:
            values.update(header=injection.header or "", prefix=injection.prefix)
    elif service.oauth is not None:
        o = service.oauth
        values.update(
            authorization_url=o.authorize_url or "",
            token_url=o.token_url or "",
            registration_url=o.register_url or "",
            client_id=o.client_id or "",
            scopes=" ".join(o.scopes),
        )
    else:
        values["auth"] = "none"
    return values


def posted_values(page: _Form) -> dict[str, str]:
    """What was typed, to show again when the registry refuses it (never the secret)."""
    values = {name: page.form(name, 2048) for name in FORM_FIELDS}
    # Not stripped (Tornado strips by default): the space of "Bearer " is part of the prefix.
    values["prefix"] = (page.get_body_argument("prefix", "", strip=False) or "")[:128]
    return values


def posted_body(
    page: _Form, current: ServiceDefinition | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """(the API body for the post, the typed values); `current` is the service being edited."""
    typed = posted_values(page)
    kind = typed["auth"]
    auth: dict[str, Any] = {"type": kind}
    if kind == "api_key":
        if page.get_body_argument("header", None) is None and not typed["query"]:
            # A post without the injection fields (the first version of this form): Bearer.
            auth.update(header="Authorization", prefix="Bearer ")
        elif typed["key_in"] == "query":
            auth["query"] = typed["query"]
        else:
            auth.update(header=typed["header"], prefix=typed["prefix"])
    elif kind == "oauth":
        for name in ("authorization_url", "token_url", "registration_url"):
            if typed[name]:
                auth[name] = typed[name]
        if typed["scopes"]:
            auth["scopes"] = typed["scopes"].split()
        secret = (page.get_body_argument("client_secret", "", strip=False) or "")[:4096]
        if typed["client_id"]:
            auth["client_id"] = typed["client_id"]
            if page.form("clear_secret", 8) == "yes":
                auth["client_secret"] = None
            elif secret:
                auth["client_secret"] = secret
        elif current is not None:
            auth["client_secret"] = None  # no client id: self-registration, no stored secret
        if current is not None and current.oauth is not None:
            # Settings the editor does not show are carried over, not reset.
            auth["resource"] = current.oauth.resource
            if current.oauth.extra_authorize_params:
                auth["extra_authorize_params"] = dict(current.oauth.extra_authorize_params)
    body: dict[str, Any] = {
        "name": typed["name"],
        "mcp_url": typed["mcp_url"],
        "transport": typed["transport"] or "streamable-http",
        "auth": auth,
    }
    return body, typed
